"""`graphsentry serve` and `graphsentry replay`: the live daemon and the Kafka replayer."""
from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands: serve, replay."""
    p = subparsers.add_parser(
        "serve", help="run the live detection daemon (Kafka or files -> windows -> model -> alerts)",
        description="Run the detection daemon. Options come from --config (YAML or TOML), then "
                    "GRAPHSENTRY_<SECTION>_<KEY> environment variables, then the flags below.",
    )
    p.add_argument("--config", help="YAML (.yaml/.yml) or TOML (.toml) config file")
    p.add_argument("--print-config", action="store_true", help="print the effective config (secrets redacted) and exit")
    p.add_argument("--model", help="model directory or pointer file (overrides model.path)")
    p.add_argument("--input", nargs="+", metavar="PATH", help="file source: files/directories (overrides source)")
    p.add_argument("--follow", action="store_true", help="file source: keep tailing the inputs")
    p.add_argument("--summary-json", metavar="FILE", help="write the run summary as JSON here")
    p.set_defaults(func=_serve)

    r = subparsers.add_parser(
        "replay", help="publish a data set to a Kafka topic keeping its timestamps (scaled)",
        description="Read INPUT files with the readers and publish canonical records to a topic: "
                    "JSON one record per message (key = src_ip) or batched Arrow IPC messages.",
    )
    r.add_argument("inputs", nargs="+", metavar="INPUT")
    r.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    r.add_argument("--topic", required=True)
    r.add_argument("--speed", default="max", help="'max' (default) or a factor like 10x: event-time gaps / factor")
    r.add_argument("--format", dest="fmt", default="json", choices=["json", "arrow"])
    r.add_argument("--input-format", default="auto", help="reader format of the inputs (default auto)")
    r.add_argument("--partitions", type=int, default=4, help="partitions when the topic is created (default 4)")
    r.add_argument("--arrow-batch", type=int, default=2000, help="records per Arrow message (default 2000)")
    r.set_defaults(func=_replay)


def _serve(args: argparse.Namespace) -> int:
    from detector.daemon import dump_config, load_config, run_daemon

    over: dict = {}
    if args.model:
        over.setdefault("model", {})["path"] = args.model
    if args.input:
        over["source"] = {"type": "file", "paths": list(args.input), "follow": bool(args.follow)}
    cfg = load_config(args.config, overrides=over or None)
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    summary = run_daemon(cfg)
    print(summary.text())
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary.to_dict(), f, indent=2, default=str)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from ingest.kafka_io import ensure_topics, make_producer, parse_speed, replay
    from ingest.tail import read_files

    speed = parse_speed(args.speed)
    cfg = {"bootstrap": args.bootstrap}
    ensure_topics(args.bootstrap, {args.topic: args.partitions})
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=args.bootstrap)
    try:
        n_parts = len(c.partitions_for_topic(args.topic) or []) or args.partitions
    finally:
        c.close()
    producer = make_producer(cfg, linger_ms=20, batch_size=1 << 20, max_request_size=16 << 20)
    try:
        counts = replay(read_files(args.inputs, format=args.input_format), producer, args.topic, n_parts,
                        fmt=args.fmt, speed=speed, arrow_batch=args.arrow_batch)
    finally:
        producer.close()
    print(json.dumps({"topic": args.topic, "partitions": n_parts, "format": args.fmt, **counts}))
    return 0

"""`graphsentry serve` and `graphsentry replay`: the live daemon and the Kafka replayer."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands: serve, replay."""
    p = subparsers.add_parser(
        "serve", help="run the live detection daemon (Kafka or files -> windows -> model -> alerts)",
        description="Run the detection daemon. Options come from --config (YAML or TOML), then "
                    "GRAPHSENTRY_<SECTION>_<KEY> environment variables, then the flags below.",
    )
    p.add_argument("--config", help="YAML (.yaml/.yml) or TOML (.toml) config file")
    p.add_argument("--print-config", action="store_true", help="print the effective config (secrets redacted) and exit")
    p.add_argument("--model", help="model directory or pointer file (overrides model.path)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="file source: files/directories to read (overrides source; none: the config's source)")
    p.add_argument("--input", nargs="+", metavar="PATH", dest="input_alias", help=argparse.SUPPRESS)
    p.add_argument("--follow", action="store_true", help="file source: keep tailing the inputs")
    p.add_argument("--summary-json", metavar="FILE", help="write the run summary as JSON here")
    p.add_argument("--ui", metavar="HOST:PORT", help="while it runs, serve the alert page (graphsentry ui) on the "
                   "config's sqlite alert store here, e.g. 127.0.0.1:8080")
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


def _quiet_kafka_client() -> None:
    """kafka-python logs every failed connection attempt (ERROR); our own lines say what we wait for.
    Its messages show with -vv (DEBUG) only."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _daemon_log_level() -> None:
    """A daemon reports what it does: INFO from graphsentry's own loggers unless the CLI asked for
    more (-v/-vv); the root logger's level stays as the top-level CLI set it for other libraries."""
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:
        for name in ("detector", "ingest", "training", "knowledge"):
            lg = logging.getLogger(name)
            if lg.level == logging.NOTSET or lg.level > logging.INFO:
                lg.setLevel(logging.INFO)
    _quiet_kafka_client()
    if not root.handlers:
        from detector.logs import configure_logging

        configure_logging(root.getEffectiveLevel() if root.level != logging.NOTSET else logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    from detector.daemon import dump_config, load_config, run_daemon

    over: dict = {}
    if args.model:
        over.setdefault("model", {})["path"] = args.model
    paths = list(args.inputs or []) + list(getattr(args, "input_alias", None) or [])
    if paths:
        over["source"] = {"type": "file", "paths": paths, "follow": bool(args.follow)}
    cfg = load_config(args.config, overrides=over or None)
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    if getattr(args, "log_format", None) is None and cfg["log"]["format"] != "text":
        from detector.logs import configure_logging

        root = logging.getLogger()  # the config's log.format, unless --log-format was given
        configure_logging(root.level if root.level != logging.NOTSET else logging.WARNING, cfg["log"]["format"])
    _daemon_log_level()
    ui = __import__("detector.ui.cli").ui.cli.start_beside_daemon(cfg, args.ui)  # None without --ui
    try:
        summary = run_daemon(cfg)
    finally:
        if ui is not None:
            ui.stop()
    print(summary.text())
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary.to_dict(), f, indent=2, default=str)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from ingest.kafka_io import (
        client_options,
        describe_error,
        ensure_topics,
        kafka_errors,
        make_producer,
        parse_speed,
        probe,
        replay,
    )
    from ingest.tail import read_files

    speed = parse_speed(args.speed)
    cfg = {"bootstrap": args.bootstrap}
    for path in args.inputs:
        if not Path(path).exists():
            raise FileNotFoundError(f"input not found: {path}")

    def unreachable(exc: BaseException) -> ValueError:
        return ValueError(f"cannot reach Kafka at {args.bootstrap}: {describe_error(exc, args.bootstrap)}; "
                          "start the broker or fix --bootstrap")

    _quiet_kafka_client()
    errors = kafka_errors()
    why = probe(args.bootstrap, timeout=3.0)  # nothing listening: say so at once
    if why:
        raise ValueError(f"cannot reach Kafka at {args.bootstrap}: {why}; start the broker or fix --bootstrap")
    try:
        ensure_topics(args.bootstrap, {args.topic: args.partitions})
        from kafka import KafkaConsumer

        c = KafkaConsumer(**client_options(cfg))
        try:
            n_parts = len(c.partitions_for_topic(args.topic) or []) or args.partitions
        finally:
            c.close()
        producer = make_producer(cfg, linger_ms=20, batch_size=1 << 20, max_request_size=16 << 20)
    except errors as exc:
        raise unreachable(exc) from None
    try:
        counts = replay(read_files(args.inputs, format=args.input_format), producer, args.topic, n_parts,
                        fmt=args.fmt, speed=speed, arrow_batch=args.arrow_batch)
    except errors as exc:
        raise ValueError(f"lost Kafka at {args.bootstrap} while publishing to {args.topic}: "
                         f"{describe_error(exc, args.bootstrap)}; records up to the failure may be on the topic — "
                         "start the broker and replay again") from None
    finally:
        try:
            producer.close(timeout=5)
        except Exception:  # noqa: BLE001
            pass
    print(json.dumps({"topic": args.topic, "partitions": n_parts, "format": args.fmt, **counts}))
    return 0

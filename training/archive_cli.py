"""``graphsentry archive``: fill the retraining archive from a Kafka topic or from capture files.

``--from-kafka BOOTSTRAP --topic T`` consumes canonical records in the daemon's message formats
(JSON per record, Arrow IPC batches; decoded by :mod:`ingest.kafka_io`, the daemon's own consumer
source, which gives every record its exact offset and index: :mod:`ingest.kafka_positions`), writes
them to an :class:`ingest.archive.ArchiveWriter` with their Kafka positions (score/alert null: nothing
scored them) and commits offsets only after the archive flushed them.
A second run over the same records (same group, or another group) archives nothing twice.

``compact --archive DIR`` merges the small files of each closed hour into one (:mod:`ingest.archive_compact`).

``--from-files INPUT...`` reads capture files with :func:`ingest.readers.open_inputs`; each record's
position is ``("file:<absolute path>", 0, row)``, so archiving the same file again adds nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ingest.archive_layout import parse_size

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``archive``."""
    p = subparsers.add_parser(
        "archive", help="archive canonical records (Parquet, date/hour partitions) for retraining",
        description="Append records to a retraining archive (Parquet zstd, Hive-partitioned by event "
                    "date/hour; see docs/archive.md): from a Kafka topic in the daemon's message formats "
                    "(offsets committed only after the archive is flushed; nothing archived twice) or "
                    "from capture files.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers HOST:PORT[,...]")
    src.add_argument("--from-files", nargs="+", metavar="INPUT", help="capture files (any reader format)")
    p.add_argument("--out", metavar="DIR", help="the archive directory")
    p.add_argument("--topic", help="--from-kafka: the topic of canonical records")
    p.add_argument("--group", default="graphsentry-archive", help="consumer group (default graphsentry-archive)")
    p.add_argument("--format", dest="fmt", default="auto", choices=["auto", "json", "arrow"],
                   help="--from-kafka: message format (default auto: per message)")
    p.add_argument("--input-format", default="auto", help="--from-files: reader format (default auto)")
    p.add_argument("--kind", default="flows", choices=["flows", "transactions"], help="record kind (default flows)")
    p.add_argument("--max-bytes", help="retention: keep the archive below this size, e.g. 20GB (whole oldest hours go)")
    p.add_argument("--max-age", help="retention: delete hours older than this, e.g. 30d (event time vs now)")
    p.add_argument("--until-idle", type=float, metavar="S",
                   help="--from-kafka: stop after S seconds without a new record (default: run until stopped)")
    p.add_argument("--flush-interval", type=float, default=5.0, metavar="S",
                   help="--from-kafka: flush (and then commit) at least every S seconds (default 5)")
    p.add_argument("--dead-letter", metavar="FILE", help="JSON-lines file for records that could not be decoded")
    p.set_defaults(func=_archive)
    sub = p.add_subparsers(dest="archive_action", metavar="compact")
    c = sub.add_parser("compact", help="merge the small files of each closed hour into one (atomic, same records)",
                       description="Merge each closed hour's files into one file (several above --max-rows), "
                                   "atomically, keeping exactly the same records (docs/archive.md, Compaction). "
                                   "An hour is closed when it ended more than --grace ago and is not the newest "
                                   "hour of the archive; a daemon may keep writing meanwhile.")
    c.add_argument("--archive", required=True, metavar="DIR", help="the archive directory")
    c.add_argument("--grace", default="1h", help="time after an hour's end before it is compacted (default 1h)")
    c.add_argument("--max-rows", type=int, default=5_000_000, help="most records per new file (default 5000000)")
    c.add_argument("--dry-run", action="store_true", help="only say what would be merged")
    c.set_defaults(func=_compact)


def _compact(args: argparse.Namespace) -> int:
    from ingest.archive_compact import compact
    from ingest.windows import parse_duration

    if not Path(args.archive).is_dir():
        raise FileNotFoundError(f"--archive {args.archive}: no such directory")
    grace = parse_duration(args.grace)
    if grace < 0:
        raise ValueError(f"--grace {args.grace!r}: give a duration >= 0 (e.g. 1h)")
    if args.max_rows < 1:
        raise ValueError(f"--max-rows {args.max_rows}: give a positive number of records")
    print(json.dumps(compact(args.archive, grace=grace, max_rows=args.max_rows, dry_run=args.dry_run),
                     sort_keys=True))
    return 0


def _writer(args: argparse.Namespace):
    from ingest.archive import ArchiveWriter
    from ingest.windows import parse_duration

    max_bytes = parse_size(args.max_bytes) if args.max_bytes else None
    max_age = parse_duration(args.max_age) if args.max_age else None
    if max_age is not None and max_age <= 0:
        raise ValueError(f"--max-age {args.max_age!r}: must be above 0 (e.g. 30d)")
    return ArchiveWriter(args.out, max_bytes=max_bytes, max_age=max_age, kind=args.kind)


def _archive(args: argparse.Namespace) -> int:
    if args.from_kafka is None and args.from_files is None:
        raise ValueError("give a source: graphsentry archive --from-kafka BOOTSTRAP --topic T --out DIR, "
                         "--from-files INPUT... --out DIR, or graphsentry archive compact --archive DIR")
    if not args.out:
        raise ValueError("--out DIR is required: the archive directory to write")
    if args.until_idle is not None and args.until_idle <= 0:
        raise ValueError(f"--until-idle {args.until_idle}: give a positive number of seconds")
    if args.flush_interval <= 0:
        raise ValueError(f"--flush-interval {args.flush_interval}: give a positive number of seconds")
    if args.from_kafka is not None:
        if not args.topic:
            raise ValueError("--from-kafka needs --topic TOPIC")
        summary = archive_kafka(args)
    else:
        summary = archive_files(args)
    print(json.dumps(summary, sort_keys=True))
    return 0


# ------------------------------------------------------------------------------------------
# files


def archive_files(args: argparse.Namespace) -> dict[str, Any]:
    from ingest.deadletter import DeadLetter
    from ingest.readers import NothingReadable, open_inputs

    for path in args.from_files:
        if not Path(path).exists():
            raise FileNotFoundError(f"input not found: {path}")
        if Path(path).is_dir():
            raise ValueError(f"input {path} is a directory: give the capture files in it")
    dl = DeadLetter(args.dead_letter)
    writer = _writer(args)
    read = kept = 0
    try:
        for path in args.from_files:
            topic = f"file:{Path(path).resolve()}"
            for batch in open_inputs([path], format=args.input_format, dead_letter=dl, allow_nothing=True):
                read += batch.num_rows
                rows = batch.column("row").to_numpy(zero_copy_only=False)
                kept += writer.write(batch, positions={"topic": topic, "partition": 0, "offset": rows})
        writer.close()
    finally:
        dl.close() if hasattr(dl, "close") else None
    rejected = sum(dl.counts.values())
    if read == 0 and rejected:
        raise NothingReadable(f"nothing readable in {len(args.from_files)} input(s): {rejected} records/files "
                              f"rejected {dict(dl.counts)}; check the files and --input-format")
    return {"out": str(args.out), "records_read": read, "archived": kept, "rejected": dict(dl.counts),
            **{k: v for k, v in writer.stats.to_dict().items() if k != "rows_written"}}


# ------------------------------------------------------------------------------------------
# Kafka


def archive_kafka(args: argparse.Namespace) -> dict[str, Any]:
    from detector.cli_serve import _quiet_kafka_client
    from ingest.archive import chunk_positions
    from ingest.deadletter import DeadLetter
    from ingest.kafka_io import KafkaSource, OffsetTracker, client_options, describe_error, kafka_errors, probe

    bootstrap = args.from_kafka

    def unreachable(why: str) -> ValueError:
        return ValueError(f"cannot reach Kafka at {bootstrap}: {why}; start the broker or fix --from-kafka")

    _quiet_kafka_client()
    why = probe(bootstrap, timeout=3.0)
    if why:
        raise unreachable(why)
    cfg = {"bootstrap": bootstrap, "topic": args.topic, "group_id": args.group, "auto_offset_reset": "earliest",
           "session_timeout_ms": 10000, "heartbeat_interval_ms": 1000}
    try:
        from kafka import KafkaConsumer

        c = KafkaConsumer(**client_options(cfg))
        try:
            parts = c.partitions_for_topic(args.topic)
        finally:
            c.close()
    except kafka_errors() as exc:
        raise unreachable(describe_error(exc, bootstrap)) from None
    if not parts:
        raise ValueError(f"topic {args.topic!r} not found at {bootstrap}: check --topic")

    writer = _writer(args)
    dl = DeadLetter(args.dead_letter)
    q: queue.Queue = queue.Queue(maxsize=64)
    tracker = OffsetTracker()
    # every SourceBatch carries each record's offset and index in its message (ingest.kafka_positions)
    src = KafkaSource(cfg, q, tracker, dead_letter=dl, kind=args.kind, fmt=args.fmt, commit_interval=0.5)
    stop = threading.Event()
    prev = None
    if threading.current_thread() is threading.main_thread():
        prev = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    read = kept = 0
    next_row = 0
    undone: list[np.ndarray] = []
    src.start()
    last_data = None
    next_flush = time.monotonic() + args.flush_interval
    assign_deadline = time.monotonic() + 60.0

    def flush() -> None:
        writer.flush()  # durable first ...
        if undone:
            tracker.done_rows(np.concatenate(undone))  # ... then the source may commit these offsets
            undone.clear()

    try:
        while not stop.is_set():
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                item = False
            now = time.monotonic()
            if item is None:  # the source ended (an error, or stopped)
                break
            if item is not False:
                table, offs, idx = item.table, item.offsets, item.indexes
                n = table.num_rows
                if offs is None and n:  # positions unknown (cannot happen with either backend): exact or refuse
                    exact = chunk_positions(n, item.first_offset, item.last_offset)
                    if exact is None:
                        raise RuntimeError(f"no record positions for {item.topic}/{item.partition} "
                                           f"{item.first_offset}..{item.last_offset}")
                    offs, idx = exact
                tracker.add(item.topic, item.partition, item.first_offset, item.last_offset, next_row, next_row + n)
                if n:
                    read += n
                    kept += writer.write(table, positions={"topic": item.topic, "partition": item.partition,
                                                           "offset": offs, "index": idx})
                    undone.append(np.arange(next_row, next_row + n, dtype=np.int64))
                    next_row += n
                last_data = now
            if src.assigned and last_data is None:
                last_data = now  # the idle clock starts once partitions are assigned
            if now >= next_flush or writer.pending_rows >= 200_000:
                flush()
                next_flush = now + args.flush_interval
            if args.until_idle is not None and last_data is not None and now - last_data >= args.until_idle \
                    and q.empty():
                break
            if last_data is None and now > assign_deadline:
                raise ValueError(f"no partition of {args.topic!r} was assigned to group {args.group!r} within 60 s "
                                 "(another member holds them?): try another --group")
        flush()
        if src.error is not None:
            raise ValueError(f"Kafka consumer failed: {describe_error(src.error, bootstrap)}")
    finally:
        try:
            writer.flush()
            if undone:
                tracker.done_rows(np.concatenate(undone))
        finally:
            src.stop()  # its thread makes the final commit of what is durable
            src.join(30)
            dl.close() if hasattr(dl, "close") else None
            if prev is not None:
                signal.signal(signal.SIGTERM, prev)
    rejected = sum(dl.counts.values())
    if read == 0 and rejected:
        from ingest.readers import NothingReadable

        raise NothingReadable(f"no message of {args.topic!r} could be decoded ({rejected} rejected "
                              f"{dict(dl.counts)}); check --format and what the producer writes")
    committed = {f"{t}/{p}": o for (t, p), o in sorted(src.committed_offsets().items())}
    return {"out": str(args.out), "topic": args.topic, "group": args.group, "records_read": read, "archived": kept,
            "rejected": dict(dl.counts), "committed": committed,
            **{k: v for k, v in writer.stats.to_dict().items() if k != "rows_written"}}

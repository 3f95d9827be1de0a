"""Reading a topic back (tests, tools) and replaying tables onto a topic, keyed by source endpoint."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.kafka_io.clients import client_options, partition_for
from ingest.kafka_io.codecs import encode_arrow, table_to_json_messages

log = logging.getLogger("ingest.kafka_io")


def iter_topic(
    bootstrap: str, topic: str, timeout_s: float = 10.0, group_id: str | None = None, idle_s: float = 2.0,
    cfg: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Every message of ``topic`` from the beginning (tests, tools): stops after ``idle_s`` without data."""
    from kafka import KafkaConsumer

    opts = client_options({**(cfg or {}), "bootstrap": bootstrap})
    c = KafkaConsumer(topic, group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=int(idle_s * 1000), **opts)
    deadline = time.monotonic() + timeout_s
    try:
        for m in c:
            yield m
            if time.monotonic() > deadline:
                break
    finally:
        c.close()



def parse_speed(speed: str | float | None) -> float | None:
    """``"10x"`` -> 10.0, ``"max"``/None -> None (as fast as possible), ``"1"`` -> 1.0."""
    if speed is None:
        return None
    if isinstance(speed, (int, float)):
        return float(speed)
    s = str(speed).strip().lower()
    if s in ("max", "inf", ""):
        return None
    s = s[:-1] if s.endswith("x") else s
    v = float(s)
    if v <= 0:
        raise ValueError(f"--speed must be positive or 'max', got {speed!r}")
    return v


def replay(
    batches: Iterable[pa.RecordBatch | pa.Table], producer, topic: str, n_partitions: int,
    fmt: str = "json", speed: float | None = None, arrow_batch: int = 2000,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> dict[str, int]:
    """Publish canonical batches to ``topic`` keeping event-time gaps scaled by ``speed``.

    JSON: one message per record, key = ``src_ip`` (kafka-python hashes it to a partition).
    Arrow: records grouped by the partition their ``src_ip`` hashes to, ``arrow_batch`` per message,
    sent to that partition explicitly — the same keying as JSON, so both formats split alike.
    Returns counts: records, messages.
    """
    if fmt not in ("json", "arrow"):
        raise ValueError(f"replay format must be json or arrow, got {fmt!r}")
    t0_event: float | None = None
    t0_wall = clock()
    n_rec = n_msg = 0
    pending: dict[int, list[pa.Table]] = {}
    pending_n: dict[int, int] = {}
    part_cache: dict[str, int] = {}  # murmur2 in pure Python is slow; sources repeat

    def flush_part(p: int) -> None:
        nonlocal n_msg
        if not pending.get(p):
            return
        t = pa.concat_tables(pending[p]).combine_chunks()
        producer.send(topic, encode_arrow(t), partition=p)
        n_msg += 1
        pending[p], pending_n[p] = [], 0

    for b in batches:
        t = pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
        if t.num_rows == 0:
            continue
        ts = t.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        # Pace per slice: at most `step` rows and at most 20 ms of scaled event time per slice, so
        # sleeping never happens per record (that would cap the rate) yet gaps are kept.
        step = 2048 if fmt == "arrow" else 256
        if speed is not None:
            bucket = np.floor((ts - ts[0]) / (0.02 * speed)).astype(np.int64)
            cuts = np.flatnonzero(np.diff(bucket)) + 1
        else:
            cuts = np.zeros(0, dtype=np.int64)
        bounds = sorted(set(cuts.tolist()) | set(range(0, t.num_rows, step)) | {t.num_rows})
        for i0, i1 in zip(bounds[:-1], bounds[1:]):
            sl = t.slice(i0, i1 - i0)
            if speed is not None:
                ev = float(ts[i0])
                if t0_event is None:
                    t0_event = ev
                due = t0_wall + (ev - t0_event) / speed
                delay = due - clock()
                if delay > 0:
                    if fmt == "arrow":
                        for p in list(pending):
                            flush_part(p)
                    sleep(delay)
            src = sl.column("src_ip").to_pylist()
            if fmt == "json":
                for key, val in zip(src, table_to_json_messages(sl)):
                    producer.send(topic, val, key=str(key).encode())
                    n_msg += 1
            else:
                parts = np.array([part_cache[k] if k in part_cache else
                                  part_cache.setdefault(k, partition_for(str(k).encode(), n_partitions))
                                  for k in src])
                for p in np.unique(parts):
                    sub = sl.filter(pa.array(parts == p))
                    pending.setdefault(int(p), []).append(sub)
                    pending_n[int(p)] = pending_n.get(int(p), 0) + sub.num_rows
                    if pending_n[int(p)] >= arrow_batch:
                        flush_part(int(p))
            n_rec += sl.num_rows
    for p in list(pending):
        flush_part(p)
    producer.flush()
    return {"records": n_rec, "messages": n_msg}

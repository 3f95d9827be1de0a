"""A poll's worth of JSON-per-record messages decoded at once, each message judged on its own.

JSON lines per record is what Zeek, Suricata (EVE), Filebeat/Vector and most Kafka pipelines
produce, so this is the daemon's hot path. :func:`decode_json_batch` does it in three steps:

1. each message is parsed with ``orjson`` (a message it refuses is parsed again with the standard
   library, so what is valid JSON does not depend on the parser: ``NaN``, UTF-16; an integer beyond 64
   bits becomes a float, as orjson reads it);
   a message that is no JSON object is one ``bad_json`` dead letter;
2. every record's ``ts`` becomes microseconds with the per-record rule (epoch seconds or ISO-8601);
3. the records become one table in Arrow's C++ (``Table.from_pylist``); a run that Arrow refuses (a
   wrong type somewhere) is halved until the refused records stand alone, and a record that is
   refused alone, misses a required field or has an unusable ``ts`` goes through the per-record
   normaliser (:func:`ingest.kafka_io.codecs.normalise_records`), which converts it or dead-letters it
   with its reason.

So one bad message is one dead letter and its neighbours take the fast path: the result is the
same table and the same dead letters as decoding every message alone (tests/ingest/test_kafka_batch_decode.py),
and each row carries the index of its message (the daemon's record positions need it).

The parser was chosen by ``benchmarks/serve_bench.py --decode-only`` (reports/serve_bench_decode.json: one
poll of 2,000 flow messages through ``pyarrow.json`` on the joined payloads, orjson and msgspec per message, the
standard library): orjson per message is about as fast as the fastest whole-poll parse and keeps a bad message
one message, so no whole-poll retry is needed.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ingest.kafka_io.codecs import _json_schema, _parse_ts, _raw_text, normalise_records
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA


def parse_json_message(raw: bytes | None) -> dict | None:
    """The JSON object in one message, or None when it holds none."""
    if raw is None:
        return None
    try:
        rec = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        try:  # what orjson refuses but the standard library reads (NaN, a BOM, UTF-16)
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError, TypeError, RecursionError):
            return None
    return rec if isinstance(rec, dict) else None


class _AtMessage:
    """Dead-letter sink for one record: numbered by its message's place in the poll."""

    def __init__(self, sink: Any, line: int) -> None:
        self.sink, self.line = sink, line

    def add(self, source: str, line: Any, reason: str, raw: Any) -> None:
        if self.sink is not None:
            self.sink.add(source, self.line, reason, raw)


def _one(rec: dict, msg: int, kind: str, schema: pa.Schema, dead_letter: Any, source: str) -> pa.Table | None:
    """The careful per-record path for one record: its table (0 or 1 row)."""
    try:
        return normalise_records([rec], kind, _AtMessage(dead_letter, msg), source=source)
    except (pa.ArrowException, OverflowError, ValueError, TypeError):  # e.g. an integer beyond int64
        if dead_letter is not None:
            dead_letter.add(source, msg, "bad_value", json.dumps(rec, default=str)[:4096])
        return None


def _no_ts(schema: pa.Schema) -> pa.Schema:
    """What Arrow converts: every field but ``ts`` (converted by the per-record rule), all nullable."""
    return pa.schema([pa.field(f.name, f.type) for f in _json_schema(schema) if f.name != "ts"])


def _finish(t: pa.Table, ts_us: list, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name == "ts":
            cols.append(pa.array(ts_us, pa.int64()).cast(f.type))
        elif f.name == "row":
            cols.append(pc.fill_null(t.column("row"), -1).cast(pa.int64()))
        else:
            cols.append(t.column(f.name))
    return pa.Table.from_arrays(cols, schema=schema)


def _needs_care(t: pa.Table, ts_us: list, schema: pa.Schema) -> np.ndarray:
    """Rows the normaliser must judge: a required field null or empty, or ``ts`` unusable."""
    bad = np.fromiter((v is None for v in ts_us), bool, len(ts_us))
    for f in schema:
        if f.nullable or f.name in ("row", "ts"):
            continue
        col = t.column(f.name)
        if col.null_count:
            bad |= col.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(f.type):
            bad |= pc.fill_null(pc.equal(col, ""), False).to_numpy(zero_copy_only=False)
    return bad


def _convert(recs: list[dict], msgs: list[int], ts_us: list, kind: str, schema: pa.Schema, jschema: pa.Schema,
             dead_letter: Any, source: str, out: list) -> None:
    """Append ``(table, message indexes)`` pieces for ``recs`` to ``out``, in message order."""
    try:
        t = pa.Table.from_pylist(recs, schema=jschema)
    except (pa.ArrowException, OverflowError, ValueError, TypeError):
        if len(recs) == 1:
            one = _one(recs[0], msgs[0], kind, schema, dead_letter, source)
            if one is not None and one.num_rows:
                out.append((one, np.asarray(msgs, np.int64)))
            return
        mid = len(recs) // 2
        _convert(recs[:mid], msgs[:mid], ts_us[:mid], kind, schema, jschema, dead_letter, source, out)
        _convert(recs[mid:], msgs[mid:], ts_us[mid:], kind, schema, jschema, dead_letter, source, out)
        return
    bad = _needs_care(t, ts_us, schema)
    if not bad.any():
        out.append((_finish(t, ts_us, schema), np.asarray(msgs, np.int64)))
        return
    lo = 0
    for i in np.flatnonzero(bad).tolist() + [len(recs)]:
        if i > lo:  # the good run before the record that needs care
            keep = t.slice(lo, i - lo)
            out.append((_finish(keep, ts_us[lo:i], schema), np.asarray(msgs[lo:i], np.int64)))
        if i < len(recs):
            one = _one(recs[i], msgs[i], kind, schema, dead_letter, source)
            if one is not None and one.num_rows:
                out.append((one, np.asarray(msgs[i:i + 1], np.int64)))
        lo = i + 1


def decode_json_batch(values: list[bytes | None], kind: str, dead_letter: Any = None, source: str = "kafka",
                      msg_index: list[int] | None = None) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """``(table, message index of each row, malformed counts by reason)`` for JSON-per-record messages.

    ``msg_index`` numbers the messages (their place in the poll; default ``0..n-1``): dead letters and
    the returned indexes use it. Rows are in message order; ``proto`` is lower-cased.
    """
    malformed: dict[str, int] = {}

    class _Counting:
        def add(self, src: str, line: Any, reason: str, raw: Any) -> None:
            malformed[reason] = malformed.get(reason, 0) + 1
            if dead_letter is not None:
                dead_letter.add(src, line, reason, raw)

    counting = _Counting()
    nums = msg_index if msg_index is not None else range(len(values))
    recs: list[dict] = []
    msgs: list[int] = []
    for i, raw in zip(nums, values):
        rec = parse_json_message(raw)
        if rec is None:
            counting.add(source, i, "bad_json", _raw_text(raw))
            continue
        recs.append(rec)
        msgs.append(i)
    t, idx = records_batch(recs, msgs, kind, counting, source)
    return t, idx, malformed


def records_batch(recs: list[dict], msgs: list[int], kind: str, dead_letter: Any = None,
                  source: str = "kafka") -> tuple[pa.Table, np.ndarray]:
    """``(table, message index of each row)`` for parsed records (``msgs``: each one's message number)."""
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    if not recs:
        return schema.empty_table(), np.empty(0, np.int64)
    ts_us = [_parse_ts(r.get("ts")) if isinstance(r, dict) else None for r in recs]
    pieces: list = []
    _convert(recs, msgs, ts_us, kind, schema, _no_ts(schema), dead_letter, source, pieces)
    if not pieces:
        return schema.empty_table(), np.empty(0, np.int64)
    tables = [_as_schema(t, schema) for t, _ in pieces]
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if "proto" in t.column_names:
        t = t.set_column(t.schema.get_field_index("proto"), schema.field("proto"), pc.utf8_lower(t.column("proto")))
    return t, np.concatenate([m for _, m in pieces])


def _as_schema(t: pa.Table, schema: pa.Schema) -> pa.Table:
    if t.schema.equals(schema):
        return t
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in schema], schema=schema)


__all__ = ["decode_json_batch", "parse_json_message", "records_batch"]

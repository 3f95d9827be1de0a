"""A poll's worth of JSON-per-record messages decoded at once, each message judged on its own.

JSON lines per record is what Zeek, Suricata (EVE), Filebeat/Vector and most Kafka pipelines
produce, so this is the daemon's hot path. Its thread shares the GIL with the Kafka client's own
record parsing, so :func:`decode_json_batch` reads a poll in Arrow's C++, which releases the GIL:

1. the payloads are joined with newlines and read by ``pyarrow.json`` with an explicit schema (fields
   not in it are ignored), ``ts`` as a number or as text as the first message has it; the messages it
   cannot read exactly as orjson does are screened out first (:func:`_screen`: a ``None`` value, no
   ``{...}`` on one line, an empty message, another control byte, invalid UTF-8, ``NaN``/``Inf``, deep
   nesting); a message Arrow refuses with an error that names its row (a wrong JSON type, a duplicate
   key) is set aside and the rest read again; a refusal that names none (a number the column's type
   cannot hold) or a row count that differs from the message count (two objects in one message) cuts
   the run in parts, each read the same way, down to runs of 32 messages;
2. ``ts`` becomes microseconds vectorised with the per-record rule of
   :func:`ingest.kafka_io.codecs._parse_ts`: epoch seconds (a number or a plain decimal string) and
   ISO-8601 (``Z``, ``+HH:MM`` or naive = UTC, up to six fraction digits) with the same double
   arithmetic; any other string, an impossible date or a value out of range is left to step 3, as is
   a row whose required field is null or empty;
3. every message step 1 or 2 left is decoded as before, one by one: parsed with ``orjson`` (a message it
   refuses is parsed again with the standard library, so what is valid JSON does not depend on the
   parser: ``NaN``, UTF-16; an integer beyond 64 bits becomes a float, as orjson reads it); a message
   that is no JSON object is one ``bad_json`` dead letter; the records become one table with
   ``Table.from_pylist``, a run Arrow refuses being halved until the refused records stand alone, and a
   record refused alone, missing a required field or with an unusable ``ts`` goes through the
   per-record normaliser (:func:`ingest.kafka_io.codecs.normalise_records`), which converts it or
   dead-letters it with its reason.

So one bad message is one dead letter and its neighbours are scored: the result is the same table, the
same row-to-message index and the same dead letters (reasons, numbers, order) as decoding every message
alone with orjson (tests/ingest/test_kafka_batch_decode.py, tests/ingest/test_kafka_json_fastpath.py),
and each row carries the index of its message (the daemon's record positions need it). Polls of fewer
than ``FAST_MIN`` messages take step 3 only.

``benchmarks/json_decode_bench.py`` measures both paths against msgspec and the standard library on one
poll of 2,000 flow messages, wall time and GIL time per poll (reports/json_decode_bench.json).
"""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

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


def _finish(t: pa.Table, ts_us: list | np.ndarray, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name == "ts":
            cols.append(pa.array(ts_us, pa.int64()).cast(f.type))
        elif f.name == "row":
            cols.append(pc.fill_null(t.column("row"), -1).cast(pa.int64()))
        else:
            cols.append(t.column(f.name))
    return pa.Table.from_arrays(cols, schema=schema)


def _required_missing(t: pa.Table, schema: pa.Schema) -> np.ndarray:
    """Rows the normaliser must judge because a required field is null or empty."""
    bad = np.zeros(t.num_rows, bool)
    for f in schema:
        if f.nullable or f.name in ("row", "ts"):
            continue
        col = t.column(f.name)
        if col.null_count:
            bad |= col.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(f.type):
            bad |= pc.fill_null(pc.equal(col, ""), False).to_numpy(zero_copy_only=False)
    return bad


def _ts_us(v: Any) -> int | None:
    """``_parse_ts`` where it gives an int64; None (the normaliser then names the reason) otherwise."""
    try:
        us = _parse_ts(v)
    except (OverflowError, ValueError):  # "inf" as text
        return None
    return us if us is not None and -(2 ** 63) <= us < 2 ** 63 else None


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
    bad = np.fromiter((v is None for v in ts_us), bool, len(ts_us)) | _required_missing(t, schema)
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
                      msg_index: list[int] | None = None, fast: bool = True,
                      ) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """``(table, message index of each row, malformed counts by reason)`` for JSON-per-record messages.

    ``msg_index`` numbers the messages (their place in the poll; default ``0..n-1``): dead letters and
    the returned indexes use it. Rows are in message order; ``proto`` is lower-cased. ``fast=False`` reads
    every message with orjson (the reference the whole-poll path is tested against).
    """
    malformed: dict[str, int] = {}
    values = values if isinstance(values, list) else list(values)
    nums = None if msg_index is None else list(msg_index)

    class _Counting:  # dead letters arrive numbered by position in ``values``
        def add(self, src: str, line: Any, reason: str, raw: Any) -> None:
            malformed[reason] = malformed.get(reason, 0) + 1
            if dead_letter is not None:
                dead_letter.add(src, line if nums is None else nums[line], reason, raw)

    counting = _Counting()
    plan = _fast_rows(values, kind) if fast and len(values) >= FAST_MIN else None
    if plan is None:
        t, pos = _per_message(values, range(len(values)), kind, counting, source)
    else:
        t, pos, slow = plan
        if len(slow):  # the rest as each message alone: same rows, same dead letters in the same order
            ts, ps = _per_message([values[i] for i in slow.tolist()], slow.tolist(), kind, counting, source)
            order = np.argsort(np.concatenate([pos, ps]), kind="stable")
            pos = np.concatenate([pos, ps])[order]
            t = pa.concat_tables([t, ts]).take(pa.array(order))
    idx = pos.astype(np.int64) if nums is None else np.asarray(nums, np.int64)[pos]
    return t, idx, malformed


def _per_message(values: list, positions: Any, kind: str, sink: Any, source: str) -> tuple[pa.Table, np.ndarray]:
    """Each message parsed by orjson: a message that is no JSON object is one ``bad_json`` dead letter."""
    recs: list[dict] = []
    msgs: list[int] = []
    for i, raw in zip(positions, values):
        rec = parse_json_message(raw)
        if rec is None:
            sink.add(source, i, "bad_json", _raw_text(raw))
            continue
        recs.append(rec)
        msgs.append(i)
    return records_batch(recs, msgs, kind, sink, source)


def records_batch(recs: list[dict], msgs: list[int], kind: str, dead_letter: Any = None,
                  source: str = "kafka") -> tuple[pa.Table, np.ndarray]:
    """``(table, message index of each row)`` for parsed records (``msgs``: each one's message number)."""
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    if not recs:
        return schema.empty_table(), np.empty(0, np.int64)
    ts_us = [_ts_us(r.get("ts")) if isinstance(r, dict) else None for r in recs]
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


# --------------------------------------------------------------------------------------------
# the whole-poll path: pyarrow.json on the joined payloads, exact or not taken

#: polls smaller than this take the per-message path: the whole-poll path has a fixed cost of some hundred
#: microseconds with the GIL, about that of 16 messages through orjson (reports/json_decode_bench.json
#: ``small_polls``)
FAST_MIN = 32
#: a refused run is cut in this many parts and each read again, down to runs of ``_MIN_RUN`` messages
_SPLIT, _MIN_RUN = 8, 32
#: brackets one message may hold and still be read by Arrow (orjson and the standard library refuse deep nesting)
_MAX_BRACKETS = 256
#: a poll is read as one block (at least this big) in the calling thread: Arrow's threads gain nothing on one
#: block and would take a core from the Kafka client (reports/json_decode_bench.json ``arrow_read_options``)
_BLOCK = 1 << 20
_ROW = re.compile(r"in row (\d+)")
#: parse errors that name their row followed one by one before a refused run is cut in parts
_MAX_NAMED = 32
_ISO = (r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
        r"(?:\.(?P<f>\d{1,6}))?(?P<z>Z|[+-]\d{2}:\d{2})?$")
_NUMBER = r"^-?\d+(?:\.\d+)?$"
_BASIC_DATE = r"^\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"  # fromisoformat reads "20231114..." as a date
_EXACT = float(2 ** 53)  # microseconds a double holds exactly: the per-record float arithmetic is replayed below it


def _parse_options(schema: pa.Schema, ts_type: pa.DataType) -> pajson.ParseOptions:
    fields = [pa.field(f.name, ts_type if f.name == "ts" else f.type) for f in schema]
    return pajson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")


_OPTIONS = {(s, t): _parse_options(FLOW_SCHEMA if s == "flows" else TX_SCHEMA, pa.float64() if t == "number"
                                   else pa.string()) for s in ("flows", "transactions") for t in ("number", "text")}


def _find(a: np.ndarray, needle: bytes) -> np.ndarray:
    """Byte positions where ``needle`` starts in ``a``."""
    pos = np.flatnonzero(a[:max(len(a) - len(needle) + 1, 0)] == needle[0])
    for j in range(1, len(needle)):
        pos = pos[a[pos + j] == needle[j]]
    return pos


def _screen(values: list, joined: bytes, lens: np.ndarray) -> np.ndarray:
    """Which messages Arrow reads exactly as orjson does, one row per line (checked on the joined bytes).

    A message qualifies when it is one line that starts with ``{`` and ends with ``}`` (then, as a raw
    newline cannot sit inside a JSON string, each line is one or more whole objects and a row count equal to
    the message count puts one object on each line), holds no other control byte, is valid UTF-8, has no
    ``NaN``/``Inf`` (Arrow also reads ``Inf``, ``-Inf`` and ``-NaN``, which the per-message parsers refuse) and
    at most ``_MAX_BRACKETS`` brackets (orjson refuses nesting deeper than 1024, even in a field not read).
    """
    n = len(values)
    a = np.frombuffer(joined, np.uint8)
    starts = np.zeros(n, np.int64)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    ends = starts + lens
    ok = lens >= 2
    if len(a):
        ok &= (a[np.minimum(starts, len(a) - 1)] == 0x7B) & (a[np.maximum(ends - 1, 0)] == 0x7D)
    bad: list[np.ndarray] = []
    ctrl = a < 0x20
    if np.count_nonzero(ctrl) != n - 1:  # more than the separators
        pos = np.flatnonzero(ctrl)
        bad.append(pos[~np.isin(pos, ends[:-1])])
    bad += [_find(a, b"NaN"), _find(a, b"Inf")]
    brackets = (a == 0x5B) | (a == 0x7B)
    if np.count_nonzero(brackets) > n + _MAX_BRACKETS:  # some message may hold more than the limit
        counts = np.bincount(np.searchsorted(starts, np.flatnonzero(brackets), side="right") - 1, minlength=n)
        ok &= counts <= _MAX_BRACKETS
    for pos in bad:
        if len(pos):
            ok[np.searchsorted(starts, pos, side="right") - 1] = False
    if not joined.isascii():
        for i in np.flatnonzero(ok).tolist():
            try:
                values[i].decode("utf-8")
            except UnicodeDecodeError:
                ok[i] = False
    return ok


def _arrow(data: bytes, options: pajson.ParseOptions) -> pa.Table:
    """``data`` read as one block (so an error's row is the line's place in ``data``), in this thread."""
    return pajson.read_json(pa.BufferReader(data), parse_options=options, read_options=pajson.ReadOptions(
        use_threads=False, block_size=max(_BLOCK, len(data) + 1)))


def _read(vals: list[bytes], pos: np.ndarray, options: pajson.ParseOptions, out: list, refused: list,
          joined: bytes | None = None) -> None:
    """Arrow's table of ``vals`` appended to ``out`` as ``(table, positions)``, the positions of the messages
    it cannot read to ``refused``.

    A parse error names its row: that message is set aside and the rest read on from the next one, up to
    ``_MAX_NAMED`` times, then what is left is read again at once. A refusal that names no row (a number a
    column's type cannot hold) or a row count that differs from the message count cuts the run in
    ``_SPLIT`` parts, each read the same way; a refused run of at most ``_MIN_RUN`` messages is refused whole.
    """
    keep = np.ones(len(vals), bool)
    start, named = 0, 0
    while True:
        sel = np.flatnonzero(keep[start:]) + start  # the messages this attempt reads
        if not len(sel):  # the last named one was the last message (or every message was named)
            if start == 0:
                break
            start = 0
            continue
        whole = start == 0 and joined is not None and len(sel) == len(vals)
        try:
            t = _arrow(joined if whole and joined is not None else b"\n".join([vals[i] for i in sel.tolist()]),
                       options)
        except (pa.ArrowException, ValueError) as exc:
            row = _ROW.search(str(exc))
            if row is None or named >= _MAX_NAMED or int(row.group(1)) >= len(sel):
                break
            bad = int(sel[int(row.group(1))])
            keep[bad] = False
            start, named = bad + 1, named + 1
            continue
        if start > 0:  # read on to the end: now all that is kept, at once
            start = 0
            continue
        if t.num_rows == len(sel):
            out.append((t, pos[keep]))
            refused.append(pos[~keep])
            return
        break
    if named:
        refused.append(pos[~keep])
        vals, pos = [v for v, k in zip(vals, keep.tolist()) if k], pos[keep]
    if len(vals) <= _MIN_RUN:
        refused.append(pos)
        return
    step = -(-len(vals) // _SPLIT)
    for lo in range(0, len(vals), step):
        _read(vals[lo:lo + step], pos[lo:lo + step], options, out, refused)


def _ts_numbers(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(microseconds, unusable)`` for epoch seconds, as ``int(round(float(v) * 1e6))`` does one by one."""
    with np.errstate(invalid="ignore", over="ignore"):
        us = np.rint(x * 1e6)
        care = ~np.isfinite(us) | (us >= 2.0 ** 63) | (us < -(2.0 ** 63))
    return np.where(care, 0.0, us).astype(np.int64), care


def _days(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's ``days_from_civil``)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _ts_iso(parts: pa.StructArray) -> tuple[np.ndarray, np.ndarray]:
    """``(microseconds, unusable)`` for matched ISO-8601 strings, as ``_parse_ts`` does one by one: the
    datetime's exact microseconds ``n`` (naive is UTC), then ``round(n / 10**6 * 1e6)`` in doubles."""
    def num(name: str) -> np.ndarray:
        return pc.cast(parts.field(name), pa.int64()).to_numpy(zero_copy_only=False)

    y, mo, d, h, mi, s = (num(k) for k in ("y", "mo", "d", "h", "mi", "s"))
    frac = pc.cast(pc.utf8_rpad(parts.field("f"), 6, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    z = pc.if_else(pc.equal(pc.utf8_length(parts.field("z")), 6), parts.field("z"), "+00:00")
    sign = np.where(pc.starts_with(z, "-").to_numpy(zero_copy_only=False), -1, 1)
    oh = pc.cast(pc.utf8_slice_codeunits(z, 1, 3), pa.int64()).to_numpy(zero_copy_only=False)
    om = pc.cast(pc.utf8_slice_codeunits(z, 4, 6), pa.int64()).to_numpy(zero_copy_only=False)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    mdays = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(mo - 1, 0, 11)] + (leap & (mo == 2))
    care = ((y < 1) | (mo < 1) | (mo > 12) | (d < 1) | (d > mdays) | (h > 23) | (mi > 59) | (s > 59)
            | (oh > 23) | (om > 59))
    n = ((_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - sign * (oh * 3600 + om * 60)) * 1_000_000 + frac)
    care |= np.abs(n) > _EXACT
    us = np.rint(n.astype(np.float64) / 1e6 * 1e6)
    return np.where(care, 0.0, us).astype(np.int64), care


def _ts_text(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(microseconds, unusable)`` for ``ts`` strings: ISO-8601 with ``Z``, ``±HH:MM`` or none (UTC) and up to
    six fraction digits, or a plain decimal number of seconds; any other string is left to ``_parse_ts``."""
    n = len(col)
    us = np.zeros(n, np.int64)
    care = np.ones(n, bool)
    iso = pc.extract_regex(col, _ISO)
    hit = iso.is_valid().to_numpy(zero_copy_only=False)
    if hit.any():
        v, c = _ts_iso(iso.filter(hit))
        us[hit], care[hit] = v, c
    number = pc.and_(pc.match_substring_regex(col, _NUMBER), pc.invert(pc.match_substring_regex(col, _BASIC_DATE)))
    number = pc.fill_null(number, False).to_numpy(zero_copy_only=False) & ~hit
    if number.any():
        v, c = _ts_numbers(pc.cast(col.filter(number), pa.float64()).to_numpy(zero_copy_only=False))
        us[number], care[number] = v, c
    return us, care


def _fast_rows(values: list, kind: str) -> tuple[pa.Table, np.ndarray, np.ndarray] | None:
    """``(table of the rows read exactly by Arrow, their positions, positions left to the per-message path)``,
    or None when no message qualifies."""
    n = len(values)
    try:
        lens = np.fromiter(map(len, values), np.int64, n)
    except TypeError:  # a None value: read as empty, so screened out
        values = [b"" if v is None else v for v in values]
        lens = np.fromiter(map(len, values), np.int64, n)
    joined = b"\n".join(values)
    ok = _screen(values, joined, lens)
    all_ok = bool(ok.all())
    pos = np.arange(n) if all_ok else np.flatnonzero(ok)
    if not len(pos):
        return None
    vals = values if all_ok else [values[i] for i in pos.tolist()]
    first = vals[0]
    k = first.find(b'"ts"')
    ts_kind = "text" if k >= 0 and first[k + 4:k + 24].lstrip(b" \t:")[:1] == b'"' else "number"
    pieces: list = []
    refused: list = [np.flatnonzero(~ok)] if not all_ok else []
    _read(vals, pos, _OPTIONS[(kind, ts_kind)], pieces, refused, joined if all_ok else None)
    if not pieces:
        return None
    t = pa.concat_tables([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
    got = np.concatenate([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
    ts = t.column("ts").combine_chunks()
    if ts_kind == "number":
        ts_us, care = _ts_numbers(ts.to_numpy(zero_copy_only=False))
    else:
        ts_us, care = _ts_text(ts)
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    care |= _required_missing(t, schema)
    keep = ~care
    if not keep.all():
        refused.append(got[care])
        t, got, ts_us = t.filter(pa.array(keep)), got[keep], ts_us[keep]
    t = _finish(t, ts_us, schema)
    if "proto" in t.column_names:
        t = t.set_column(t.schema.get_field_index("proto"), schema.field("proto"), pc.utf8_lower(t.column("proto")))
    slow = np.sort(np.concatenate(refused)) if refused else np.empty(0, np.int64)
    return t, got, slow


__all__ = ["decode_json_batch", "parse_json_message", "records_batch"]

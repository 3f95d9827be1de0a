"""JSON lines with canonical field names, and ``records_to_batch`` for streaming sources (Kafka).

Each line is one JSON object using the names of ``FLOW_SCHEMA``/``TX_SCHEMA``.
Unknown fields are ignored and counted (``ReadStats.unknown_fields``). ``ts`` may
be an ISO 8601 string or an epoch number whose unit is inferred from its size
(< 1e11 seconds, < 1e14 milliseconds, < 1e17 microseconds, else nanoseconds).
``label`` may be 0/1/2 or a word (benign, malicious, background, outlier...).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.deadletter import DeadLetter
from ingest.readers.base import (
    FileContext,
    ReadStats,
    RowCheck,
    assemble,
    labels_from_text,
    optional_text,
    parse_float,
    parse_int,
    proto_from_text,
    require_text,
    schema_for,
    text_to_ts,
)
from ingest.readers.sources import InputSpec
from ingest.readers.textcsv import _lines
from ingest.schema import TS_TYPE

_INT32 = {"src_port", "dst_port", "syn_count", "rst_count"}
_INT64 = {"src_bytes", "dst_bytes", "src_pkts", "dst_pkts", "src_ip_bytes", "dst_ip_bytes"}
_FLOAT = {"duration", "entropy", "amount"}
_REQUIRED_TEXT = {"src_ip", "dst_ip", "customer_id", "terminal_id"}


def iter_json_objects(spec: InputSpec, ctx: FileContext) -> Iterator[tuple[list[dict], np.ndarray]]:
    """Parse JSON lines in batches; undecodable or non-object lines are dead-lettered."""
    objs: list[dict] = []
    lines: list[int] = []
    with spec.open() as fh:
        for num, raw in enumerate(_lines(fh), start=1):
            body = raw.strip()
            if not body:
                continue
            try:
                obj = json.loads(body)
            except (ValueError, RecursionError):
                ctx.reject(num, "bad_json", body)
                continue
            if not isinstance(obj, dict):
                ctx.reject(num, "bad_json", body)
                continue
            objs.append(obj)
            lines.append(num)
            if len(objs) >= ctx.batch_size:
                yield objs, np.asarray(lines, dtype=np.int64)
                objs, lines = [], []
    if objs:
        yield objs, np.asarray(lines, dtype=np.int64)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _column_as_text(vals: list) -> pa.Array:
    """One field's values -> string array: Arrow inference + cast when the values are uniform
    scalars (fast), else value by value (mixed types, nested values, huge integers)."""
    try:
        a = pa.array(vals)
        t = a.type
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            raise TypeError("nested")
        if pa.types.is_boolean(t):
            a = pc.cast(a, pa.int8())
        return pc.cast(a, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError, ValueError):
        return pa.array([_text(v) for v in vals], pa.string())


def epoch_guess_ts(f: pa.Array, check: RowCheck) -> pa.Array:
    """Epoch numbers of unknown unit -> timestamp[us, UTC] (unit from magnitude)."""
    absf = pc.abs(f)
    scale = pc.if_else(pc.less(absf, 1e11), 1e6,
                       pc.if_else(pc.less(absf, 1e14), 1e3, pc.if_else(pc.less(absf, 1e17), 1.0, 1e-3)))
    us = pc.multiply(f, scale)
    ok = pc.fill_null(pc.and_kleene(pc.is_finite(us), pc.and_kleene(pc.greater_equal(us, 0.0),
                                                         pc.less_equal(us, 4102444800.0 * 1e6))), False)
    check.flag(pc.invert(ok), "bad_ts")
    return pc.cast(pc.round(pc.if_else(ok, us, 0.0)), pa.int64()).cast(TS_TYPE)


def normalise_records(objs: list[dict], kind: str, ctx: FileContext, lines: np.ndarray | None,
                      raws: list[str] | None = None) -> pa.Table:
    """Dicts with canonical names -> canonical table; bad rows dead-lettered, unknown keys counted."""
    schema = schema_for(kind)
    names = [f.name for f in schema if f.name != "row"]
    known = set(names) | {"row"}
    n = len(objs)
    unknown: dict[str, int] = {}
    for o in objs:
        extra = o.keys() - known
        if extra:
            for k in extra:
                unknown[k] = unknown.get(k, 0) + 1
    for k, c in unknown.items():
        ctx.unknown_field(k, c)
    arr = {k: _column_as_text([o.get(k) for o in objs]) for k in names}
    raw_of = (lambda i: raws[i]) if raws is not None else (lambda i: json.dumps(objs[i], default=str))
    return normalise_string_columns(arr, n, kind, ctx, lines, raw_of)


def normalise_string_columns(arr: dict[str, pa.Array], n: int, kind: str, ctx: FileContext,
                             lines: np.ndarray | None, raw_of: Any) -> pa.Table:
    """Canonical field name -> string array (all fields present, null where absent) -> canonical table."""
    names = [f.name for f in schema_for(kind) if f.name != "row"]
    check = RowCheck(n)
    out: dict[str, Any] = {}
    ts_raw = arr["ts"]
    f = parse_float(ts_raw, None, "bad_ts")
    isnum = pc.is_valid(f)
    num_ts = epoch_guess_ts(pc.fill_null(f, 0.0), RowCheck(n))
    ncheck = RowCheck(n)
    epoch_guess_ts(f, ncheck)
    tcheck = RowCheck(n)
    txt_ts = text_to_ts(pc.if_else(isnum, pa.scalar(None, pa.string()), ts_raw), tcheck)
    out["ts"] = pc.if_else(isnum, num_ts, txt_ts)
    check.flag(pc.if_else(isnum, pa.array(ncheck.code != 0), pa.array(tcheck.code != 0)), "bad_ts")
    for k in names:
        if k in ("ts", "label", "attack", "source"):
            continue
        if k in _REQUIRED_TEXT:
            out[k] = require_text(arr[k], check, f"missing_{k}", ("",))
        elif k in _INT32:
            hi = 65535 if k.endswith("port") else None
            out[k] = parse_int(arr[k], check, f"bad_{k}", pa.int32(), 0, hi, ("",))
        elif k in _INT64:
            out[k] = parse_int(arr[k], check, f"bad_{k}", pa.int64(), 0, None, ("",))
        elif k in _FLOAT:
            out[k] = parse_float(arr[k], check, f"bad_{k}", ("",), allow_nonfinite=False)
        elif k == "proto":
            out[k] = proto_from_text(arr[k])
        else:
            out[k] = optional_text(arr[k], ("",))
    if kind == "transactions":
        check.flag(pc.is_null(out["amount"]), "bad_amount")
    lab = arr["label"]
    out["label"] = labels_from_text(lab)
    check.flag(pc.and_kleene(pc.is_valid(lab), pc.is_null(out["label"])), "bad_label")
    att = optional_text(arr["attack"], ("",))
    # an explicit attack name on a row without a label is kept (the label may be unknown)
    out["attack"] = pc.if_else(pc.fill_null(pc.is_in(out["label"], value_set=pa.array([0, 2], pa.int8())), False),
                               pa.scalar(None, pa.string()), att)
    src = optional_text(arr["source"], ("",))
    out["source"] = pc.coalesce(src, pa.scalar(ctx.format, pa.string()))
    if check.any_bad:
        for i, reason in check.bad_rows():
            ctx.reject(None if lines is None else int(lines[i]), reason, raw_of(i))
    table = assemble(kind, out, n, ctx.format)
    if check.any_bad:
        table = table.filter(pa.array(check.good()))
    return table


def records_to_batch(records: list[dict], kind: str = "flows", dead_letter: DeadLetter | None = None,
                     source: str = "records", row_start: int = 0,
                     stats: ReadStats | None = None) -> pa.RecordBatch:
    """Normalise dicts that use canonical field names (e.g. JSON Kafka messages) into one batch.

    Bad records go to ``dead_letter`` (reason, raw JSON; ``line`` is the index in ``records``);
    ``row`` numbers the good records from ``row_start``. ``stats`` (optional) accumulates counts.
    """
    dl = dead_letter if dead_letter is not None else DeadLetter(None)
    st = stats if stats is not None else ReadStats()
    ctx = FileContext(source, "records", kind, dl, st)
    ctx.format = source if source != "records" else "records"
    objs, idx = [], []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            objs.append(r)
            idx.append(i)
        else:
            ctx.reject(i, "bad_record", r if isinstance(r, (str, bytes)) else repr(r))
    table = normalise_records(objs, kind, ctx, np.asarray(idx, dtype=np.int64))
    rows = pa.array(np.arange(row_start, row_start + table.num_rows, dtype=np.int64))
    table = table.set_column(0, schema_for(kind).field("row"), rows)
    st.rows_ok += table.num_rows
    ctx.file_stats.rows_ok += table.num_rows
    batches = table.combine_chunks().to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=schema_for(kind))
    return batches[0]


class CanonicalJSONL:
    name = "jsonl"
    kind = "flows"  # or transactions, decided per file from its keys
    description = "JSON lines with canonical field names (flows or transactions); unknown fields counted"

    def __init__(self, kind: str = "flows") -> None:
        self.kind = kind

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        for chunk, lines in _line_chunks(spec, ctx.batch_size):
            table = _fast_chunk(chunk, lines, ctx)
            if table is None:  # some line is not a plain JSON object of scalars: record by record
                objs, keep = [], []
                for raw, num in zip(chunk, lines):
                    try:
                        obj = json.loads(raw)
                    except (ValueError, RecursionError):
                        ctx.reject(int(num), "bad_json", raw)
                        continue
                    if not isinstance(obj, dict):
                        ctx.reject(int(num), "bad_json", raw)
                        continue
                    objs.append(obj)
                    keep.append(num)
                table = normalise_records(objs, ctx.kind, ctx, np.asarray(keep, dtype=np.int64))
            yield table


def _line_chunks(spec: InputSpec, size: int) -> Iterator[tuple[list[bytes], np.ndarray]]:
    """Non-blank lines (bytes) with their 1-based line numbers, ``size`` at a time."""
    chunk: list[bytes] = []
    nums: list[int] = []
    with spec.open() as fh:
        for num, raw in enumerate(_lines(fh), start=1):
            body = raw.strip()
            if not body:
                continue
            chunk.append(body)
            nums.append(num)
            if len(chunk) >= size:
                yield chunk, np.asarray(nums, dtype=np.int64)
                chunk, nums = [], []
    if chunk:
        yield chunk, np.asarray(nums, dtype=np.int64)


def _fast_chunk(chunk: list[bytes], lines: np.ndarray, ctx: FileContext) -> pa.Table | None:
    """pyarrow.json on a whole chunk; None when it cannot (bad line, nested or mixed-type field)."""
    import io

    import pyarrow.json as pajson
    # pyarrow.json crashes (segfault, pyarrow 26) on a top-level `null` and rejects non-objects:
    # only chunks whose every line looks like one object go to it
    if not all(c[:1] == b"{" and c[-1:] == b"}" for c in chunk):
        return None
    try:
        t = pajson.read_json(io.BytesIO(b"\n".join(chunk)),
                             read_options=pajson.ReadOptions(use_threads=False, block_size=1 << 26))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if t.num_rows != len(chunk):
        return None
    names = [f.name for f in schema_for(ctx.kind) if f.name != "row"]
    arr: dict[str, pa.Array] = {}
    for k in t.column_names:
        col = t.column(k)
        if k not in names:
            if k != "row":
                cnt = len(col) - col.null_count
                if cnt:
                    ctx.unknown_field(k, cnt)
            continue
        typ = col.type
        if pa.types.is_nested(typ) or pa.types.is_binary(typ):
            return None
        if pa.types.is_boolean(typ):
            col = pc.cast(col, pa.int8())
        elif pa.types.is_floating(typ) and k == "ts":
            # full precision: the string cast of a float keeps every digit
            pass
        try:
            arr[k] = pc.cast(col, pa.string()).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    n = t.num_rows
    for k in names:
        if k not in arr:
            arr[k] = pa.nulls(n, pa.string())
    return normalise_string_columns(arr, n, ctx.kind, ctx, lines,
                                    lambda i: chunk[i].decode("utf-8", errors="backslashreplace"))

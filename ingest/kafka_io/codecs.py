"""Kafka message codecs: JSON-per-record and Arrow IPC messages to one canonical table, bad messages to the
dead-letter sink with a reason (never an exception)."""
from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform

log = logging.getLogger("ingest.kafka_io")


ARROW_MAGIC = b"\xff\xff\xff\xff"
FORMATS = ("json", "arrow", "auto")
# Keys of a config mapping that kafka-python accepts for security; passed through unchanged.
SECURITY_KEYS = (
    "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "sasl_kerberos_service_name", "sasl_oauth_token_provider", "ssl_cafile", "ssl_certfile",
    "ssl_keyfile", "ssl_password", "ssl_check_hostname", "ssl_crlfile",
)


# --------------------------------------------------------------------------------------------
# codecs


def _ts_seconds(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, (int, float)):
        return float(v)
    return None


def table_to_json_messages(table: pa.Table) -> list[bytes]:
    """One JSON object per row; ``ts`` becomes epoch seconds (float), like Zeek's Kafka writer."""
    out = []
    cols = table.column_names
    ts_idx = cols.index("ts") if "ts" in cols else -1
    ts_vals = None
    if ts_idx >= 0:
        ts_vals = (table.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6).tolist()
    pylists = {c: table.column(c).to_pylist() for c in cols if c != "ts"}
    for i in range(table.num_rows):
        rec = {c: pylists[c][i] for c in pylists if pylists[c][i] is not None}
        if ts_vals is not None:
            rec["ts"] = ts_vals[i]
        out.append(json.dumps(rec, separators=(",", ":")).encode())
    return out


def encode_arrow(table: pa.Table | pa.RecordBatch) -> bytes:
    """One Arrow IPC stream (schema + batches) as bytes."""
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as w:
        if isinstance(table, pa.RecordBatch):
            w.write_batch(table)
        else:
            w.write_table(table)
    return sink.getvalue()


def decode_arrow(raw: bytes) -> pa.Table:
    """Inverse of :func:`encode_arrow`; raises on anything that is not an Arrow IPC stream."""
    with ipc.open_stream(pa.py_buffer(raw)) as r:
        return r.read_all()


def sniff_message(raw: bytes | None) -> str:
    """``"arrow"``, ``"json"`` or ``"unknown"`` for one message value."""
    if not raw:
        return "unknown"
    if raw[:4] == ARROW_MAGIC:
        return "arrow"
    head = raw[:64].lstrip()
    if head[:1] == b"{":
        return "json"
    return "unknown"


def _parse_ts(v: Any) -> int | None:
    """Microseconds since the epoch from seconds (number) or an ISO-8601 string; None if unusable."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            return None
        return int(round(float(v) * 1e6))
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            try:
                return int(round(float(v) * 1e6))
            except ValueError:
                return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return int(round(d.timestamp() * 1e6))
    return None


def normalise_records(records: list[dict], kind: str, dead_letter: Any = None, source: str = "kafka") -> pa.Table:
    """Dicts with canonical field names -> a canonical table (``row`` = the record's own ``row`` or -1).

    Records missing a required field, with an unusable ``ts`` or a value of the wrong type go to
    ``dead_letter`` (``.add(source, line, reason, raw)``) and are left out. This is the daemon's own
    normaliser; the readers' ``records_to_batch`` is preferred when present (:func:`records_to_table`).
    """
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    required = [f.name for f in schema if not f.nullable and f.name != "row"]
    cols: dict[str, list] = {f.name: [] for f in schema}
    for i, rec in enumerate(records):
        reason = None
        if not isinstance(rec, dict):
            reason = "not_an_object"
        else:
            for name in required:
                if rec.get(name) in (None, ""):
                    reason = f"missing_{name}"
                    break
        ts = None
        if reason is None:
            ts = _parse_ts(rec.get("ts"))
            if ts is None:
                reason = "bad_ts"
        if reason is None:
            row_vals = {}
            for f in schema:
                if f.name == "ts":
                    row_vals["ts"] = ts
                    continue
                v = rec.get(f.name)
                if f.name == "row":
                    v = v if isinstance(v, int) and not isinstance(v, bool) else -1
                elif v is not None:
                    try:
                        if pa.types.is_integer(f.type):
                            if isinstance(v, bool):
                                raise TypeError
                            v = int(v)
                        elif pa.types.is_floating(f.type):
                            v = float(v)
                        elif pa.types.is_string(f.type):
                            v = str(v)
                    except (TypeError, ValueError):
                        reason = f"bad_{f.name}"
                        break
                row_vals[f.name] = v
        if reason is not None:
            if dead_letter is not None:
                dead_letter.add(source, i, reason, json.dumps(rec, default=str)[:4096])
            continue
        for k, v in row_vals.items():
            cols[k].append(v)
    arrays = []
    for f in schema:
        if f.name == "ts":
            arrays.append(pa.array(cols["ts"], pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_schema(schema: pa.Schema) -> pa.Schema:
    """The canonical schema with ``ts`` as float seconds (how JSON carries it), all nullable."""
    return pa.schema([pa.field(f.name, pa.float64() if f.name == "ts" else f.type) for f in schema])


def _fast_table(records: list[dict], kind: str) -> pa.Table | None:
    """Columnar conversion in Arrow's C++ (``from_pylist``) for well-formed records; None if any
    record needs the careful per-record path (a wrong type, a string timestamp, a missing field)."""
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    try:
        t = pa.Table.from_pylist(records, schema=_json_schema(schema))
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return _finish_fast(t, schema)


def _fast_json_bytes(values: list[bytes], kind: str) -> pa.Table | None:
    """Parse many one-line JSON messages at once with Arrow's JSON reader (C++); None -> slow path."""
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    if any(b"\n" in v for v in values):
        return None
    import pyarrow.json as pajson

    try:
        t = pajson.read_json(
            io.BytesIO(b"\n".join(values)),
            read_options=pajson.ReadOptions(block_size=max(1 << 20, 2 * sum(map(len, values)))),
            parse_options=pajson.ParseOptions(explicit_schema=_json_schema(schema), unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowException, ValueError, TypeError):
        return None
    if t.num_rows != len(values):
        return None
    return _finish_fast(t, schema)


def _finish_fast(t: pa.Table, schema: pa.Schema) -> pa.Table | None:
    for f in schema:
        if not f.nullable and f.name != "row" and t.column(f.name).null_count:
            return None
    ts = t.column("ts")
    if ts.null_count or not pc.all(pc.is_finite(ts)).as_py():
        return None
    row = t.column("row")
    if row.null_count:
        row = pc.fill_null(row, -1)
    cols = []
    for f in schema:
        if f.name == "ts":
            cols.append(pc.cast(pc.round(pc.multiply(ts, 1e6)), pa.int64()).cast(f.type))
        elif f.name == "row":
            cols.append(row.cast(pa.int64()))
        elif f.name == "proto":
            cols.append(pc.utf8_lower(t.column("proto")))
        else:
            cols.append(t.column(f.name))
    return pa.Table.from_arrays(cols, schema=schema)


def records_to_table(records: list[dict], kind: str, dead_letter: Any = None) -> pa.Table:
    """Canonical table from JSON records, keeping each record's own ``row`` (-1 when absent).

    Fast path: all records well-formed -> one columnar conversion. Otherwise each record is
    checked on its own and the bad ones are dead-lettered with a reason (missing_<field>,
    bad_ts, bad_<field>).
    """
    fast = _fast_table(records, kind)
    if fast is not None:
        return fast
    return normalise_records(records, kind, dead_letter)


@dataclass
class Decoded:
    """What one poll's messages of one partition decode to."""

    table: pa.Table
    malformed: dict[str, int] = field(default_factory=dict)


def decode_messages(
    values: Iterable[bytes | None], fmt: str, kind: str, dead_letter: Any = None, source: str = "kafka",
) -> Decoded:
    """Decode message values (JSON-per-record and/or Arrow IPC) into one canonical table.

    Undecodable messages are dead-lettered with a reason (``bad_json``, ``bad_arrow``,
    ``unknown_format``, ``schema``) and counted; they never raise.
    """
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    malformed: dict[str, int] = {}
    json_recs: list[dict] = []
    tables: list[pa.Table] = []

    class _Counting:
        # Count record-level rejects from the normaliser too, then forward to the real sink.
        def add(self, src: str, line: Any, reason: str, raw: Any) -> None:
            malformed[reason] = malformed.get(reason, 0) + 1
            if dead_letter is not None:
                dead_letter.add(src, line, reason, raw)

    counting = _Counting()
    values = list(values)
    if fmt in ("json", "auto") and values and all(v is not None and v[:1] == b"{" for v in values):
        fast = _fast_json_bytes(values, kind)   # the common case: a poll of well-formed JSON records
        if fast is not None:
            return Decoded(fast, malformed)
    for i, raw in enumerate(values):
        kindm = sniff_message(raw) if fmt == "auto" else fmt
        if kindm == "json":
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                json_recs.append(rec)
            except (ValueError, UnicodeDecodeError, TypeError):
                counting.add(source, i, "bad_json", _raw_text(raw))
        elif kindm == "arrow":
            try:
                t = decode_arrow(raw)
                t = conform(t, schema) if "row" in t.column_names else _conform_norow(t, schema)
                tables.append(t)
            except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
                counting.add(source, i, "bad_arrow", f"{type(exc).__name__}: {exc}"[:512])
        else:
            counting.add(source, i, "unknown_format", _raw_text(raw))
    if json_recs:
        tables.append(records_to_table(json_recs, kind, counting))
    if not tables:
        return Decoded(schema.empty_table(), malformed)
    tables = [_as_schema(t, schema) for t in tables]
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return Decoded(t, malformed)


def _as_schema(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """Same columns, exactly ``schema`` (nullability/metadata differ between producers of tables)."""
    if t.schema.equals(schema):
        return t
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in schema], schema=schema)


def _conform_norow(t: pa.Table, schema: pa.Schema) -> pa.Table:
    t = t.append_column("row", pa.array(np.full(t.num_rows, -1, dtype=np.int64)))
    return conform(t, schema)


def _raw_text(raw: bytes | None) -> str:
    if raw is None:
        return ""
    return raw[:4096].decode("utf-8", "replace")

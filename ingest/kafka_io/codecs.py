"""The message formats on a flow topic: JSON per record and Arrow IPC streams (encode, decode, tell apart),
and the per-record normaliser that judges one JSON record (a reason for each bad one)."""
from __future__ import annotations

import io
import json
import logging
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
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


#: microseconds an int64 timestamp column holds: a ``ts`` beyond is unusable, not an overflow
_MAX_US = float(2**63 - 1)


def _parse_ts(v: Any) -> int | None:
    """Microseconds since the epoch from seconds (number) or an ISO-8601 string; None if unusable."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        try:
            us = float(v) * 1e6
        except OverflowError:  # an integer beyond a float
            return None
        return int(round(us)) if math.isfinite(us) and abs(us) < _MAX_US else None
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            try:
                us = float(v) * 1e6
            except ValueError:
                return None
            return int(round(us)) if math.isfinite(us) and abs(us) < _MAX_US else None
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

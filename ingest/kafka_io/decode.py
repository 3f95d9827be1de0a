"""Decoding one poll's messages of one partition: JSON-per-record and Arrow IPC messages to one canonical
table; bad messages dead-lettered with a reason, never an exception."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.kafka_io.codecs import _as_schema, _conform_norow, _raw_text, decode_arrow, sniff_message
from ingest.kafka_io.json_batch import decode_json_batch, records_batch
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform


def records_to_table(records: list[dict], kind: str, dead_letter: Any = None) -> pa.Table:
    """Canonical table from JSON records, keeping each record's own ``row`` (-1 when absent).

    Columnar in Arrow's C++ where records are well-formed; a record that is not is checked on its own
    and, when bad, dead-lettered with a reason (missing_<field>, bad_ts, bad_<field>); its neighbours
    are kept (:mod:`ingest.kafka_io.json_batch`).
    """
    return records_batch(records, list(range(len(records))), kind, dead_letter)[0]


@dataclass
class Decoded:
    """What one poll's messages of one partition decode to."""

    table: pa.Table
    malformed: dict[str, int] = field(default_factory=dict)
    #: each row's message (its index in the values decoded); None when a message gave several rows
    msg_index: np.ndarray | None = None


def decode_messages(
    values: Iterable[bytes | None], fmt: str, kind: str, dead_letter: Any = None, source: str = "kafka",
) -> Decoded:
    """Decode message values (JSON-per-record and/or Arrow IPC) into one canonical table.

    Undecodable messages are dead-lettered with a reason (``bad_json``, ``bad_arrow``,
    ``unknown_format``, ``schema``) and counted; they never raise. JSON messages are decoded together
    (:func:`ingest.kafka_io.json_batch.decode_json_batch`), each judged on its own.
    """
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    values = list(values)
    if fmt == "json" or (fmt == "auto" and all(v is not None and v[:1] == b"{" for v in values)):
        t, idx, malformed = decode_json_batch(values, kind, dead_letter, source)  # the common case
        return Decoded(t, malformed, idx)
    malformed: dict[str, int] = {}
    json_vals: list[bytes | None] = []
    json_idx: list[int] = []
    tables: list[pa.Table] = []

    def reject(i: int, reason: str, raw: Any) -> None:
        malformed[reason] = malformed.get(reason, 0) + 1
        if dead_letter is not None:
            dead_letter.add(source, i, reason, raw)

    for i, raw in enumerate(values):
        kindm = sniff_message(raw) if fmt == "auto" else fmt
        if kindm == "json":
            json_vals.append(raw)
            json_idx.append(i)
        elif kindm == "arrow":
            try:
                t = decode_arrow(raw)
                t = conform(t, schema) if "row" in t.column_names else _conform_norow(t, schema)
                tables.append(t)
            except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
                reject(i, "bad_arrow", f"{type(exc).__name__}: {exc}"[:512])
        else:
            reject(i, "unknown_format", _raw_text(raw))
    if json_vals:
        t, _, m = decode_json_batch(json_vals, kind, dead_letter, source, msg_index=json_idx)
        for reason, n in m.items():
            malformed[reason] = malformed.get(reason, 0) + n
        tables.append(t)
    if not tables:
        return Decoded(schema.empty_table(), malformed)
    tables = [_as_schema(t, schema) for t in tables]
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return Decoded(t, malformed)

"""Reading transaction inputs into TX_SCHEMA tables, and cutting them into windows.

Inputs go through :func:`ingest.readers.open_inputs` when it reads them as transactions;
otherwise (Fraud Detection Handbook parquet/csv, or ``TX_SCHEMA`` columns) a small adapter
below converts them to ``TX_SCHEMA``. Windows are a tumbling split of the time-sorted
table (:func:`tumbling`, the same shape as :class:`ingest.windows.Window`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.fraud.graph import ts_seconds
from ingest.schema import TX_SCHEMA, conform

log = logging.getLogger(__name__)

FDH_COLUMNS = {"TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"}


def fdh_to_tx(table: pa.Table, row_offset: int = 0) -> pa.Table:
    """Fraud Detection Handbook columns -> TX_SCHEMA (labels: TX_FRAUD, attack: scenario-N)."""
    n = table.num_rows
    ts = table.column("TX_DATETIME")
    if pa.types.is_timestamp(ts.type):
        tz = ts.type.tz
        ts = ts.cast(pa.timestamp("us", tz=tz)) if tz else pc.assume_timezone(ts.cast(pa.timestamp("us")), "UTC")
    else:
        ts = pc.assume_timezone(pc.strptime(ts.cast(pa.string()), "%Y-%m-%d %H:%M:%S", "us"), "UTC")
    fraud = table.column("TX_FRAUD").cast(pa.int8())
    if "TX_FRAUD_SCENARIO" in table.column_names:
        sc = table.column("TX_FRAUD_SCENARIO").cast(pa.int64())
        attack = pc.if_else(pc.greater(sc, 0), pc.binary_join_element_wise("scenario-", sc.cast(pa.string()), ""),
                            pa.scalar(None, pa.string()))
    else:
        attack = pa.nulls(n, pa.string())
    out = pa.table({
        "row": pa.array(np.arange(row_offset, row_offset + n, dtype=np.int64)),
        "tx_id": table.column("TRANSACTION_ID").cast(pa.string()),
        "ts": ts,
        "customer_id": table.column("CUSTOMER_ID").cast(pa.string()),
        "terminal_id": table.column("TERMINAL_ID").cast(pa.string()),
        "amount": table.column("TX_AMOUNT").cast(pa.float64()),
        "label": fraud,
        "attack": attack,
        "source": pa.array(["fdh"] * n, pa.string()) if n < 1 else pa.repeat(pa.scalar("fdh"), n),
    })
    return conform(out, TX_SCHEMA)


def _read_one(path: str, row_offset: int) -> pa.Table:
    if path.endswith((".parquet", ".pq")):
        t = pq.read_table(path)
    elif path.endswith((".csv", ".csv.gz")):
        from pyarrow import csv

        t = csv.read_csv(path)
    else:
        raise ValueError(f"{path}: transaction inputs must be .parquet or .csv (FDH or TX_SCHEMA columns)")
    if FDH_COLUMNS <= set(t.column_names):
        return fdh_to_tx(t, row_offset)
    if {"customer_id", "terminal_id", "amount", "ts"} <= set(t.column_names):
        t = t.drop_columns([c for c in ("row",) if c in t.column_names])
        t = t.append_column("row", pa.array(np.arange(row_offset, row_offset + t.num_rows, dtype=np.int64)))
        return conform(t, TX_SCHEMA)
    raise ValueError(f"{path}: neither Fraud Detection Handbook columns nor TX_SCHEMA columns")


def read_transactions(inputs: list[str]) -> pa.Table:
    """All inputs as one TX_SCHEMA table; ``row`` continuous across inputs in the order given."""
    try:  # prefer the project's readers once they exist and handle transactions
        from ingest.readers import open_inputs  # type: ignore[attr-defined]
    except ImportError:
        open_inputs = None
    if open_inputs is not None:
        try:
            reader = open_inputs(list(inputs), format="auto")
            batches = list(reader)
            if getattr(reader, "kind", None) == "transactions" and batches:
                return conform(pa.Table.from_batches(batches), TX_SCHEMA)
        except Exception as exc:  # fall back to the local adapter, but say so
            log.info("ingest.readers could not read %s (%s); using the FDH adapter", inputs, exc)
    tables, off = [], 0
    for p in inputs:
        t = _read_one(str(p), off)
        off += t.num_rows
        tables.append(t)
    if not tables:
        return TX_SCHEMA.empty_table()
    return pa.concat_tables(tables)


@dataclass
class TxWindow:
    """Same shape as ``ingest.windows.Window``: start/end epoch seconds and the rows."""

    start: float
    end: float
    table: pa.Table


def tumbling(table: pa.Table, window_s: float) -> Iterator[TxWindow]:
    """Split a table into tumbling event-time windows aligned to epoch multiples of ``window_s``.

    Rows are taken in time order within each window and keep their ``row`` ids; a
    table that is not time-sorted is sorted first (every row lands in exactly one window).
    """
    if table.num_rows == 0:
        return
    ts = ts_seconds(table)
    if np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        table = table.take(pa.array(order))
        ts = ts[order]
    wid = np.floor(ts / window_s).astype(np.int64)
    bounds = np.flatnonzero(np.diff(wid)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ts)]])
    for a, b in zip(starts, ends):
        w = int(wid[a])
        yield TxWindow(w * window_s, (w + 1) * window_s, table.slice(int(a), int(b - a)))

"""Parquet and Arrow IPC files already in the canonical flow or transaction schema.

Columns are matched by name; extra columns are ignored and counted in
``ReadStats.unknown_fields``; missing nullable columns become null. Types are
cast when they differ (e.g. ``ts`` stored as ``timestamp[ns]`` or epoch seconds,
labels stored as words). Rows violating the schema (null ``ts``, ``src_ip``...)
are dead-lettered with their record index as ``line``.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ingest.readers.base import FileContext, schema_for
from ingest.readers.jsonl import normalise_records
from ingest.readers.sources import InputSpec
from ingest.schema import is_transactions

FDH_COLUMNS = {"TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"}


def _schema_of(path: str, fmt: str) -> pa.Schema:
    if fmt == "parquet":
        return pq.read_schema(path)
    with pa.memory_map(path) as src:
        try:
            return ipc.open_file(src).schema
        except pa.ArrowInvalid:
            pass
    with pa.memory_map(path) as src:
        return ipc.open_stream(src).schema


def kind_of_file(path: str, fmt: str) -> tuple[str, bool]:
    """(kind, is_fdh) of a Parquet/Arrow file from its schema."""
    schema = _schema_of(path, fmt)
    if FDH_COLUMNS <= set(schema.names):
        return "transactions", True
    return ("transactions" if is_transactions(schema) else "flows"), False


def iter_arrow_batches(path: str, fmt: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    if fmt == "parquet" or fmt == "fdh":
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=batch_size)
        return
    with pa.memory_map(path) as src:
        try:
            rd = ipc.open_file(src)
            for i in range(rd.num_record_batches):
                yield rd.get_batch(i)
            return
        except pa.ArrowInvalid:
            pass
    with pa.memory_map(path) as src:
        yield from ipc.open_stream(src)


def normalise_canonical_batch(batch: pa.RecordBatch, ctx: FileContext, first_index: int) -> pa.Table:
    """A batch that (mostly) uses canonical names -> canonical table, via the record normaliser.

    Fast path: when every present column already has its canonical type and the required
    ones hold no nulls, the batch is conformed without a round trip through Python.
    """
    schema = schema_for(ctx.kind)
    names = set(schema.names)
    for c in batch.schema.names:
        if c not in names:
            ctx.unknown_field(c, batch.num_rows)
    typed = all(batch.schema.field(c).type == schema.field(c).type for c in batch.schema.names if c in names)
    required = [f.name for f in schema if not f.nullable and f.name != "row"]
    if typed and all(c in batch.schema.names and batch.column(c).null_count == 0 for c in required):
        arrays = []
        for f in schema:
            if f.name == "row":
                arrays.append(pa.array(np.zeros(batch.num_rows, np.int64)))
            elif f.name in batch.schema.names:
                arrays.append(batch.column(f.name))
            elif f.name == "source":
                arrays.append(pa.array([ctx.format] * batch.num_rows, pa.string()))
            else:
                arrays.append(pa.nulls(batch.num_rows, f.type))
        return pa.Table.from_arrays(arrays, schema=schema)
    keep = [c for c in batch.schema.names if c in names and c != "row"]
    sub = batch.select(keep)
    if "ts" in keep and pa.types.is_timestamp(sub.schema.field("ts").type):
        # timestamps -> epoch microseconds (naive ones are taken as UTC)
        i = sub.schema.get_field_index("ts")
        us = pc.cast(pc.cast(sub.column(i), pa.timestamp("us", tz=sub.schema.field("ts").type.tz)), pa.int64())
        sub = sub.set_column(i, "ts", us)
    objs = sub.to_pylist()
    lines = np.arange(first_index, first_index + len(objs), dtype=np.int64)
    raws = None
    return normalise_records(objs, ctx.kind, ctx, lines, raws)


class ParquetReader:
    name = "parquet"
    kind = "any"
    description = "Parquet in the canonical schema"
    fmt = "parquet"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        if not spec.plain:
            raise ValueError(f"{spec.name}: {self.fmt} inside an archive or compressed file is not supported")
        index = 0
        for batch in iter_arrow_batches(spec.path, self.fmt, ctx.batch_size):
            yield normalise_canonical_batch(batch, ctx, index)
            index += batch.num_rows


class ArrowIPCReader(ParquetReader):
    name = "arrow"
    description = "Arrow IPC in the canonical schema"
    fmt = "arrow"



"""Canonical Arrow schemas for flows and transactions.

Every reader in :mod:`ingest.readers` yields ``pyarrow.RecordBatch`` objects in
exactly one of these two schemas, whatever the input format. Everything
downstream (windows, graphs, knowledge features, models, the daemon) only ever
sees these columns. The README has the same table for users.

Labels (``label``, ``attack``) travel with the records for evaluation only:
they are never part of a model's feature set (see ``LABEL_COLUMNS``).
"""
from __future__ import annotations

import pyarrow as pa

# Timestamps are event time, UTC, microseconds.
TS_TYPE = pa.timestamp("us", tz="UTC")

# ``label`` values. BACKGROUND keeps LUFlow ``outlier`` and Stratosphere
# ``Background`` apart from benign and malicious instead of merging them.
LABEL_BENIGN = 0
LABEL_MALICIOUS = 1
LABEL_BACKGROUND = 2

FLOW_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),        # 0-based index across the inputs, in input order
        pa.field("uid", pa.string()),                       # source's flow id (Zeek uid, CIC Flow ID), if any
        pa.field("ts", TS_TYPE, nullable=False),            # flow start, event time
        pa.field("duration", pa.float64()),                 # seconds
        pa.field("src_ip", pa.string(), nullable=False),    # originator address (LUFlow: AS number as text)
        pa.field("src_port", pa.int32()),                   # null for port-less protocols
        pa.field("dst_ip", pa.string(), nullable=False),    # responder address
        pa.field("dst_port", pa.int32()),                   # ICMP: type in Zeek convention
        pa.field("proto", pa.string()),                     # lower-case transport: tcp, udp, icmp, icmpv6, other:<n>
        pa.field("service", pa.string()),                   # application protocol (Zeek service / nDPI app), if known
        pa.field("conn_state", pa.string()),                # Zeek conn_state or equivalent, if known
        pa.field("history", pa.string()),                   # Zeek history / TCP flag string, if known
        pa.field("src_bytes", pa.int64()),                  # payload bytes originator -> responder
        pa.field("dst_bytes", pa.int64()),                  # payload bytes responder -> originator
        pa.field("src_pkts", pa.int64()),                   # packets originator -> responder
        pa.field("dst_pkts", pa.int64()),                   # packets responder -> originator
        pa.field("src_ip_bytes", pa.int64()),               # IP-level bytes originator -> responder
        pa.field("dst_ip_bytes", pa.int64()),               # IP-level bytes responder -> originator
        pa.field("syn_count", pa.int32()),                  # TCP SYN flags seen (when the source has them)
        pa.field("rst_count", pa.int32()),                  # TCP RST flags seen
        pa.field("entropy", pa.float64()),                  # payload entropy, bits/byte (LUFlow, nfstream), if known
        pa.field("label", pa.int8()),                       # 0 benign / 1 malicious / 2 background-outlier / null unknown
        pa.field("attack", pa.string()),                    # attack class string as the source names it
        pa.field("source", pa.string()),                    # reader format name, e.g. "zeek", "luflow"
    ]
)

TX_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),        # 0-based index across the inputs
        pa.field("tx_id", pa.string()),                     # transaction id
        pa.field("ts", TS_TYPE, nullable=False),            # transaction time, event time
        pa.field("customer_id", pa.string(), nullable=False),  # card / customer
        pa.field("terminal_id", pa.string(), nullable=False),  # terminal / merchant
        pa.field("amount", pa.float64(), nullable=False),   # in the currency of the source
        pa.field("device_id", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("mcc", pa.string()),                       # merchant category code
        pa.field("label", pa.int8()),                       # 0 genuine / 1 fraud / null unknown
        pa.field("attack", pa.string()),                    # fraud scenario, e.g. "scenario-2"
        pa.field("source", pa.string()),
    ]
)

LABEL_COLUMNS = ("label", "attack")
# Columns that identify a record but are not behaviour: never model features either.
ID_COLUMNS = ("row", "uid", "tx_id", "source")


def empty_table(schema: pa.Schema) -> pa.Table:
    """A zero-row table of ``schema``."""
    return schema.empty_table()


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """Reorder/cast ``table`` to ``schema``; missing nullable columns become nulls.

    Raises ``ValueError`` naming the missing column when a non-nullable column is absent.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            cols.append(col)
        elif field.nullable:
            cols.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"column {field.name!r} is required by the canonical schema but missing")
    return pa.Table.from_arrays(cols, schema=schema)


def is_transactions(schema: pa.Schema) -> bool:
    """True for tables in (or close to) the transaction schema."""
    return "terminal_id" in schema.names and "customer_id" in schema.names

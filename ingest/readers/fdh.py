"""Fraud Detection Handbook transactions (Le Borgne et al., ULB / Worldline simulator).

Columns ``TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT,
TX_TIME_SECONDS, TX_TIME_DAYS, TX_FRAUD, TX_FRAUD_SCENARIO`` (Parquet, or CSV
with that header). ``TX_FRAUD`` -> ``label`` (0 genuine, 1 fraud); scenario N>0 ->
``attack = "scenario-N"`` (1 amount > 220, 2 compromised terminal, 3 compromised
customer). ``TX_DATETIME`` is naive simulator time, taken as UTC.
"""
from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from ingest.readers.base import FileContext
from ingest.readers.mapping import MappedCSV, Mapping
from ingest.readers.sources import InputSpec

FDH_MAPPING = Mapping(
    kind="transactions", name="fdh",
    columns={"tx_id": "TRANSACTION_ID", "ts": "TX_DATETIME", "customer_id": "CUSTOMER_ID",
             "terminal_id": "TERMINAL_ID", "amount": "TX_AMOUNT", "label": "TX_FRAUD",
             "attack": "TX_FRAUD_SCENARIO"},
    ts_unit="iso", label_map={"0": 0, "1": 1}, label_default=None,
    attack_template="scenario-{}", attack_ignore=("0",),
)


class FDHReader:
    name = "fdh"
    kind = "transactions"
    description = "Fraud Detection Handbook transactions"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        yield from MappedCSV(FDH_MAPPING).read(spec, ctx)

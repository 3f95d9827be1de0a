"""CICFlowMeter CSV: CIC-IDS2017 (original and the improved version of Engelen et al.), CSE-CIC-IDS2018.

Column names vary between releases (leading spaces, "Total Fwd Packet" vs
"Tot Fwd Pkts", "Src IP" vs "Source IP"): they are matched case- and
space-insensitively through an alias table. Rate columns may hold ``Infinity``
or ``NaN``; none of them is a canonical field, and numeric fields that are
mapped accept them only where they make sense (a non-finite duration is malformed).

- ``Flow Duration`` is microseconds -> ``duration`` seconds.
- ``Timestamp``: ISO ``2017-07-05 18:12:15.650811`` (improved CIC-IDS2017, UTC) or day-first
  ``02/03/2018 08:47:38`` (CSE-CIC-IDS2018) / ``3/7/2017 8:55`` (original CIC-IDS2017).
  Naive times are taken as UTC; the original CIC-IDS2017 CSVs are in local time (UTC-3)
  and use a 12-hour clock without AM/PM in places - we do not guess: documented weakness.
- ``Label``: ``BENIGN`` -> 0, every other class -> 1 with ``attack`` = the class name as written
  (improved CIC-IDS2017 marks failed attempts as ``<class> - Attempted``: kept as its own class).
- Files without IP columns (most CSE-CIC-IDS2018 day files) cannot become graph edges: every
  row is dead-lettered as ``missing_src_ip`` and the file error says why.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.readers.base import (
    FileContext,
    RowCheck,
    attack_where_malicious,
    finish,
    labels_from_text,
    optional_text,
    parse_float,
    parse_int,
    proto_from_number,
    raw_joiner,
    require_text,
    text_to_ts,
)
from ingest.readers.sources import InputSpec
from ingest.readers.textcsv import dedupe, iter_text, split_line

ALIASES: dict[str, tuple[str, ...]] = {
    "uid": ("flow id",),
    "src_ip": ("src ip", "source ip"),
    "src_port": ("src port", "source port"),
    "dst_ip": ("dst ip", "destination ip"),
    "dst_port": ("dst port", "destination port"),
    "proto": ("protocol",),
    "ts": ("timestamp",),
    "duration_us": ("flow duration",),
    "src_pkts": ("total fwd packet", "total fwd packets", "tot fwd pkts"),
    "dst_pkts": ("total bwd packets", "total backward packets", "tot bwd pkts", "total bwd packet"),
    "src_bytes": ("total length of fwd packet", "total length of fwd packets", "totlen fwd pkts"),
    "dst_bytes": ("total length of bwd packet", "total length of bwd packets", "totlen bwd pkts"),
    "syn_count": ("syn flag count", "syn flag cnt"),
    "rst_count": ("rst flag count", "rst flag cnt"),
    "label": ("label",),
}


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


def resolve_columns(names: list[str]) -> dict[str, str]:
    """Canonical role -> actual (deduplicated) column name."""
    by_key: dict[str, str] = {}
    for n in names:
        by_key.setdefault(_key(n), n)
    out = {}
    for role, keys in ALIASES.items():
        for k in keys:
            if k in by_key:
                out[role] = by_key[k]
                break
    return out


class CICFlowMeterCSV:
    name = "cic"
    kind = "flows"
    description = "CICFlowMeter CSV (CIC-IDS2017/2018)"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        first = spec.head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
        names = dedupe(split_line(first, ",", True))
        roles = resolve_columns(names)
        if "src_ip" not in roles or "dst_ip" not in roles:
            ctx.file_stats.error = "no source/destination IP columns: rows cannot become graph edges"
        for batch, lines in iter_text(spec.open, ctx, names=names, data_start_line=1, delimiter=",",
                                      quoted=False, batch_rows=ctx.batch_size):
            yield normalise_cic(batch, lines, ctx, roles)


def normalise_cic(batch: pa.RecordBatch, lines: np.ndarray | None, ctx: FileContext,
                  roles: dict[str, str]) -> pa.Table:
    n = batch.num_rows

    def col(role: str) -> pa.Array:
        if role in roles:
            return batch.column(batch.schema.get_field_index(roles[role]))
        return pa.nulls(n, pa.string())

    check = RowCheck(n)
    cols = {"ts": text_to_ts(col("ts"), check)}
    cols["uid"] = optional_text(col("uid"))
    cols["src_ip"] = require_text(col("src_ip"), check, "missing_src_ip")
    cols["dst_ip"] = require_text(col("dst_ip"), check, "missing_dst_ip")
    cols["src_port"] = parse_int(col("src_port"), check, "bad_src_port", pa.int32(), 0, 65535)
    cols["dst_port"] = parse_int(col("dst_port"), check, "bad_dst_port", pa.int32(), 0, 65535)
    cols["proto"] = proto_from_number(parse_int(col("proto"), check, "bad_proto", pa.int64(), 0, 255))
    dur = parse_float(col("duration_us"), check, "bad_duration", allow_nonfinite=False)
    check.flag(pc.less(dur, 0.0), "bad_duration")  # negative durations: a known CICFlowMeter bug
    cols["duration"] = pc.divide(dur, 1e6)
    for name in ("src_pkts", "dst_pkts", "src_bytes", "dst_bytes"):
        cols[name] = parse_int(col(name), check, f"bad_{name}", pa.int64(), 0, None)
    for name in ("syn_count", "rst_count"):
        cols[name] = parse_int(col(name), check, f"bad_{name}", pa.int32(), 0, None)
    if "label" in roles:
        lab = col("label")
        cols["label"] = labels_from_text(lab, other=1)
        cols["attack"] = attack_where_malicious(lab, cols["label"])
    return finish(ctx, cols, check, n, raw_joiner(batch, ","), lines)

"""LUFlow CSV (Cisco Joy features from Lancaster University honeypots), plain or one zip per day.

Quirk: ``time_start``/``time_end`` are integers whose first 10 digits are epoch
seconds and whose remaining digits are microseconds written WITHOUT zero padding,
so 11 to 16 digits occur (``159416823142178`` is 1594168231 s + 42178 us).
``src_ip``/``dest_ip`` are autonomous-system numbers (786 = Lancaster), kept as text.
``bytes_in``/``num_pkts_in`` go source -> destination. Labels: benign 0,
malicious 1, outlier 2 (kept apart); LUFlow has no attack classes (``attack`` null).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.readers.base import (
    FileContext,
    RowCheck,
    column,
    finish,
    has_column,
    labels_from_text,
    optional_text,
    parse_float,
    parse_int,
    proto_from_number,
    raw_joiner,
    require_text,
)
from ingest.readers.sources import InputSpec
from ingest.readers.textcsv import iter_text, split_line
from ingest.schema import TS_TYPE

LUFLOW_COLUMNS = ("avg_ipt", "bytes_in", "bytes_out", "dest_ip", "dest_port", "entropy", "num_pkts_out",
                  "num_pkts_in", "proto", "src_ip", "src_port", "time_end", "time_start", "total_entropy",
                  "label", "duration")

_POW10 = np.array([10 ** k for k in range(19)], dtype=np.int64)


def luflow_time_to_us(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LUFlow integer times -> (epoch microseconds, ok mask).

    First 10 digits: seconds; the rest (up to 6 digits): microseconds, not zero-padded.
    Values with fewer than 10 or more than 16 digits are not LUFlow times (ok False).
    """
    v = np.asarray(values, dtype=np.int64)
    ok = v > 0
    safe = np.where(ok, v, 1)
    digits = np.searchsorted(_POW10, safe, side="right")  # number of decimal digits
    ok &= (digits >= 10) & (digits <= 16)
    extra = np.clip(digits - 10, 0, 6)
    div = _POW10[extra]
    sec = safe // div
    us = safe % div
    return np.where(ok, sec * 1_000_000 + us, 0), ok


class LUFlowCSV:
    name = "luflow"
    kind = "flows"
    description = "LUFlow CSV (Cisco Joy), plain or zipped daily files; src/dst are AS numbers"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        first = spec.head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
        names = [h.strip() for h in split_line(first, ",", True)]
        for batch, lines in iter_text(spec.open, ctx, names=names, data_start_line=1, delimiter=",",
                                      quoted=False, batch_rows=ctx.batch_size):
            yield normalise_luflow(batch, lines, ctx)


def normalise_luflow(batch: pa.RecordBatch, lines: np.ndarray | None, ctx: FileContext) -> pa.Table:
    n = batch.num_rows
    check = RowCheck(n)
    def col(name: str) -> pa.Array:
        return column(batch, name)
    t = parse_int(col("time_start"), check, "bad_ts", pa.int64())
    tv = pc.fill_null(t, 0).to_numpy(zero_copy_only=False)
    us, ok = luflow_time_to_us(tv)
    check.flag(~ok, "bad_ts")
    cols = {"ts": pa.array(us, pa.int64()).cast(TS_TYPE)}
    cols["src_ip"] = require_text(col("src_ip"), check, "missing_src_ip")
    cols["dst_ip"] = require_text(col("dest_ip"), check, "missing_dst_ip")
    cols["src_port"] = parse_int(col("src_port"), check, "bad_src_port", pa.int32(), 0, 65535)
    cols["dst_port"] = parse_int(col("dest_port"), check, "bad_dst_port", pa.int32(), 0, 65535)
    proto = parse_int(col("proto"), check, "bad_proto", pa.int64(), 0, 255)
    cols["proto"] = proto_from_number(proto)
    cols["duration"] = parse_float(col("duration"), check, "bad_duration", allow_nonfinite=False)
    check.flag(pc.less(cols["duration"], 0.0), "bad_duration")
    for name, src in (("src_bytes", "bytes_in"), ("dst_bytes", "bytes_out"), ("src_pkts", "num_pkts_in"),
                      ("dst_pkts", "num_pkts_out")):
        cols[name] = parse_int(col(src), check, f"bad_{src}", pa.int64(), 0, None)
    cols["entropy"] = parse_float(col("entropy"), check, "bad_entropy", allow_nonfinite=False)
    if has_column(batch, "label"):
        lab = col("label")
        cols["label"] = labels_from_text(lab)
        check.flag(pc.and_kleene(pc.is_valid(optional_text(lab)), pc.is_null(cols["label"])), "bad_label")
    return finish(ctx, cols, check, n, raw_joiner(batch, ","), lines)

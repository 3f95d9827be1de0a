"""NetFlow CSV as published in the NF-* data sets (Sarhan et al.): v3 with real timestamps.

v3 columns used: ``FLOW_START_MILLISECONDS`` (epoch ms -> ``ts``), ``IPV4_SRC_ADDR``,
``L4_SRC_PORT``, ``IPV4_DST_ADDR``, ``L4_DST_PORT``, ``PROTOCOL`` (IANA number),
``L7_PROTO`` (nDPI id, kept as text in ``service``), ``IN_BYTES``/``OUT_BYTES``
(IP-level bytes -> ``src_ip_bytes``/``dst_ip_bytes``; NetFlow has no payload byte
count, so ``src_bytes``/``dst_bytes`` stay null), ``IN_PKTS``/``OUT_PKTS``,
``TCP_FLAGS`` (cumulative OR -> ``history`` as flag letters ``CEUAPRSF`` order),
``FLOW_DURATION_MILLISECONDS``, ``Label`` (0/1) and ``Attack`` (class; Benign -> null).

v1/v2 files have no flow timestamps. Event-time windows need real time, and
inventing an order would make every temporal result fiction, so such files are
refused with a clear ``ValueError`` when they are opened (decision documented in
README.md (Input readers)).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.readers.base import (
    FileContext,
    RowCheck,
    attack_where_malicious,
    column,
    epoch_to_ts,
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

# TCP flag bits -> letters, highest bit first (CWR ECE URG ACK PSH RST SYN FIN)
_BITS = [(128, "C"), (64, "E"), (32, "U"), (16, "A"), (8, "P"), (4, "R"), (2, "S"), (1, "F")]
FLAG_LETTERS = pa.array(["".join(ch for bit, ch in _BITS if v & bit) for v in range(256)])


def _header(spec: InputSpec) -> list[str]:
    first = spec.head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
    return [h.strip() for h in split_line(first, ",", True)]


def check_header(spec: InputSpec) -> None:
    """Refuse NetFlow files without flow start times (NF-* v1/v2)."""
    names = {h.upper() for h in _header(spec)}
    if "FLOW_START_MILLISECONDS" not in names:
        raise ValueError(
            f"{spec.name}: NetFlow CSV without FLOW_START_MILLISECONDS (an NF-* v1/v2 file?). Event-time "
            "windows need real flow timestamps; use the v3 release of the data set, or a --mapping config "
            "that names a timestamp column")


class NetFlowCSV:
    name = "netflow"
    kind = "flows"
    description = "NetFlow v3 CSV (NF-* data sets)"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        names = _header(spec)
        for batch, lines in iter_text(spec.open, ctx, names=names, data_start_line=1, delimiter=",",
                                      quoted=False, batch_rows=ctx.batch_size):
            yield normalise_netflow(batch, lines, ctx)


def normalise_netflow(batch: pa.RecordBatch, lines: np.ndarray | None, ctx: FileContext) -> pa.Table:
    n = batch.num_rows
    check = RowCheck(n)
    col = lambda *names: column(batch, *names)  # noqa: E731
    start = parse_int(col("FLOW_START_MILLISECONDS"), check, "bad_ts", pa.int64())
    cols = {"ts": epoch_to_ts(start, check, unit="ms")}
    cols["src_ip"] = require_text(col("IPV4_SRC_ADDR", "IPV6_SRC_ADDR"), check, "missing_src_ip")
    cols["dst_ip"] = require_text(col("IPV4_DST_ADDR", "IPV6_DST_ADDR"), check, "missing_dst_ip")
    cols["src_port"] = parse_int(col("L4_SRC_PORT"), check, "bad_src_port", pa.int32(), 0, 65535)
    cols["dst_port"] = parse_int(col("L4_DST_PORT"), check, "bad_dst_port", pa.int32(), 0, 65535)
    cols["proto"] = proto_from_number(parse_int(col("PROTOCOL"), check, "bad_proto", pa.int64(), 0, 255))
    cols["service"] = optional_text(col("L7_PROTO"))
    for name, src in (("src_ip_bytes", "IN_BYTES"), ("dst_ip_bytes", "OUT_BYTES"), ("src_pkts", "IN_PKTS"),
                      ("dst_pkts", "OUT_PKTS")):
        cols[name] = parse_int(col(src), check, f"bad_{src.lower()}", pa.int64(), 0, None)
    flags = parse_int(col("TCP_FLAGS"), check, "bad_tcp_flags", pa.int64(), 0, 255)
    cols["history"] = pc.take(FLAG_LETTERS, flags)
    if has_column(batch, "FLOW_DURATION_MILLISECONDS"):
        d = parse_float(col("FLOW_DURATION_MILLISECONDS"), check, "bad_duration", allow_nonfinite=False)
        check.flag(pc.less(d, 0.0), "bad_duration")
        cols["duration"] = pc.divide(d, 1000.0)
    elif has_column(batch, "FLOW_END_MILLISECONDS"):
        end = parse_int(col("FLOW_END_MILLISECONDS"), check, "bad_duration", pa.int64())
        cols["duration"] = pc.divide(pc.cast(pc.subtract(end, start), pa.float64()), 1000.0)
    if has_column(batch, "Label"):
        lab = col("Label")
        cols["label"] = labels_from_text(lab)
        check.flag(pc.and_kleene(pc.is_valid(optional_text(lab)), pc.is_null(cols["label"])), "bad_label")
        if has_column(batch, "Attack"):
            cols["attack"] = attack_where_malicious(col("Attack"), cols["label"])
    return finish(ctx, cols, check, n, raw_joiner(batch, ","), lines)

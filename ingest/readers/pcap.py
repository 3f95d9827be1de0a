"""pcap / pcapng captures -> bidirectional flows with nfstream (nDPI), offline.

nfstream runs with one metering process (``n_meters=1``: our machines have 2
cores), tunnel decoding on (GRE, VXLAN, GTP, CAPWAP...), payload accounting
(``accounting_mode=3``: ``src_bytes``/``dst_bytes`` are payload bytes as in Zeek)
and nDPI dissection of the first packets for ``service`` (nDPI application name).
Field mapping: ``bidirectional_first_seen_ms`` -> ``ts``; ``bidirectional_duration_ms``
-> ``duration``; ``src2dst_*``/``dst2src_*`` packets and bytes; TCP ``syn``/``rst``
packet counts -> ``syn_count``/``rst_count``; ``uid`` = "<file stem>#<nfstream id>".
Packet captures carry no labels (``label``/``attack`` null).

Robustness: truncated, malformed, fragmented and tunnelled captures must never
crash a read. nfstream skips packets it cannot decode (not counted: it gives no
count); a capture it refuses (exception) is dead-lettered as ``pcap_error`` and
one that yields no IP flow at all as ``pcap_no_flows`` (one entry per file, with
the error text). nfstream emits flows when they expire; they are sorted by ``ts`` within
buffers of ``SORT_BUFFER`` flows (all of a capture with fewer flows).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.readers.base import (
    FileContext,
    RowCheck,
    epoch_to_ts,
    finish,
    parse_int,
    proto_from_number,
    require_text,
)
from ingest.readers.sources import InputSpec

log = logging.getLogger("ingest.readers")

#: nfstream emits a flow when it expires (up to the active timeout after it started); flows are
#: buffered this many at a time and sorted by start time so event-time windows see them in order.
SORT_BUFFER = 262144

_FIELDS = ("id", "bidirectional_first_seen_ms", "bidirectional_duration_ms", "src_ip", "src_port", "dst_ip",
           "dst_port", "protocol", "src2dst_packets", "dst2src_packets", "src2dst_bytes", "dst2src_bytes",
           "bidirectional_syn_packets", "bidirectional_rst_packets", "application_name")


def make_streamer(path: str):
    """An NFStreamer configured for offline reading on small machines."""
    from nfstream import NFStreamer
    return NFStreamer(source=path, decode_tunnels=True, bpf_filter=None, promiscuous_mode=False,
                      snapshot_length=1536, idle_timeout=120, active_timeout=1800, accounting_mode=3,
                      udps=None, n_dissections=20, statistical_analysis=True, splt_analysis=0,
                      n_meters=1, performance_report=0)


class PcapReader:
    name = "pcap"
    kind = "flows"
    description = "pcap/pcapng -> flows via nfstream"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        if not spec.plain:
            ctx.reject(None, "pcap_error", "compressed or archived captures are not supported: decompress first")
            ctx.file_stats.error = "compressed capture"
            return
        stem = os.path.splitext(os.path.basename(spec.path))[0]
        cols: dict[str, list] = {k: [] for k in _FIELDS}
        produced = 0
        try:
            streamer = make_streamer(spec.path)
            for flow in streamer:
                for k in _FIELDS:
                    cols[k].append(getattr(flow, k, None))
                if len(cols["id"]) >= max(ctx.batch_size, SORT_BUFFER):
                    produced += len(cols["id"])
                    yield _to_table(cols, stem, ctx)
                    cols = {k: [] for k in _FIELDS}
        except Exception as exc:  # noqa: BLE001 - nfstream raises assorted errors on broken captures
            msg = f"{type(exc).__name__}: {exc}"
            log.warning("nfstream could not read %s: %s", spec.name, msg)
            ctx.reject(None, "pcap_error", msg)
            ctx.file_stats.error = msg
        if cols["id"]:
            produced += len(cols["id"])
            yield _to_table(cols, stem, ctx)
        if produced == 0 and ctx.file_stats.error is None:
            ctx.reject(None, "pcap_no_flows", "nfstream found no IP flow in this capture")
            ctx.file_stats.error = "no IP flows"


def _to_table(cols: dict[str, list], stem: str, ctx: FileContext) -> pa.Table:
    n = len(cols["id"])
    check = RowCheck(n)
    arr = {k: pa.array(v) if any(x is not None for x in v) else pa.nulls(n) for k, v in cols.items()}
    first = parse_int(pc.cast(arr["bidirectional_first_seen_ms"], pa.int64()), check, "bad_ts")
    out = {"ts": epoch_to_ts(first, check, unit="ms")}
    out["duration"] = pc.divide(pc.cast(arr["bidirectional_duration_ms"], pa.float64()), 1000.0)
    out["src_ip"] = require_text(arr["src_ip"], check, "missing_src_ip", ("",))
    out["dst_ip"] = require_text(arr["dst_ip"], check, "missing_dst_ip", ("",))
    out["src_port"] = parse_int(pc.cast(arr["src_port"], pa.int64()), check, "bad_src_port", pa.int32(), 0, 65535)
    out["dst_port"] = parse_int(pc.cast(arr["dst_port"], pa.int64()), check, "bad_dst_port", pa.int32(), 0, 65535)
    out["proto"] = proto_from_number(pc.cast(arr["protocol"], pa.int64()))
    app = pc.cast(arr["application_name"], pa.string())
    out["service"] = pc.if_else(pc.fill_null(pc.equal(app, "Unknown"), False), pa.scalar(None, pa.string()), app)
    for name, src in (("src_pkts", "src2dst_packets"), ("dst_pkts", "dst2src_packets"),
                      ("src_bytes", "src2dst_bytes"), ("dst_bytes", "dst2src_bytes")):
        out[name] = pc.cast(arr[src], pa.int64())
    out["syn_count"] = pc.cast(arr["bidirectional_syn_packets"], pa.int32())
    out["rst_count"] = pc.cast(arr["bidirectional_rst_packets"], pa.int32())
    out["uid"] = pa.array([f"{stem}#{i}" for i in cols["id"]], pa.string())

    def raw(i: int) -> str:
        return repr({k: cols[k][i] for k in _FIELDS})
    table = finish(ctx, out, check, n, raw, np.asarray(cols["id"], dtype=np.int64))
    order = pc.sort_indices(table, sort_keys=[("ts", "ascending")])  # stable: ties keep nfstream order
    return table.take(order)

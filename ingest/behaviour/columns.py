"""The columns behaviour state needs from a flow batch (FLOW_SCHEMA), as numpy arrays, and the entity
keys of each row, vectorised.

Entity keys are strings (the store's keys): a source host ``src_ip``; a pair ``src_ip|dst_ip``; a
destination service ``dst_ip|port/proto``. Each kind comes as (distinct keys of the batch, key index
per row): string work runs once per distinct key (Arrow joins), never once per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FAILED_STATES", "BatchColumns", "batch_columns", "PROTO_CODES"]

# Zeek conn_state values where the responder never completed a normal exchange: no answer (S0, SH, SHR,
# OTH), refused (REJ), or reset (RSTO, RSTR, RSTOS0, RSTRH). A null state (formats without it) is not a failure.
FAILED_STATES = ("S0", "REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")
# Small protocol code used in a host's port key (port + 65537 * code).
PROTO_CODES = {"tcp": 0, "udp": 1}  # icmp* -> 2, anything else (or null) -> 3


@dataclass
class BatchColumns:
    ts: np.ndarray          # float64 event time, seconds since the epoch
    failed: np.ndarray      # bool
    up: np.ndarray          # float64 src_bytes (null -> 0)
    down: np.ndarray        # float64 dst_bytes (null -> 0)
    port_key: np.ndarray    # int64 (dst_port + 1) + 65537 * proto code
    keys: dict[str, tuple[list[str], np.ndarray]]  # kind -> (distinct keys, index per row)


def _strings(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    return pc.fill_null(col, "")


def _encode(arr: pa.Array) -> tuple[np.ndarray, pa.Array]:
    enc = pc.dictionary_encode(arr)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


def _num(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.float64)
    out = np.asarray(table.column(name).to_numpy(), dtype=np.float64)  # nulls come out as NaN
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _combine(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 combination key per row -> (distinct keys in order of first appearance, index per row): a hash
    pass (Arrow dictionary encoding), no sort."""
    enc = pc.dictionary_encode(pa.array(key, type=pa.int64()))
    return (enc.dictionary.to_numpy(zero_copy_only=False).astype(np.int64),
            enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def batch_columns(table: pa.Table) -> BatchColumns:
    n = table.num_rows
    ts = table.column("ts")
    ts = ts.combine_chunks() if isinstance(ts, pa.ChunkedArray) else ts
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("us", tz=ts.type.tz), safe=False).cast(pa.int64())
    ts = np.asarray(pc.fill_null(ts, 0).to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6

    if "conn_state" in table.column_names:
        sc, sv = _encode(_strings(table, "conn_state"))
        failed = np.isin(np.asarray(sv.to_pylist(), dtype=object), FAILED_STATES)[sc] if len(sv) else \
            np.zeros(n, dtype=bool)
    else:
        failed = np.zeros(n, dtype=bool)

    if "dst_port" in table.column_names:
        port = np.asarray(pc.fill_null(table.column("dst_port"), -1).to_numpy(), dtype=np.int64)
        port = np.clip(port, -1, 65535) + 1
    else:
        port = np.zeros(n, dtype=np.int64)
    if "proto" in table.column_names:
        pcode, pvals = _encode(_strings(table, "proto"))
        lut = np.array([PROTO_CODES.get(v.lower(), 2 if v.lower().startswith("icmp") else 3)
                        for v in pvals.to_pylist()] or [3], dtype=np.int64)
        proto = lut[pcode]
        proto_text = pc.utf8_lower(pvals)
    else:
        pcode = np.zeros(n, dtype=np.int64)
        proto = np.full(n, 3, dtype=np.int64)
        proto_text = pa.array([""])
    port_key = port + 65537 * proto

    src_c, src_v = _encode(_strings(table, "src_ip"))
    dst_c, dst_v = _encode(_strings(table, "dst_ip"))
    keys: dict[str, tuple[list[str], np.ndarray]] = {}
    keys["src"] = (src_v.to_pylist(), src_c)
    # pair: src code x dst code
    n_dst = max(len(dst_v), 1)
    uniq, inv = _combine(src_c * n_dst + dst_c)
    pk = pc.binary_join_element_wise(src_v.take(pa.array(uniq // n_dst)), dst_v.take(pa.array(uniq % n_dst)), "|")
    keys["pair"] = (pk.to_pylist(), inv)
    # service: dst code x port x proto code (the proto text itself, lower-cased)
    n_proto = max(len(proto_text), 1)
    uniq, inv = _combine((dst_c * 65537 + port) * n_proto + pcode)
    u_port = (uniq // n_proto) % 65537
    port_txt = pc.cast(pa.array(u_port - 1), pa.string())
    port_txt = pc.if_else(pc.equal(pa.array(u_port), 0), pa.scalar("-"), port_txt)
    svc = pc.binary_join_element_wise(dst_v.take(pa.array(uniq // n_proto // 65537)), port_txt, "|")
    svc = pc.binary_join_element_wise(svc, proto_text.take(pa.array(uniq % n_proto)), "/")
    keys["svc"] = (svc.to_pylist(), inv)
    return BatchColumns(ts=ts, failed=failed, up=_num(table, "src_bytes"), down=_num(table, "dst_bytes"),
                        port_key=port_key, keys=keys)

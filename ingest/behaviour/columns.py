"""The columns behaviour state needs from a flow batch (FLOW_SCHEMA), as numpy arrays, and the entity
keys of each row, vectorised.

Entity keys are 64-bit hashes (:mod:`ingest.behaviour.hashing`): a source host hashes its ``src_ip``; a
pair mixes the ``src_ip`` and ``dst_ip`` hashes; a destination service mixes the ``dst_ip`` hash with
the port and the lower-cased protocol text. Strings are hashed once per distinct value (Arrow dictionary
encoding), then per row by index. Each kind comes as (distinct key hashes of the batch, index per row).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.behaviour.hashing import hash_strings, mix

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
    keys: dict[str, tuple[np.ndarray, np.ndarray]]  # kind -> (distinct key hashes, index per row)


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


def _distinct(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint64 key hash per row -> (distinct hashes in order of first appearance, index per row): one hash
    pass (Arrow dictionary encoding), no sort."""
    enc = pc.dictionary_encode(pa.array(h, type=pa.uint64()))
    return (enc.dictionary.to_numpy(zero_copy_only=False).astype(np.uint64),
            enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def batch_columns(table: pa.Table, seed: int = 0) -> BatchColumns:
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
    h_src = hash_strings(src_v, seed)[src_c]  # per row, from one hash per distinct address
    h_dst = hash_strings(dst_v, seed)[dst_c]
    h_proto = hash_strings(proto_text, seed)[pcode]
    keys = {"src": _distinct(h_src), "pair": _distinct(mix(h_src, h_dst)),
            "svc": _distinct(mix(h_dst, mix(port.astype(np.uint64), h_proto)))}
    return BatchColumns(ts=ts, failed=failed, up=_num(table, "src_bytes"), down=_num(table, "dst_bytes"),
                        port_key=port_key, keys=keys)

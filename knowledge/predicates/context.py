"""One window's columns and group keys (:class:`WindowContext`), read once and shared by every predicate.

The column readers turn Arrow columns into float arrays (nulls filled) and string columns into
dictionary codes, so per-value work (lower-casing, regexes) runs once per distinct value.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from knowledge.predicates.kernels import _distinct, _group, _port_lut, _rank
from knowledge.predicates.ports import FAILED_STATES, MULTICAST_RE, PRIVATE_RE

__all__ = ["WindowContext"]


def _num(table: pa.Table, name: str, fill: float = 0.0, seg: np.ndarray | None = None,
         n_seg: int = 1) -> np.ndarray:
    """Column as float64; a missing column is all ``fill``.

    Nulls become ``fill``. In a window without nulls a float NaN stays NaN, in a window with nulls it
    becomes ``fill`` too (the historical one-window rule); with ``seg`` (window index per row of
    several concatenated windows) that rule is applied window by window, so each window gets exactly
    what it would get alone.
    """
    if name not in table.column_names:
        return np.full(table.num_rows, fill, dtype=np.float64)
    col = table.column(name)
    # One conversion: ints with nulls come out as float64 with NaN, which we then fill.
    out = np.asarray(col.to_numpy(), dtype=np.float64)
    if col.null_count and not np.isnan(fill):
        nan = np.isnan(out)
        if seg is not None and pa.types.is_floating(col.type):
            # float NaN that is not a null is only filled in windows that hold a null
            nulls = col.is_null()
            nulls = (nulls.combine_chunks() if isinstance(nulls, pa.ChunkedArray) else nulls).to_numpy(
                zero_copy_only=False)
            nan &= (np.bincount(seg[nulls], minlength=n_seg) > 0)[seg]
        out = np.where(nan, fill, out)
    return out


def _dict_regex(table: pa.Table, name: str, *patterns: str) -> tuple[np.ndarray, int, list[np.ndarray]]:
    """(codes, number of distinct values, one row mask per regex) for a high-cardinality string column
    (IP addresses): the regexes run vectorised over the distinct values, then map back by code."""
    arr = table.column(name)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    enc = pc.dictionary_encode(arr, null_encoding="encode")
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    masks = [pc.fill_null(pc.match_substring_regex(enc.dictionary, p), False).to_numpy(zero_copy_only=False)[codes]
             if len(enc.dictionary) else np.zeros(len(codes), dtype=bool) for p in patterns]
    return codes, len(enc.dictionary), masks


def _dict(table: pa.Table, name: str) -> tuple[np.ndarray, list]:
    """(codes per row, distinct values) of a string column; a missing column is all None.

    Per-value work (lower-casing, regexes, set membership) then runs on the few distinct values and is
    mapped back to rows with one index operation, instead of a compute call over every row.
    """
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64), [None]
    arr = table.column(name)
    if len(arr) and arr.null_count == len(arr):  # all null (a source without this field): what encoding gives
        return np.zeros(len(arr), dtype=np.int64), [None]
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    enc = pc.dictionary_encode(arr, null_encoding="encode")
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


def _lookup(codes: np.ndarray, values: list, pred: Callable[[object], bool]) -> np.ndarray:
    """Row mask from a predicate evaluated once per distinct value."""
    if not values:
        return np.zeros(len(codes), dtype=bool)
    return np.array([bool(pred(v)) for v in values], dtype=bool)[codes]


class WindowContext:
    """Columns and group keys of one window, computed once and shared by every predicate.

    ``sizes`` (rows per window) says that ``table`` is several windows concatenated in order: every
    group key then includes the window, and the rate span is per window, so each window's rows get
    exactly the values they would get from a context of that window alone (one call instead of one
    per window: a window holds tens of flows, and the fixed cost per numpy call dominated).
    """

    def __init__(self, table: pa.Table, sizes: np.ndarray | None = None):
        n = table.num_rows
        self.n = n
        self.table = table
        if sizes is not None and len(sizes) > 1:
            sizes = np.asarray(sizes, dtype=np.int64)
            if int(sizes.sum()) != n or (sizes < 0).any():
                raise ValueError(f"window sizes sum to {int(sizes.sum())}, the table has {n} rows")
            self.n_seg = len(sizes)
            self.seg: np.ndarray | None = np.repeat(np.arange(self.n_seg, dtype=np.int64), sizes)
        else:
            self.n_seg, self.seg = 1, None
        seg, ns = self.seg, self.n_seg
        ts = table.column("ts")
        if n and pa.types.is_timestamp(ts.type) and not ts.null_count:
            # the raw int64 ticks of the datetime64 array, as the cast to int64 gives them (no Arrow cast)
            self.ts = np.asarray(ts.to_numpy()).view(np.int64).astype(np.float64) / 1e6
        else:
            ts = ts.cast(pa.int64()) if pa.types.is_timestamp(ts.type) else ts
            self.ts = np.nan_to_num(np.asarray(ts.to_numpy(), dtype=np.float64)) / 1e6
        self.duration = _num(table, "duration", 0.0, seg, ns)
        self.src_bytes = _num(table, "src_bytes", 0.0, seg, ns)
        self.dst_bytes = _num(table, "dst_bytes", 0.0, seg, ns)
        self.src_pkts = _num(table, "src_pkts", 0.0, seg, ns)
        self.dst_pkts = _num(table, "dst_pkts", 0.0, seg, ns)
        # IP-level bytes fall back to payload bytes when the source lacks them.
        sib, dib = _num(table, "src_ip_bytes", np.nan), _num(table, "dst_ip_bytes", np.nan)
        self.src_ip_bytes = np.where(np.isnan(sib), self.src_bytes, sib)
        self.dst_ip_bytes = np.where(np.isnan(dib), self.dst_bytes, dib)
        self.syn = _num(table, "syn_count", np.nan)
        self.rst = _num(table, "rst_count", np.nan)
        self.entropy = _num(table, "entropy", np.nan)
        self.dst_port = _num(table, "dst_port", -1, seg, ns).astype(np.int64)
        self.src_port = _num(table, "src_port", -1, seg, ns).astype(np.int64)
        pcode, pvals = _dict(table, "proto")
        pl = [(v or "").lower() for v in pvals]
        self.tcp = _lookup(pcode, pl, lambda v: v == "tcp")
        self.udp = _lookup(pcode, pl, lambda v: v == "udp")
        self.icmp = _lookup(pcode, pl, lambda v: v.startswith("icmp"))
        scode, svals = _dict(table, "conn_state")
        failed, rej, s0 = set(FAILED_STATES.tolist()), {"REJ", "RSTOS0", "RSTRH"}, {"S0", "SH", "RSTOS0"}
        self.has_state = _lookup(scode, svals, lambda v: v is not None)
        self.failed_state = _lookup(scode, svals, lambda v: v in failed)
        self.rej_state = _lookup(scode, svals, lambda v: v in rej)
        self.s0_state = _lookup(scode, svals, lambda v: v in s0)
        self.svc_code, svc_vals = _dict(table, "service")
        self.svc_values = [(v or "").lower() for v in svc_vals]
        self.src, self.n_src, (self.src_private,) = _dict_regex(table, "src_ip", PRIVATE_RE)
        self.dst, self.n_dst, (self.dst_private, self.dst_multicast) = _dict_regex(table, "dst_ip", PRIVATE_RE,
                                                                                    MULTICAST_RE)
        self.port = self.dst_port + 1  # >= 0, usable as a code
        # Ports ranked among the window's ports (order kept): the same groups and distinct counts as the
        # ports themselves, over a range of tens instead of 65537 (group and distinct tables stay small).
        lo, hi = (int(self.port.min()), int(self.port.max())) if n else (0, 0)
        self.port_code, self.n_port = _rank(self.port, hi) if lo >= 0 and hi <= 65536 else (self.port, hi + 1)
        # Lookup-table indices, clipped once per window (port sets are tested ~20 times per window).
        self._dport_idx = np.clip(self.dst_port, -1, 65535) + 1
        self._sport_idx = np.clip(self.src_port, -1, 65535) + 1
        self._groups: dict[str, tuple[np.ndarray, int]] = {}
        # Window span (s): used to turn counts into rates; at least 1 s so a burst is not divided by ~0.
        end = self.ts + np.maximum(self.duration, 0)
        self.span: float | np.ndarray = max(1.0, float(end.max() - self.ts.min())) if n else 1.0
        if seg is not None and n:
            # per window (a per-row array): max(end) - min(ts) of the row's own window
            starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
            span = np.maximum.reduceat(end, starts) - np.minimum.reduceat(self.ts, starts)
            span = np.where(span > 1.0, span, 1.0)  # = max(1.0, x) above, NaN included
            self.span = span[np.cumsum(np.r_[False, seg[1:] != seg[:-1]])]
        self.pkts = self.src_pkts + self.dst_pkts
        self.bytes = self.src_bytes + self.dst_bytes
        self.ip_bytes = self.src_ip_bytes + self.dst_ip_bytes

    def group(self, name: str) -> tuple[np.ndarray, int]:
        """Cached group ids for a named key: src, dst, pair, src_port, dst_port (dst + port), flow (src+dst+port)."""
        if name not in self._groups:
            # With several windows, "src"/"dst" groups are (window, address); every other key is built
            # on one of them, so it is per window too.
            if name == "src":
                g = (self.src, self.n_src) if self.seg is None else _group(self.seg, self.src)
            elif name == "dst":
                g = (self.dst, self.n_dst) if self.seg is None else _group(self.seg, self.dst)
            elif name == "pair":
                g = _group(self.group("src")[0], self.dst)
            elif name == "src_port":
                g = _group(self.group("src")[0], self.port_code)
            elif name == "dst_port":
                g = _group(self.group("dst")[0], self.port_code)
            elif name == "flow":
                g = _group(self.group("src")[0], self.dst, self.port_code)
            else:
                raise ValueError(f"unknown group key {name!r}")
            self._groups[name] = g
        return self._groups[name]

    def count(self, name: str, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-row: number of rows (in ``mask``) sharing this row's group."""
        g, k = self.group(name)
        w = None if mask is None else mask.astype(np.float64)
        return np.bincount(g, weights=w, minlength=k)[g]

    def mean(self, name: str, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-row: mean of ``values`` over the rows (in ``mask``) of this row's group (0 if none)."""
        g, k = self.group(name)
        m = np.ones(self.n) if mask is None else mask.astype(np.float64)
        s = np.bincount(g, weights=values * m, minlength=k)
        c = np.bincount(g, weights=m, minlength=k)
        return np.divide(s, c, out=np.zeros(k), where=c > 0)[g]

    def distinct(self, name: str, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-row: number of distinct ``values`` in this row's group (over rows in ``mask``)."""
        g, k = self.group(name)
        return _distinct(g, k, values, mask)[g]

    def dport_in(self, values: np.ndarray) -> np.ndarray:
        """Rows whose destination port is in ``values``."""
        return _port_lut(values)[self._dport_idx]

    def sport_in(self, values: np.ndarray) -> np.ndarray:
        """Rows whose source port is in ``values``."""
        return _port_lut(values)[self._sport_idx]

    def service_is(self, *names: str) -> np.ndarray:
        """Rows whose (lower-cased) service label is one of ``names``."""
        return _lookup(self.svc_code, self.svc_values, lambda v: v in names)

    def failed(self) -> np.ndarray:
        """Connection attempt that got no answer or was refused.

        Zeek ``conn_state`` in S0/REJ/RSTOS0/RSTRH/SH/SHR/OTH when known; otherwise a TCP flow with no
        responder packets, or a RST seen with no payload in either direction.
        """
        if not hasattr(self, "_failed"):
            no_reply = self.tcp & (self.dst_pkts <= 0)
            rst_empty = (np.nan_to_num(self.rst) > 0) & (self.bytes <= 0)
            self._failed = np.where(self.has_state, self.failed_state, no_reply | rst_empty)
        return self._failed

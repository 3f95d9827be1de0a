"""Network-observable behaviour predicates computed over one window of flows.

A *predicate* is a named behaviour that can be seen in flow records (a port scan,
a flood, beaconing...). Each one maps a window table in ``FLOW_SCHEMA`` to one
activation per flow (edge) in ``[0, 1]``: 0 = behaviour absent, 1 = clearly present.
Group predicates (e.g. "one source touches many destinations on one port") give
every flow the value of its group, so the flows that make up a scan all light up.
Per-node activations are the maximum over the node's incident flows.

Everything is vectorised: group-bys go through ``dictionary_encode`` codes,
``np.unique(..., return_inverse=True)`` and ``np.bincount``; there is no per-row
Python loop. Thresholds are fixed, documented constants taken from the usual
operational definitions (e.g. a horizontal scan starts at 5 distinct destinations),
never fitted on labels.

The registry :data:`PREDICATES` keeps the order, which fixes the feature columns;
its ``description`` strings are what the text extractors (embedding, llm) see.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Predicate", "PREDICATES", "PREDICATE_NAMES", "WindowContext", "compute_predicates",
           "compute_predicates_many", "concat_windows", "node_activations", "VOCAB_VERSION"]

# Tag "context": a fact about a single flow (its port, direction, handshake outcome) that is common in
# benign traffic too; such predicates count less in technique scores than behaviours over groups of flows.
# Bumped whenever a predicate is added, removed or its definition changes.
VOCAB_VERSION = "1"

# Ports grouped by role. Sources: IANA registry and the services named in ATT&CK technique text.
AUTH_PORTS = np.array([21, 22, 23, 25, 88, 110, 139, 143, 389, 445, 465, 513, 587, 636, 993, 995,
                       1433, 1521, 3306, 3389, 5432, 5900, 5985, 5986], dtype=np.int64)
ADMIN_PORTS = np.array([22, 135, 139, 445, 3389, 5900, 5985, 5986], dtype=np.int64)  # SSH/RPC/SMB/RDP/VNC/WinRM
SMB_PORTS = np.array([139, 445], dtype=np.int64)
REMOTE_DESKTOP_PORTS = np.array([3389, 5900, 5901], dtype=np.int64)
WEB_PORTS = np.array([80, 443, 8000, 8008, 8080, 8443, 8888], dtype=np.int64)
DNS_PORTS = np.array([53, 5353, 853], dtype=np.int64)
AMPLIFIER_PORTS = np.array([17, 19, 53, 111, 123, 137, 161, 389, 1900, 3702, 5353, 11211], dtype=np.int64)
CLEARTEXT_PORTS = np.array([21, 23, 25, 80, 110, 143, 161, 389, 513, 514], dtype=np.int64)
PROXY_PORTS = np.array([1080, 3128, 8118, 9001, 9030, 9050, 9051, 9150], dtype=np.int64)
IRC_PORTS = np.array([194, 6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667, 6668, 6669, 6697], dtype=np.int64)
FILE_TRANSFER_PORTS = np.array([20, 21, 69, 115, 989, 990, 2049], dtype=np.int64)
DB_PORTS = np.array([1433, 1521, 3306, 5432, 6379, 9200, 27017], dtype=np.int64)
MAIL_PORTS = np.array([25, 110, 143, 465, 587, 993, 995], dtype=np.int64)
# Ports a well-behaved service is expected on; anything >= 1024 not here is "uncommon".
COMMON_PORTS = np.unique(np.concatenate([
    AUTH_PORTS, WEB_PORTS, DNS_PORTS, AMPLIFIER_PORTS, MAIL_PORTS, DB_PORTS,
    np.array([67, 68, 69, 5060, 5061, 1194, 500, 4500, 1723, 3478, 5222, 5223, 8883, 1883], dtype=np.int64)]))
# Standard ports per application protocol (Zeek ``service`` names).
SERVICE_PORTS: dict[str, tuple[int, ...]] = {
    "http": (80, 8000, 8008, 8080, 8888, 3128), "ssl": (443, 8443, 993, 995, 465, 636, 853, 5986, 990),
    "ssh": (22,), "dns": (53, 5353, 853), "ftp": (21,), "ftp-data": (20,), "smtp": (25, 465, 587),
    "rdp": (3389,), "smb": (139, 445), "dhcp": (67, 68), "ntp": (123,), "irc": tuple(int(p) for p in IRC_PORTS),
    "telnet": (23,), "snmp": (161, 162), "krb": (88,), "ldap": (389, 636), "mysql": (3306,),
}
FAILED_STATES = np.array(["S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"], dtype=object)
PRIVATE_RE = r"^(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|127\.|169\.254\.|[fF][cCdD][0-9a-fA-F]{2}:|[fF][eE]80:|::1$)"
MULTICAST_RE = r"^(22[4-9]\.|23[0-9]\.|255\.255\.255\.255$|[fF][fF][0-9a-fA-F]{2}:)"


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, linear in between (a soft threshold)."""
    y = (x - lo) * (1.0 / (hi - lo)) if isinstance(x, np.ndarray) else (np.asarray(x, np.float64) - lo) * (1.0 / (hi - lo))
    return np.minimum(np.maximum(y, 0.0, out=y), 1.0, out=y)  # ufuncs directly: np.clip's wrapper is slower


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


# A key range up to this many slots per row (plus a fixed 64k) is ranked with a table over the range
# (two linear passes) instead of a sort: both give np.unique's inverse.
_DENSE_PER_ROW = 4
_DENSE_FIXED = 1 << 16


def _dense(kmax: int, n: int) -> bool:
    return kmax < _DENSE_PER_ROW * n + _DENSE_FIXED


def _rank(key: np.ndarray, kmax: int, nonneg: bool = True) -> tuple[np.ndarray, int]:
    """``(np.unique(key, return_inverse=True)[1] as int64, number of distinct keys)``; ``kmax`` bounds
    the keys, ``nonneg`` says they are >= 0 (the table needs both)."""
    if nonneg and _dense(kmax, len(key)):
        seen = np.zeros(kmax + 1, dtype=bool)
        seen[key] = True
        rank = np.cumsum(seen, dtype=np.int64)  # rank[v] - 1 = number of present keys below v
        return rank[key] - 1, int(rank[-1])
    _, inv = np.unique(key, return_inverse=True)
    return inv.astype(np.int64).ravel(), int(inv.max(initial=-1)) + 1


def _group(*codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Group id per row for the combination of non-negative integer code arrays: the rank of the row's
    code tuple among the window's tuples in lexicographic order (so any order-preserving recoding of a
    code array gives the same ids)."""
    key = np.zeros(len(codes[0]), dtype=np.int64)
    kmax = 0
    nonneg = True
    for c in codes:
        cmax = int(c.max(initial=0))
        nonneg = nonneg and int(c.min(initial=0)) >= 0
        if kmax and kmax * (cmax + 1) + cmax >= 2 ** 62:  # the mixed key would overflow: densify first
            key, k = _rank(key, kmax, nonneg)
            kmax = max(k - 1, 0)
        key = key * (cmax + 1) + c
        kmax = kmax * (cmax + 1) + cmax
    return _rank(key, kmax, nonneg)


def _distinct(group: np.ndarray, n_groups: int, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Number of distinct ``values`` per group (optionally only over rows in ``mask``)."""
    if mask is not None:
        group, values = group[mask], values[mask]
    if len(group) == 0:
        return np.zeros(n_groups, dtype=np.float64)
    base = int(values.max()) + 1
    if int(values.min()) >= 0 and _dense(n_groups * base, len(group)):
        # mark the (group, value) pairs present in a table over all pairs: no sort
        seen = np.zeros(n_groups * base, dtype=bool)
        seen[group * base + values] = True
        return np.bincount(np.flatnonzero(seen) // base, minlength=n_groups).astype(np.float64)
    # sort + "differs from the previous" instead of np.unique: numpy 2's hash-based unique was 3x slower here
    pairs = np.sort(group * base + values)
    first = np.empty(len(pairs), dtype=bool)
    first[0] = True
    np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
    return np.bincount(pairs[first] // base, minlength=n_groups).astype(np.float64)


_PORT_TABLES: dict[bytes, np.ndarray] = {}


def _port_lut(values: np.ndarray) -> np.ndarray:
    """65537-entry membership table for a port set (index port + 1; -1 = unknown port), cached."""
    key = np.asarray(values, dtype=np.int64).tobytes()
    lut = _PORT_TABLES.get(key)
    if lut is None:
        lut = np.zeros(65537, dtype=bool)
        v = np.asarray(values, dtype=np.int64)
        lut[v[(v >= -1) & (v <= 65535)] + 1] = True
        _PORT_TABLES[key] = lut
    return lut


def _isin(a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Port membership through a lookup table."""
    return _port_lut(values)[np.clip(a, -1, 65535) + 1]


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


@dataclass(frozen=True)
class Predicate:
    """One network-observable behaviour.

    ``fn(ctx) -> float [E]`` in [0, 1]. ``scope`` says which group the value is computed over
    (``flow`` = the record alone). ``description`` is the definition shown to users and to the
    text extractors; ``protocols`` / ``ports`` are hints stored with extracted links.
    """

    name: str
    description: str
    scope: str
    fn: Callable[[WindowContext], np.ndarray]
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- predicate definitions

def horizontal_scan(c: WindowContext) -> np.ndarray:
    """One source reaches >= 5 (full at 20) distinct destination hosts on the same destination port."""
    return ramp(c.distinct("src_port", c.dst), 4, 20)


def vertical_scan(c: WindowContext) -> np.ndarray:
    """One source reaches >= 5 (full at 20) distinct destination ports on one destination host."""
    return ramp(c.distinct("pair", c.port_code), 4, 20)


def port_spread(c: WindowContext) -> np.ndarray:
    """One source uses >= 10 (full at 50) distinct destination ports across all its destinations."""
    return ramp(c.distinct("src", c.port_code), 9, 50)


def fan_out(c: WindowContext) -> np.ndarray:
    """One source contacts >= 20 (full at 100) distinct destination hosts in the window, any port."""
    return ramp(c.distinct("src", c.dst), 19, 100)


def fan_in(c: WindowContext) -> np.ndarray:
    """One destination host is contacted by >= 10 (full at 50) distinct sources in the window."""
    g, k = c.group("dst")
    return ramp(_distinct(g, k, c.src)[g], 9, 50)


def failed_connection_ratio(c: WindowContext) -> np.ndarray:
    """Share of a source's flows that failed (no answer / refused), once it has >= 3 flows (full weight at 10)."""
    f = c.failed()
    ratio = c.mean("src", f.astype(np.float64))
    return ratio * ramp(c.count("src"), 2, 10)


def syn_only(c: WindowContext) -> np.ndarray:
    """TCP flow that never completed the handshake: Zeek state S0/SH/RSTOS0 or history ``S``, or
    SYN seen with no responder packets and no payload."""
    syn_no_reply = (np.nan_to_num(c.syn) > 0) & (c.dst_pkts <= 0) & (c.bytes <= 0)
    return (c.tcp & np.where(c.has_state, c.s0_state, syn_no_reply)).astype(np.float64)


def rejected_connection(c: WindowContext) -> np.ndarray:
    """TCP attempt refused by the responder: Zeek REJ/RSTOS0/RSTRH, or RST seen with no payload."""
    rst_empty = (np.nan_to_num(c.rst) > 0) & (c.bytes <= 0)
    return (c.tcp & np.where(c.has_state, c.rej_state, rst_empty)).astype(np.float64)


def zero_payload(c: WindowContext) -> np.ndarray:
    """TCP/UDP flow that carried no payload in either direction."""
    return ((c.tcp | c.udp) & (c.bytes <= 0)).astype(np.float64)


def small_packets(c: WindowContext) -> np.ndarray:
    """Flow whose mean IP packet size is small: full below 64 bytes/packet, none above 128. A flow with
    no packet and no byte counted (a bare attempt) counts as small."""
    empty = np.where((c.pkts <= 0) & (c.ip_bytes <= 0), 0.0, 1500.0)
    size = np.divide(c.ip_bytes, c.pkts, out=empty, where=c.pkts > 0)
    return 1.0 - ramp(size, 64, 128)


def flood(c: WindowContext) -> np.ndarray:
    """High rate of small-packet flows at one destination host: >= 10 (full at 100) such flows per second
    of window, where small = mean packet size <= 128 bytes."""
    small = small_packets(c) > 0
    rate = c.count("dst", small) / c.span
    return ramp(rate, 10, 100) * small


def request_burst(c: WindowContext) -> np.ndarray:
    """Many flows from one source to one destination service: >= 20 (full at 200) flows per (src, dst, port)."""
    return ramp(c.count("flow"), 19, 200)


def high_packet_rate(c: WindowContext) -> np.ndarray:
    """Flow sending >= 100 (full at 1000) packets per second."""
    rate = np.divide(c.pkts, c.duration, out=np.zeros(c.n), where=c.duration > 0.01)
    return ramp(rate, 100, 1000)


def amplification(c: WindowContext) -> np.ndarray:
    """UDP flow whose response is >= 5x (full at 20x) the request and at least 500 bytes."""
    ratio = np.divide(c.dst_ip_bytes, np.maximum(c.src_ip_bytes, 1.0))
    return c.udp * ramp(ratio, 5, 20) * (c.dst_ip_bytes >= 500)


def reflection_source_port(c: WindowContext) -> np.ndarray:
    """UDP flow from a well-known amplifier service port (DNS, NTP, SSDP, memcached, CharGEN...) to a
    high port with >= 500 bytes: what a reflected flood looks like at the victim."""
    return (c.udp & c.sport_in(AMPLIFIER_PORTS) & (c.dst_port >= 1024) & (c.src_ip_bytes >= 500)).astype(np.float64)


def udp_volume(c: WindowContext) -> np.ndarray:
    """One destination receives >= 10 (full at 100) UDP flows per second of window."""
    return c.udp * ramp(c.count("dst", c.udp) / c.span, 10, 100)


def beaconing(c: WindowContext) -> np.ndarray:
    """Periodic connections: a (src, dst, port) with >= 4 flows (full at 8) whose inter-arrival times have a
    coefficient of variation <= 0.1 (none above 0.5), i.e. low jitter, mean gap >= 1 s."""
    g, k = c.group("flow")
    # rows by group, then time: a quicksort on time, then a stable sort on the group (radix for <= 65536
    # groups). Rows of equal time may come in another order than np.lexsort((ts, g)) gives, but the
    # (group, time) sequence below, and so every gap, is the same.
    order = np.argsort(c.ts)
    order = order[np.argsort(g[order].astype(np.uint16) if k <= 65536 else g[order], kind="stable")]
    return _beacon_activation(g[order], c.ts[order], k)[g]


def _beacon_activation(gs: np.ndarray, ts: np.ndarray, k: int) -> np.ndarray:
    """Per group: the beaconing activation from its flows' times (``gs``/``ts`` ordered by group, then time)."""
    same = np.r_[False, gs[1:] == gs[:-1]]
    gap = np.r_[0.0, np.diff(ts)]
    w = same.astype(np.float64)
    n = np.bincount(gs, weights=w, minlength=k)
    s = np.bincount(gs, weights=gap * w, minlength=k)
    s2 = np.bincount(gs, weights=gap * gap * w, minlength=k)
    mean = np.divide(s, n, out=np.zeros(k), where=n > 0)
    var = np.maximum(np.divide(s2, n, out=np.zeros(k), where=n > 0) - mean ** 2, 0)
    cv = np.divide(np.sqrt(var), mean, out=np.full(k, np.inf), where=mean > 0)
    return ramp(n + 1, 3, 8) * (1.0 - ramp(cv, 0.1, 0.5)) * (mean >= 1.0)


def long_low_volume(c: WindowContext) -> np.ndarray:
    """Long session (>= 60 s, full at 600 s) carrying little data (<= 50 B/s full, none above 500 B/s)."""
    rate = np.divide(c.bytes, c.duration, out=np.zeros(c.n), where=c.duration > 0)
    return ramp(c.duration, 60, 600) * (1.0 - ramp(rate, 50, 500))


def slow_sessions(c: WindowContext) -> np.ndarray:
    """Several (>= 3, full at 10) concurrent slow TCP sessions from one source to one host: each >= 10 s
    with < 100 B/s, the pattern of connection-exhaustion DoS (slowloris, slow POST)."""
    rate = np.divide(c.bytes, c.duration, out=np.zeros(c.n), where=c.duration > 0)
    slow = c.tcp & (c.duration >= 10) & (rate < 100)
    return slow * ramp(c.count("pair", slow), 2, 10)


def large_outbound_transfer(c: WindowContext) -> np.ndarray:
    """Originator sends >= 1 MB (full at 10 MB) and at least 3x what it receives."""
    return ramp(c.src_bytes, 1e6, 1e7) * (c.src_bytes >= 3 * c.dst_bytes)


def outbound_asymmetry(c: WindowContext) -> np.ndarray:
    """Upload-heavy flow: >= 10 kB sent and sent/received ratio >= 5 (full at 50)."""
    ratio = c.src_bytes / np.maximum(c.dst_bytes, 1.0)
    return ramp(ratio, 5, 50) * (c.src_bytes >= 1e4)


def large_inbound_transfer(c: WindowContext) -> np.ndarray:
    """Originator downloads >= 100 kB (full at 5 MB) and receives at least 3x what it sends (tool transfer)."""
    return ramp(c.dst_bytes, 1e5, 5e6) * (c.dst_bytes >= 3 * c.src_bytes)


def external_upload_volume(c: WindowContext) -> np.ndarray:
    """Internal source sends >= 5 MB (full at 50 MB) in total to one external host over the window."""
    g, k = c.group("pair")
    tot = np.bincount(g, weights=c.src_bytes, minlength=k)[g]
    return ramp(tot, 5e6, 5e7) * (c.src_private & ~c.dst_private)


def brute_force(c: WindowContext) -> np.ndarray:
    """Repeated short sessions to one authentication service: >= 5 (full at 20) flows from one source to
    the same host and auth port (SSH, Telnet, FTP, RDP, SMB, SMTP/IMAP/POP, LDAP, Kerberos, VNC, WinRM,
    databases) with mean duration <= 10 s (none above 30 s)."""
    auth = c.dport_in(AUTH_PORTS)
    short = 1.0 - ramp(c.mean("flow", c.duration), 10, 30)
    return auth * ramp(c.count("flow"), 4, 20) * short


def password_spray(c: WindowContext) -> np.ndarray:
    """One source authenticates to >= 5 (full at 20) distinct hosts on the same auth port."""
    auth = c.dport_in(AUTH_PORTS)
    return auth * ramp(c.distinct("src_port", c.dst, auth), 4, 20)


def repeated_short_sessions(c: WindowContext) -> np.ndarray:
    """>= 10 (full at 50) flows on one (src, dst, port), mean duration <= 2 s (none above 10 s), any port."""
    short = 1.0 - ramp(c.mean("flow", c.duration), 2, 10)
    return ramp(c.count("flow"), 9, 50) * short


def auth_service(c: WindowContext) -> np.ndarray:
    """Flow to an authentication-bearing service port (SSH, Telnet, FTP, RDP, SMB, mail, LDAP, Kerberos...)."""
    return c.dport_in(AUTH_PORTS).astype(np.float64)


def lateral_admin(c: WindowContext) -> np.ndarray:
    """Internal -> internal flow on a remote-administration protocol (SMB, RDP, WinRM, SSH, RPC, VNC)
    that exchanged payload: the shape of lateral movement."""
    return (c.src_private & c.dst_private & c.dport_in(ADMIN_PORTS) & (c.bytes > 0)).astype(np.float64)


def internal_fan_out_admin(c: WindowContext) -> np.ndarray:
    """One internal source reaches >= 3 (full at 10) internal hosts on admin ports (SMB/RDP/WinRM/SSH)."""
    m = c.src_private & c.dst_private & c.dport_in(ADMIN_PORTS)
    return m * ramp(c.distinct("src", c.dst, m), 2, 10)


def smb_traffic(c: WindowContext) -> np.ndarray:
    """Flow to SMB/NetBIOS session service (TCP 139/445)."""
    return (c.tcp & c.dport_in(SMB_PORTS)).astype(np.float64)


def remote_desktop(c: WindowContext) -> np.ndarray:
    """Flow to a remote desktop service (RDP 3389, VNC 5900/5901)."""
    return c.dport_in(REMOTE_DESKTOP_PORTS).astype(np.float64)


def inbound_remote_service(c: WindowContext) -> np.ndarray:
    """External -> internal flow to a remote service (SSH, Telnet, RDP, VNC, SMB, WinRM)."""
    ports = np.array([22, 23, 445, 3389, 5900, 5985, 5986], dtype=np.int64)
    return (~c.src_private & c.dst_private & c.dport_in(ports)).astype(np.float64)


def nonstandard_port(c: WindowContext) -> np.ndarray:
    """Application protocol seen on a port that is not its standard one (e.g. HTTP on 4444, SSH on 2222).
    Needs a ``service`` label (Zeek, nDPI); 0 when unknown."""
    out = np.zeros(c.n, dtype=bool)
    for k, svc in enumerate(c.svc_values):  # loop over the window's few distinct service labels
        ports = SERVICE_PORTS.get(svc)
        if ports:
            out |= (c.svc_code == k) & ~c.dport_in(np.array(ports))
    return out.astype(np.float64)


def uncommon_port(c: WindowContext) -> np.ndarray:
    """TCP/UDP flow with payload both ways to a destination port >= 1024 that is not a common service port."""
    return ((c.tcp | c.udp) & (c.dst_port >= 1024) & ~c.dport_in(COMMON_PORTS)
            & (c.src_bytes > 0) & (c.dst_bytes > 0)).astype(np.float64)


def high_entropy_payload(c: WindowContext) -> np.ndarray:
    """Payload entropy >= 7.0 bits/byte (full at 7.6): encrypted or compressed content. 0 when unknown."""
    return ramp(np.nan_to_num(c.entropy, nan=0.0), 7.0, 7.6) * (c.bytes > 0)


def low_entropy_payload(c: WindowContext) -> np.ndarray:
    """Payload entropy <= 3 bits/byte (none above 4.5) on a flow with payload: plain or repetitive content."""
    e = np.where(np.isnan(c.entropy), 8.0, c.entropy)
    return (1.0 - ramp(e, 3.0, 4.5)) * (c.bytes > 0)


def icmp_sweep(c: WindowContext) -> np.ndarray:
    """One source sends ICMP to >= 5 (full at 20) distinct hosts (ping sweep)."""
    return c.icmp * ramp(c.distinct("src", c.dst, c.icmp), 4, 20)


def icmp_large_payload(c: WindowContext) -> np.ndarray:
    """ICMP flow with mean packet size >= 200 bytes (full at 1000): data carried inside ICMP."""
    size = np.divide(c.ip_bytes, c.pkts, out=np.zeros(c.n), where=c.pkts > 0)
    return c.icmp * ramp(size, 200, 1000)


def icmp_flood(c: WindowContext) -> np.ndarray:
    """One destination receives >= 10 (full at 100) ICMP flows per second of window."""
    return c.icmp * ramp(c.count("dst", c.icmp) / c.span, 10, 100)


def dns_query_volume(c: WindowContext) -> np.ndarray:
    """One source sends >= 50 (full at 300) DNS flows in the window."""
    dns = c.dport_in(DNS_PORTS) | c.service_is("dns")
    return dns * ramp(c.count("src", dns), 49, 300)


def dns_large_query(c: WindowContext) -> np.ndarray:
    """DNS flow whose request packets average >= 120 bytes (full at 250): long query names, the mark of
    data encoded in DNS (tunnelling)."""
    dns = c.dport_in(DNS_PORTS)
    size = np.divide(c.src_ip_bytes, c.src_pkts, out=np.zeros(c.n), where=c.src_pkts > 0)
    return dns * ramp(size, 120, 250)


def dns_external_resolver(c: WindowContext) -> np.ndarray:
    """Internal host sends DNS straight to an external server (bypassing the local resolver)."""
    return (c.dport_in(np.array([53, 853])) & c.src_private & ~c.dst_private).astype(np.float64)


def cleartext_protocol(c: WindowContext) -> np.ndarray:
    """Flow on a clear-text protocol that can carry credentials (FTP, Telnet, SMTP, HTTP, POP3, IMAP, SNMP, LDAP, rlogin)."""
    return c.dport_in(CLEARTEXT_PORTS).astype(np.float64)


def web_traffic(c: WindowContext) -> np.ndarray:
    """Flow to a web port (80, 443, 8000, 8080, 8443...) or labelled http/ssl."""
    svc = c.service_is("http", "ssl")
    return (c.dport_in(WEB_PORTS) | svc).astype(np.float64)


def proxy_port(c: WindowContext) -> np.ndarray:
    """Flow to a proxy / Tor port (SOCKS 1080, Squid 3128, Tor 9001/9030/9050/9150...)."""
    return c.dport_in(PROXY_PORTS).astype(np.float64)


def irc_port(c: WindowContext) -> np.ndarray:
    """Flow to IRC (194, 6660-6669, 6697), a classic botnet command channel."""
    return (c.dport_in(IRC_PORTS) | c.service_is("irc")).astype(np.float64)


def file_transfer_protocol(c: WindowContext) -> np.ndarray:
    """Flow on a file-transfer protocol (FTP 20/21, TFTP 69, SFTP 115, FTPS 989/990, NFS 2049)."""
    return c.dport_in(FILE_TRANSFER_PORTS).astype(np.float64)


def database_access(c: WindowContext) -> np.ndarray:
    """Flow to a database service port (MSSQL, Oracle, MySQL, PostgreSQL, Redis, Elasticsearch, MongoDB)."""
    return c.dport_in(DB_PORTS).astype(np.float64)


def outbound_external(c: WindowContext) -> np.ndarray:
    """Internal source talking to an external (public, non-multicast) destination."""
    return (c.src_private & ~c.dst_private & ~c.dst_multicast).astype(np.float64)


def inbound_external(c: WindowContext) -> np.ndarray:
    """External source reaching an internal destination (unsolicited inbound)."""
    return (~c.src_private & c.dst_private).astype(np.float64)


def internal_internal(c: WindowContext) -> np.ndarray:
    """Both endpoints in private address space."""
    return (c.src_private & c.dst_private).astype(np.float64)


def many_destinations_same_payload(c: WindowContext) -> np.ndarray:
    """One source sends the same request size (bytes) to >= 10 (full at 50) destinations: automated
    propagation or scanning with a fixed probe."""
    size = c.src_bytes.astype(np.int64)
    g, k = _group(c.group("src")[0], np.maximum(size, 0))
    return ramp(_distinct(g, k, c.dst)[g], 9, 50) * (c.src_bytes > 0)


PREDICATES: dict[str, Predicate] = {}


def _reg(fn: Callable, scope: str, protocols: tuple[str, ...] = (), ports=(), tags: tuple[str, ...] = ()) -> None:
    doc = " ".join((fn.__doc__ or "").split())
    PREDICATES[fn.__name__] = Predicate(fn.__name__, doc, scope, fn, protocols,
                                        tuple(int(p) for p in ports), tags)


_reg(horizontal_scan, "src,dst_port", ("tcp", "udp"), tags=("scan",))
_reg(vertical_scan, "src,dst", ("tcp", "udp"), tags=("scan",))
_reg(port_spread, "src", ("tcp", "udp"), tags=("scan",))
_reg(fan_out, "src", tags=("scan", "spread"))
_reg(fan_in, "dst", tags=("dos",))
_reg(failed_connection_ratio, "src", ("tcp",), tags=("scan",))
_reg(syn_only, "flow", ("tcp",), tags=("scan", "dos", "context"))
_reg(rejected_connection, "flow", ("tcp",), tags=("scan", "context"))
_reg(zero_payload, "flow", ("tcp", "udp"), tags=("context",))
_reg(small_packets, "flow", tags=("dos", "context"))
_reg(flood, "dst", tags=("dos",))
_reg(request_burst, "src,dst,dst_port", tags=("dos", "bruteforce"))
_reg(high_packet_rate, "flow", tags=("dos",))
_reg(amplification, "flow", ("udp",), AMPLIFIER_PORTS, tags=("dos",))
_reg(reflection_source_port, "flow", ("udp",), AMPLIFIER_PORTS, tags=("dos",))
_reg(udp_volume, "dst", ("udp",), tags=("dos",))
_reg(beaconing, "src,dst,dst_port", tags=("c2",))
_reg(long_low_volume, "flow", tags=("c2",))
_reg(slow_sessions, "src,dst", ("tcp",), WEB_PORTS, tags=("dos",))
_reg(large_outbound_transfer, "flow", tags=("exfil",))
_reg(outbound_asymmetry, "flow", tags=("exfil",))
_reg(large_inbound_transfer, "flow", tags=("transfer",))
_reg(external_upload_volume, "src,dst", tags=("exfil",))
_reg(brute_force, "src,dst,dst_port", ("tcp",), AUTH_PORTS, tags=("bruteforce",))
_reg(password_spray, "src,dst_port", ("tcp",), AUTH_PORTS, tags=("bruteforce",))
_reg(repeated_short_sessions, "src,dst,dst_port", tags=("bruteforce", "dos"))
_reg(auth_service, "flow", ("tcp",), AUTH_PORTS, tags=("context",))
# lateral_admin / inbound_remote_service are single-flow facts of port and direction that every legitimate
# admin or VPN session fires; ATT&CK defines their techniques (T1021 Remote Services, T1133 External Remote
# Services) by the use of valid accounts, which a flow cannot show. So they are context: they sharpen
# behaviour evidence (admin fan-out, brute force) but cannot name a technique alone.
_reg(lateral_admin, "flow", ("tcp",), ADMIN_PORTS, tags=("lateral", "context"))
_reg(internal_fan_out_admin, "src", ("tcp",), ADMIN_PORTS, tags=("lateral",))
_reg(smb_traffic, "flow", ("tcp",), SMB_PORTS, tags=("context",))
_reg(remote_desktop, "flow", ("tcp",), REMOTE_DESKTOP_PORTS, tags=("context",))
_reg(inbound_remote_service, "flow", ("tcp",), (22, 23, 445, 3389, 5900, 5985, 5986), tags=("access", "context"))
_reg(nonstandard_port, "flow", tags=("c2",))
_reg(uncommon_port, "flow", tags=("c2",))
_reg(high_entropy_payload, "flow", tags=("c2", "exfil"))
_reg(low_entropy_payload, "flow", tags=("context",))
_reg(icmp_sweep, "src", ("icmp",), tags=("scan",))
_reg(icmp_large_payload, "flow", ("icmp",), tags=("c2", "exfil"))
_reg(icmp_flood, "dst", ("icmp",), tags=("dos",))
_reg(dns_query_volume, "src", ("udp", "dns"), DNS_PORTS, tags=("c2",))
_reg(dns_large_query, "flow", ("udp", "dns"), DNS_PORTS, tags=("c2", "exfil"))
_reg(dns_external_resolver, "flow", ("udp", "dns"), (53, 853), tags=("c2",))
_reg(cleartext_protocol, "flow", ports=CLEARTEXT_PORTS, tags=("context",))
_reg(web_traffic, "flow", ("tcp", "http", "ssl"), WEB_PORTS, tags=("context",))
_reg(proxy_port, "flow", ("tcp",), PROXY_PORTS, tags=("c2",))
_reg(irc_port, "flow", ("tcp", "irc"), IRC_PORTS, tags=("c2",))
_reg(file_transfer_protocol, "flow", ("tcp", "udp"), FILE_TRANSFER_PORTS, tags=("transfer", "context"))
_reg(database_access, "flow", ("tcp",), DB_PORTS, tags=("context",))
_reg(outbound_external, "flow", tags=("context",))
_reg(inbound_external, "flow", tags=("context",))
_reg(internal_internal, "flow", tags=("context",))
_reg(many_destinations_same_payload, "src,src_bytes", tags=("scan", "spread"))

PREDICATE_NAMES: tuple[str, ...] = tuple(PREDICATES)


def compute_predicates(table: pa.Table | pa.RecordBatch, names: tuple[str, ...] | None = None) -> np.ndarray:
    """Edge activations ``float32 [E, len(names)]`` (all predicates by default), in ``names`` order."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return _activations(table, None, names)


def _activations(table: pa.Table, sizes: np.ndarray | None, names: tuple[str, ...] | None) -> np.ndarray:
    names = PREDICATE_NAMES if names is None else tuple(names)
    if table.num_rows == 0:
        return np.zeros((0, len(names)), dtype=np.float32)
    ctx = WindowContext(table, sizes)
    # One predicate per row of a [K, E] array (contiguous writes), transposed once at the end.
    out = np.empty((len(names), table.num_rows), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, name in enumerate(names):
            out[j] = PREDICATES[name].fn(ctx)
    # NaN -> 0, -inf -> 0, +inf -> 1, then into [0, 1]: fmax/fmin skip NaN (nan_to_num + clip, in two passes)
    np.fmax(out, 0.0, out=out)
    np.fmin(out, 1.0, out=out)
    return np.ascontiguousarray(out.T)


def concat_windows(tables) -> tuple[pa.Table, np.ndarray]:
    """(one table of the windows' rows in order, rows per window); columns missing from some windows
    are null there (``_num``/``_dict`` treat a null like a missing column, so nothing changes)."""
    tables = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    sizes = np.fromiter((t.num_rows for t in tables), dtype=np.int64, count=len(tables))
    live = [t for t in tables if t.num_rows]
    if not live:
        return (tables[0] if tables else pa.table({})), sizes
    try:
        table = pa.concat_tables(live)
    except pa.ArrowInvalid:  # different column sets or types: let Arrow promote (raises if it cannot)
        table = pa.concat_tables(live, promote_options="permissive")
    return table, sizes


def compute_predicates_many(tables, names: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Activations of several windows in one call: ``(float32 [sum E, len(names)], rows per window)``.

    Rows are the windows' rows in order; window ``i`` is rows ``off[i]:off[i+1]`` with
    ``off = [0, *cumsum(sizes)]``, and equals ``compute_predicates(tables[i], names)`` bit for bit
    (groups, distinct counts and rates never cross windows; ``tests/knowledge/test_predicates.py``).
    """
    table, sizes = concat_windows(tables)
    return _activations(table, sizes[sizes > 0], names), sizes


def node_activations(edge_act: np.ndarray, edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Per-node activation ``[N, K]``: max over the node's incident edges (as source or destination), 0
    for a node without edges. The max is exact, so neither order nor batching changes the result.

    float32 activations go through a compiled loop (numba) when it is importable: on 136k LUFlow edges
    ~3x less CPU than torch's ``scatter_reduce`` (amax), which needs the activations twice and an
    expanded index. The loop applies torch's rule (``src`` if it is NaN, else ``max(self, src)`` with
    ``self`` kept on ties), so the two give the same bits. Otherwise torch's ``scatter_reduce`` when
    torch is importable (32 ms vs 255 ms for NumPy's ``maximum.at``/``maximum.reduceat`` on 65,536
    LUFlow edges), else NumPy.
    """
    K = edge_act.shape[1]
    E = edge_act.shape[0]
    ei = np.asarray(edge_index, dtype=np.int64).reshape(2, -1) if E else np.zeros((2, 0), np.int64)
    if E and num_nodes and edge_act.dtype == np.float32 and _node_kernel() is not None:
        if ei.min() < 0 or ei.max() >= num_nodes:
            raise IndexError(f"edge_index holds a node id outside [0, {num_nodes})")
        node = np.zeros((num_nodes, K), dtype=np.float32)
        return _node_kernel()(np.ascontiguousarray(edge_act), np.ascontiguousarray(ei[0]),
                              np.ascontiguousarray(ei[1]), node)
    if E and num_nodes and _torch() is not None:
        torch = _torch()
        if ei.min() < 0 or ei.max() >= num_nodes:
            raise IndexError(f"edge_index holds a node id outside [0, {num_nodes})")
        node_t = torch.zeros((num_nodes, K), dtype=torch.float32)
        src = torch.from_numpy(np.concatenate([edge_act, edge_act]).astype(np.float32, copy=False))
        idx = torch.from_numpy(np.concatenate([ei[0], ei[1]])).view(-1, 1).expand(-1, K)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # intra-op threads cost 10x on a busy 2-core box (as detector/runtime.py)
        try:
            node_t.scatter_reduce_(0, idx, src, reduce="amax", include_self=True)
        finally:
            torch.set_num_threads(threads)
        return node_t.numpy().astype(edge_act.dtype, copy=False)
    node = np.zeros((num_nodes, K), dtype=edge_act.dtype)
    if E and num_nodes:
        np.maximum.at(node, ei[0], edge_act)
        np.maximum.at(node, ei[1], edge_act)
    return node


def _node_max(edge_act, src, dst, node):  # pragma: no cover - compiled by numba
    """``node[n] = max(node[n], edge_act[e])`` over the edges' sources, then their destinations, with
    torch's amax rule: a NaN ``src`` wins, else the larger, ``self`` on ties (so +0 stays over -0)."""
    E, K = edge_act.shape
    for ends in (src, dst):
        for e in range(E):
            n = ends[e]
            for k in range(K):
                v = edge_act[e, k]
                cur = node[n, k]
                if v != v or cur < v:
                    node[n, k] = v
    return node


_NODE_KERNEL: list = []


def _node_kernel():
    """:func:`_node_max` compiled, or None without numba; compiled on first use."""
    if not _NODE_KERNEL:
        _NODE_KERNEL.append(_compile(_node_max))
    return _NODE_KERNEL[0] and _NODE_KERNEL[0][0]


def _compile(*fns) -> tuple | None:
    """The functions compiled by numba (``nogil``: the scorer builds groups in a worker thread; cached on
    disk where numba finds a writable place, else compiled in memory), or None without numba. Imported
    here, not at module import: loading numba costs ~0.4 s that a caller without features never pays."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - a platform without a numba wheel: the NumPy/torch paths
        return None
    try:
        return tuple(njit(nogil=True, cache=True)(f) for f in fns)
    except RuntimeError:  # pragma: no cover - "cannot cache function": no writable cache location
        return tuple(njit(nogil=True)(f) for f in fns)


_TORCH: list = []


def _torch():
    """torch if importable (it is wherever graphs are built), else None; imported once, on first use."""
    if not _TORCH:
        try:
            import torch
        except ImportError:  # pragma: no cover - knowledge features without the model stack
            torch = None
        _TORCH.append(torch)
    return _TORCH[0]

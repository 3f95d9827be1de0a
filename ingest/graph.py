"""Windows of flows -> PyG graphs with stable node identities.

:class:`GraphBuilder` turns one :class:`~ingest.windows.Window` of flow records
into a ``torch_geometric.data.Data`` in which **edge i is row i of
``window.table``** (so scores map straight back to input rows through
``edge_row``). Nodes are endpoints:

* ``ip``: the address field (``src_ip`` / ``dst_ip``);
* ``ipport``: ``ip:port`` as in E-GraphSAGE (``[v6addr]:port`` for IPv6; just
  the address when the port is null, e.g. ICMP without a type);
* ``as``: the address field as well -- LUFlow already stores autonomous-system
  numbers there, so this mode is ``ip`` under the name users look for.

Nodes are numbered in order of first appearance in ``src`` (in row order), then
destination-only nodes in order of first appearance in ``dst``.

Node features (``GraphBuilder.NODE_FEATURES``, all ``log1p`` of counts within
the window): out/in degree, distinct destination peers (as source), distinct
source peers (as destination), distinct destination ports contacted (as
source) and contacted on (as destination), bytes and packets sent/received.
"Sent" counts the node's own direction on every flow: ``src_bytes`` when it is
the originator, ``dst_bytes`` when it is the responder.

``node_gid`` comes from a persistent :class:`NodeIdMap` shared across windows,
so a temporal model can follow an endpoint. ``edge_dt_prev`` is the time since
the same *source* endpoint's previous flow (event-time order, ties by row),
carried across windows by state held in the builder; -1 when there is none
(first sighting, or the endpoint was evicted from the id map).
"""
from __future__ import annotations

import gc
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch_geometric.data import Data

from ingest.features import INPUT_COLUMNS, FlowPreprocessor, _np
from ingest.windows import EventTimeWindower, Window, Windower

log = logging.getLogger(__name__)

NODE_MODES = ("ip", "ipport", "as")
_GRAPH_COLUMNS = frozenset(
    ["row", "ts", "src_ip", "dst_ip", "src_port", "dst_port", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts", "label"]
)
_US = 1_000_000


class NodeIdMap:
    """Stable endpoint key -> integer id, with least-recently-used eviction.

    Rule: ids come from a counter and are **never reused**. When the map holds
    more than ``capacity`` keys, the least recently seen keys are evicted; an
    evicted endpoint that comes back gets a *new* id (so an id always means one
    endpoint, but an endpoint may change id after being forgotten). Keys seen in
    the current :meth:`lookup` call are never evicted by that call; if one call
    alone brings more than ``capacity`` keys the map overflows temporarily
    (``overflows`` counts it) and shrinks back on later calls.

    Each key also owns a *slot* in ``[0, capacity)`` (reused after eviction)
    that builders use to index per-endpoint state arrays.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self._map: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._free: list[int] = []
        self._next_gid = 0
        self._next_slot = 0
        self.evictions = 0
        self.overflows = 0

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def get(self, key: str) -> int | None:
        """The id of ``key`` without touching its recency (None when unknown)."""
        v = self._map.get(key)
        return None if v is None else v[0]

    @property
    def num_slots(self) -> int:
        return self._next_slot

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, slots) as int64 arrays for **distinct** ``keys``; assigns ids to new keys."""
        m = self._map
        n = len(keys)
        gids = np.empty(n, dtype=np.int64)
        slots = np.empty(n, dtype=np.int64)
        new: list[int] = []
        for i, k in enumerate(keys):
            v = m.get(k)
            if v is None:
                new.append(i)
            else:
                m.move_to_end(k)
                gids[i], slots[i] = v
        excess = len(m) + len(new) - self.capacity
        if excess > 0:
            # Keys touched above sit at the end; only untouched ones are evicted.
            evictable = len(m) - (n - len(new))
            for _ in range(min(excess, evictable)):
                _, (_, slot) = m.popitem(last=False)
                self._free.append(slot)
            self.evictions += min(excess, evictable)
            if excess > evictable:
                self.overflows += 1
                log.warning(
                    "NodeIdMap: one window has %d endpoints, more than capacity %d; raise capacity",
                    n, self.capacity,
                )
        for i in new:
            slot = self._free.pop() if self._free else self._next_slot
            if slot == self._next_slot:
                self._next_slot += 1
            m[keys[i]] = (self._next_gid, slot)
            gids[i], slots[i] = self._next_gid, slot
            self._next_gid += 1
        # Overflow from an earlier call shrinks back once keys are untouched.
        return gids, slots

    def ids(self, keys: Sequence[str] | pa.Array) -> np.ndarray:
        """Ids for any keys (repeats allowed), assigning new ones as needed."""
        enc = pc.dictionary_encode(pa.array(keys, pa.string()) if not isinstance(keys, pa.Array) else keys)
        gids, _ = self.lookup(enc.dictionary.to_pylist())
        return gids[enc.indices.to_numpy(zero_copy_only=False)]

    def to_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "next_gid": self._next_gid,
            "keys": list(self._map.keys()),  # least recent first
            "gids": [v[0] for v in self._map.values()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> NodeIdMap:
        m = cls(int(d["capacity"]))
        for slot, (k, g) in enumerate(zip(d["keys"], d["gids"])):
            m._map[k] = (int(g), slot)
        m._next_slot = len(m._map)
        m._next_gid = int(d["next_gid"])
        return m

    def save(self, path: str | Path) -> None:
        """Persist ids (not builder state) so a restarted daemon keeps node identities."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> NodeIdMap:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _col(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _num(table: pa.Table, name: str) -> np.ndarray:
    """Numeric column as float64; null, NaN, inf and negatives as 0 (NumPy, not Arrow kernels: see features._np)."""
    if name not in table.column_names:
        return np.zeros(table.num_rows)
    v = np.asarray(_np(_col(table, name)), dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, 0.0)


def _endpoint_keys(table: pa.Table, side: str, mode: str) -> pa.Array:
    ip = _col(table, f"{side}_ip")
    if ip.type != pa.string():
        ip = pc.cast(ip, pa.string())
    if ip.null_count:
        ip = pc.fill_null(ip, "-")
    if mode in ("ip", "as"):
        return ip
    port = _col(table, f"{side}_port") if f"{side}_port" in table.column_names else pa.nulls(len(ip), pa.int32())
    v6 = pc.match_substring(ip, ":")
    host = pc.if_else(v6, pc.binary_join_element_wise("[", ip, "]", ""), ip)
    joined = pc.binary_join_element_wise(host, pc.cast(port, pa.string()), ":")  # null when port is null
    return pc.coalesce(joined, ip)


def _data(**attrs: object) -> Data:
    """``Data(**attrs)`` without PyG's per-attribute ``__setattr__`` bookkeeping.

    Building ~40-flow windows made ``Data.__init__`` (~130 us for 13 attributes)
    the bottleneck; filling the storage mapping directly is ~10x faster and gives
    the same object (``test_graph`` checks both paths agree). Falls back to the
    public constructor if PyG's storage layout ever changes.
    """
    d = Data()
    mapping = getattr(getattr(d, "_store", None), "_mapping", None)
    if isinstance(mapping, dict):
        mapping.update(attrs)
        return d
    return Data(**attrs)


def _distinct_per(owner: np.ndarray, other: np.ndarray, base: int, n: int) -> np.ndarray:
    """For each owner in [0, n): how many distinct ``other`` values (in [0, base)) it has."""
    if owner.size == 0:
        return np.zeros(n)
    u = np.unique(owner.astype(np.int64) * base + other.astype(np.int64))
    return np.bincount(u // base, minlength=n).astype(np.float64)


class GraphBuilder:
    """Window of flows -> ``torch_geometric.data.Data`` (see module docstring).

    Args:
        node_mode: ``"ip"``, ``"ipport"`` or ``"as"`` (default ``"ip"``).
        preprocessor: fitted :class:`~ingest.features.FlowPreprocessor` for
            ``edge_attr``; None gives ``edge_attr`` of shape ``[E, 0]``.
        id_map: a shared :class:`NodeIdMap` (default: a new one, capacity 1M).
    """

    NODE_FEATURES = (
        "log_out_degree",
        "log_in_degree",
        "log_distinct_dst_peers",
        "log_distinct_src_peers",
        "log_distinct_dst_ports_out",
        "log_distinct_dst_ports_in",
        "log_bytes_sent",
        "log_bytes_received",
        "log_pkts_sent",
        "log_pkts_received",
    )

    def __init__(
        self,
        node_mode: str = "ip",
        preprocessor: FlowPreprocessor | None = None,
        id_map: NodeIdMap | None = None,
    ) -> None:
        if node_mode not in NODE_MODES:
            raise ValueError(f"node_mode must be one of {', '.join(NODE_MODES)}; got {node_mode!r}")
        self.node_mode = node_mode
        self.preprocessor = preprocessor
        self.id_map = id_map if id_map is not None else NodeIdMap()
        self.reset_state()

    def reset_state(self) -> None:
        """Forget per-endpoint temporal state (``edge_dt_prev`` restarts at -1)."""
        self._last_ts = np.zeros(0, dtype=np.int64)   # per id-map slot: last flow start, us
        self._owner = np.zeros(0, dtype=np.int64)     # gid owning that slot's state, -1 none

    def _grow(self, size: int) -> None:
        if size > self._last_ts.size:
            new = max(size, 2 * self._last_ts.size, 1024)
            self._last_ts = np.concatenate([self._last_ts, np.zeros(new - self._last_ts.size, np.int64)])
            self._owner = np.concatenate([self._owner, np.full(new - self._owner.size, -1, np.int64)])

    def build(self, window: Window) -> Data:
        """The graph of one window; call in window order so ``edge_dt_prev`` is right."""
        return self.build_many([window])[0]

    def build_many(self, windows: Sequence[Window]) -> list[Data]:
        """Graphs of several consecutive windows (in window order), vectorised across them.

        Same result as calling :meth:`build` on each in turn (tested), but the
        per-call overhead (NumPy/Arrow dispatch, feature transform) is paid once:
        a 60 s window of LUFlow holds only ~40 flows, and one-window calls are
        ~15x slower per record there. :func:`iter_window_graphs` uses it.
        (One exception: a sliding-window record that was late for its first
        window but landed in a later one of the same call can be the
        ``edge_dt_prev`` predecessor of flows in the earlier window.)
        """
        if not windows:
            return []
        # Thousands of small tensors and Data objects in a row make Python's cyclic GC
        # rescan them over and over (it was a third of the time); they form no cycles.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._build_many(windows)
        finally:
            if was_enabled:
                gc.enable()

    def _build_many(self, windows: Sequence[Window]) -> list[Data]:
        W = len(windows)
        tables = [w.table for w in windows]
        if W == 1:
            t = tables[0]
        else:
            try:
                t = pa.concat_tables(tables)
            except pa.ArrowInvalid:
                t = pa.concat_tables(tables, promote_options="permissive")
        # Only the columns we read, in one contiguous chunk: windows arrive as many small
        # pieces, and every Arrow kernel call per chunk costs more than the work itself.
        needed = [c for c in t.column_names if c in _GRAPH_COLUMNS or self.preprocessor is not None and c in INPUT_COLUMNS]
        t = t.select(needed).combine_chunks()
        sizes = np.fromiter((x.num_rows for x in tables), dtype=np.int64, count=W)
        E = int(sizes.sum())
        off = np.zeros(W + 1, dtype=np.int64)
        np.cumsum(sizes, out=off[1:])
        wid = np.repeat(np.arange(W, dtype=np.int64), sizes)
        e = np.arange(E, dtype=np.int64)

        # Endpoint keys -> global dictionary codes.
        enc = pc.dictionary_encode(
            pa.concat_arrays([_endpoint_keys(t, "src", self.node_mode), _endpoint_keys(t, "dst", self.node_mode)])
        )
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        C = max(len(enc.dictionary), 1)
        # Nodes are (window, key) pairs numbered by first appearance inside their window:
        # the window's src entries in row order, then its dst entries.
        pos_s = off[wid] + e
        pos_d = pos_s + sizes[wid]
        comp = np.empty(2 * E, dtype=np.int64)
        comp[pos_s] = wid * C + codes[:E]
        comp[pos_d] = wid * C + codes[E:]
        uniq, first, inv = np.unique(comp, return_index=True, return_inverse=True)
        appear = np.argsort(first, kind="stable")
        rank = np.empty_like(appear)
        rank[appear] = np.arange(appear.size)
        node_of = rank[inv.reshape(-1)]
        node_comp = uniq[appear]
        node_code = node_comp % C
        node_w = node_comp // C
        U = int(node_comp.size)
        node_off = np.searchsorted(node_w, np.arange(W + 1))
        src, dst = node_of[pos_s], node_of[pos_d]  # global node index per edge

        # Stable ids, window by window so LRU recency matches one-window-at-a-time use.
        all_keys = enc.dictionary.take(pa.array(node_code)).to_pylist()  # one conversion, sliced per window
        gids = np.empty(U, dtype=np.int64)
        slots = np.empty(U, dtype=np.int64)
        keys_per_window: list[list[str]] = []
        bounds = node_off.tolist()
        for w in range(W):
            a, b = bounds[w], bounds[w + 1]
            keys = all_keys[a:b]
            keys_per_window.append(keys)
            gids[a:b], slots[a:b] = self.id_map.lookup(keys)

        x = self._node_features(t, src, dst, U)
        ts_col = _col(t, "ts")
        if ts_col.null_count:
            raise ValueError("window has records with a null ts; EventTimeWindower keeps those in its `invalid` output")
        if ts_col.type != pa.timestamp("us", tz="UTC") and ts_col.type != pa.timestamp("us"):
            ts_col = pc.cast(ts_col, pa.timestamp("us", tz="UTC"))
        ts = np.asarray(_np(ts_col.view(pa.int64())), dtype=np.int64)
        rows = np.array(_np(_col(t, "row")), dtype=np.int64)
        dt_prev = self._dt_prev(windows[-1], src, ts, rows, gids, slots)
        starts = np.array([int(round(w.start * _US)) for w in windows], dtype=np.int64)
        dt_window = ((ts - starts[wid]) / _US).astype(np.float32)
        if "label" in t.column_names:
            lab = np.asarray(_np(_col(t, "label")))
            label = np.where(np.isnan(lab), -1, lab).astype(np.int64) if lab.dtype.kind == "f" else lab.astype(np.int64)
        else:
            label = np.full(E, -1, dtype=np.int64)
        if self.preprocessor is not None:
            edge_attr = torch.from_numpy(self.preprocessor.transform(t))
        else:
            edge_attr = torch.zeros((E, 0), dtype=torch.float32)

        # Big tensors once; each graph gets views of its slice (torch.split: no Python slicing loop).
        # edge_index is laid out window by window as [src_w..., dst_w...], so each [2, E_w] view is contiguous.
        ei_flat = np.empty(2 * E, dtype=np.int64)
        ei_flat[pos_s] = src - node_off[wid]
        ei_flat[pos_d] = dst - node_off[wid]
        esz, nsz = sizes.tolist(), np.diff(node_off).tolist()
        xs = torch.split(torch.from_numpy(x.astype(np.float32)), nsz)
        gid_s = torch.split(torch.from_numpy(gids), nsz)
        eis = torch.split(torch.from_numpy(ei_flat), [2 * k for k in esz])
        ea_s = torch.split(edge_attr, esz)
        ts_s = torch.split(torch.from_numpy(ts / _US), esz)
        dtw_s = torch.split(torch.from_numpy(dt_window), esz)
        dtp_s = torch.split(torch.from_numpy(dt_prev), esz)
        row_s = torch.split(torch.from_numpy(rows), esz)
        lab_s = torch.split(torch.from_numpy(label), esz)
        out: list[Data] = []
        for w, win in enumerate(windows):
            out.append(
                _data(
                    x=xs[w],                                   # [N, F_node]
                    edge_index=eis[w].view(2, esz[w]),         # [2, E] src -> dst
                    edge_attr=ea_s[w],                         # [E, F]
                    edge_ts=ts_s[w],                           # [E] float64 epoch s
                    edge_dt_window=dtw_s[w],                   # [E]
                    edge_dt_prev=dtp_s[w],                     # [E], -1 none
                    edge_row=row_s[w],                         # [E]
                    edge_label=lab_s[w],                       # [E] NOT a feature
                    node_gid=gid_s[w],                         # [N]
                    node_key=keys_per_window[w],
                    window_start=float(win.start),
                    window_end=float(win.end),
                    num_nodes=nsz[w],
                )
            )
        return out

    @staticmethod
    def _node_features(t: pa.Table, src: np.ndarray, dst: np.ndarray, U: int) -> np.ndarray:
        """log1p counts per (window, endpoint) node; see ``NODE_FEATURES``."""
        sb, db = _num(t, "src_bytes"), _num(t, "dst_bytes")
        sp, dp = _num(t, "src_pkts"), _num(t, "dst_pkts")
        x = np.empty((U, len(GraphBuilder.NODE_FEATURES)), dtype=np.float64)
        x[:, 0] = np.bincount(src, minlength=U)
        x[:, 1] = np.bincount(dst, minlength=U)
        # Nodes never span windows, so distinct pairs of global node indices are per window.
        x[:, 2] = _distinct_per(src, dst, max(U, 1), U)
        x[:, 3] = _distinct_per(dst, src, max(U, 1), U)
        if "dst_port" in t.column_names:
            pf = np.asarray(_np(_col(t, "dst_port")), dtype=np.float64)  # nulls -> NaN
            has = np.isfinite(pf)
            pv = np.where(has, pf, 0).astype(np.int64) & 0xFFFF
            x[:, 4] = _distinct_per(src[has], pv[has], 65536, U)
            x[:, 5] = _distinct_per(dst[has], pv[has], 65536, U)
        else:
            x[:, 4:6] = 0.0
        x[:, 6] = np.bincount(src, weights=sb, minlength=U) + np.bincount(dst, weights=db, minlength=U)
        x[:, 7] = np.bincount(src, weights=db, minlength=U) + np.bincount(dst, weights=sb, minlength=U)
        x[:, 8] = np.bincount(src, weights=sp, minlength=U) + np.bincount(dst, weights=dp, minlength=U)
        x[:, 9] = np.bincount(src, weights=dp, minlength=U) + np.bincount(dst, weights=sp, minlength=U)
        return np.log1p(x, out=x)

    def _dt_prev(
        self, last: Window, src: np.ndarray, ts: np.ndarray, rows: np.ndarray, gids: np.ndarray, slots: np.ndarray
    ) -> np.ndarray:
        """Seconds since the same source endpoint's previous flow; updates the carried state.

        The previous flow is the one before it in (event time, row) order among the
        flows of that endpoint (same id) placed in windows so far. A flow repeated by
        overlapping windows (same id, ts and row) counts once.
        """
        E = src.size
        out = np.full(E, -1.0, dtype=np.float32)
        if E == 0:
            return out
        eg, es = gids[src], slots[src]
        order = np.lexsort((rows, ts, eg))
        g, t, r = eg[order], ts[order], rows[order]
        new = np.ones(E, dtype=bool)
        new[1:] = (g[1:] != g[:-1]) | (t[1:] != t[:-1]) | (r[1:] != r[:-1])
        fi = np.flatnonzero(new)            # first entry of each distinct flow
        fg, ft = g[fi], t[fi]
        dt = np.empty(fi.size, dtype=np.float64)
        dt[1:] = (ft[1:] - ft[:-1]) / _US
        head = np.ones(fi.size, dtype=bool)  # first flow of its endpoint in this call
        head[1:] = fg[1:] != fg[:-1]
        self._grow(int(slots.max()) + 1)
        hs = es[order][fi[head]]
        known = (self._owner[hs] == fg[head]) & (self._last_ts[hs] <= ft[head])
        dt[head] = np.where(known, (ft[head] - self._last_ts[hs]) / _US, -1.0)
        flow_of = np.cumsum(new) - 1
        out[order] = dt[flow_of].astype(np.float32)

        # Carry each endpoint's last flow *before the next window starts*: with sliding
        # windows the next window repeats the flows after that point, and they must not
        # become their own predecessors.
        slide = last.slide if last.slide is not None else last.end - last.start
        cutoff = int(round((last.start + slide) * _US))
        keep = ft < cutoff
        if keep.any():
            kg, kt, ks = fg[keep], ft[keep], es[order][fi][keep]
            tail = np.ones(kg.size, dtype=bool)
            tail[:-1] = kg[1:] != kg[:-1]
            kg, kt, ks = kg[tail], kt[tail], ks[tail]
            # Two ids sharing a slot (eviction inside this call): the newer id wins.
            _, pick = np.unique(ks[::-1], return_index=True)
            pick = kg.size - 1 - pick
            self._last_ts[ks[pick]] = kt[pick]
            self._owner[ks[pick]] = kg[pick]
        return out


def iter_window_graphs(
    batches: Iterable[pa.RecordBatch | pa.Table],
    windower: Windower,
    builder: GraphBuilder,
    lateness: float = 10.0,
    windowing: EventTimeWindower | None = None,
) -> Iterator[tuple[Window, Data]]:
    """Window a stream of batches and yield ``(window, graph)`` in window order, flushing at the end."""
    w = windowing if windowing is not None else EventTimeWindower(windower, lateness=lateness)
    for b in batches:
        closed = w.push(b)
        yield from zip(closed, builder.build_many(closed))
    closed = w.flush()
    yield from zip(closed, builder.build_many(closed))

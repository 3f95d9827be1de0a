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

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch_geometric.data import Data

from ingest.features import FlowPreprocessor
from ingest.windows import EventTimeWindower, Window, Windower

log = logging.getLogger(__name__)

NODE_MODES = ("ip", "ipport", "as")
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
    def from_dict(cls, d: dict) -> "NodeIdMap":
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
    def load(cls, path: str | Path) -> "NodeIdMap":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _col(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _num(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows)
    v = pc.fill_null(pc.cast(_col(table, name), pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    return np.where(np.isfinite(v) & (v > 0), v, 0.0)


def _endpoint_keys(table: pa.Table, side: str, mode: str) -> pa.Array:
    ip = pc.fill_null(pc.cast(_col(table, f"{side}_ip"), pa.string()), "-")
    if mode in ("ip", "as"):
        return ip
    port = _col(table, f"{side}_port") if f"{side}_port" in table.column_names else pa.nulls(len(ip), pa.int32())
    v6 = pc.match_substring(ip, ":")
    host = pc.if_else(v6, pc.binary_join_element_wise("[", ip, "]", ""), ip)
    joined = pc.binary_join_element_wise(host, pc.cast(port, pa.string()), ":")  # null when port is null
    return pc.coalesce(joined, ip)


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
        t = window.table
        E = t.num_rows
        src_key = _endpoint_keys(t, "src", self.node_mode)
        dst_key = _endpoint_keys(t, "dst", self.node_mode)
        enc = pc.dictionary_encode(pa.concat_arrays([src_key, dst_key]))
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        node_key: list[str] = enc.dictionary.to_pylist()
        N = len(node_key)
        src, dst = codes[:E], codes[E:]
        gids, slots = self.id_map.lookup(node_key)

        # Node features: counts per endpoint in this window.
        sb, db = _num(t, "src_bytes"), _num(t, "dst_bytes")
        sp, dp = _num(t, "src_pkts"), _num(t, "dst_pkts")
        x = np.empty((N, len(self.NODE_FEATURES)), dtype=np.float64)
        x[:, 0] = np.bincount(src, minlength=N)
        x[:, 1] = np.bincount(dst, minlength=N)
        x[:, 2] = _distinct_per(src, dst, max(N, 1), N)
        x[:, 3] = _distinct_per(dst, src, max(N, 1), N)
        if "dst_port" in t.column_names:
            port = _col(t, "dst_port")
            has = pc.is_valid(port).to_numpy(zero_copy_only=False)
            pv = pc.fill_null(port, 0).to_numpy(zero_copy_only=False).astype(np.int64) & 0xFFFF
            x[:, 4] = _distinct_per(src[has], pv[has], 65536, N)
            x[:, 5] = _distinct_per(dst[has], pv[has], 65536, N)
        else:
            x[:, 4:6] = 0.0
        x[:, 6] = np.bincount(src, weights=sb, minlength=N) + np.bincount(dst, weights=db, minlength=N)
        x[:, 7] = np.bincount(src, weights=db, minlength=N) + np.bincount(dst, weights=sb, minlength=N)
        x[:, 8] = np.bincount(src, weights=sp, minlength=N) + np.bincount(dst, weights=dp, minlength=N)
        x[:, 9] = np.bincount(src, weights=dp, minlength=N) + np.bincount(dst, weights=sp, minlength=N)
        np.log1p(x, out=x)

        # Times.
        ts = pc.cast(_col(t, "ts"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        start_us = int(round(window.start * _US))
        dt_prev = self._dt_prev(window, src, ts, gids, slots)

        rows = _col(t, "row").to_numpy(zero_copy_only=False).astype(np.int64)
        if "label" in t.column_names:
            label = pc.fill_null(pc.cast(_col(t, "label"), pa.int64()), -1).to_numpy(zero_copy_only=False)
        else:
            label = np.full(E, -1, dtype=np.int64)
        if self.preprocessor is not None:
            edge_attr = torch.from_numpy(self.preprocessor.transform(t))
        else:
            edge_attr = torch.zeros((E, 0), dtype=torch.float32)

        return Data(
            x=torch.from_numpy(x.astype(np.float32)),
            edge_index=torch.from_numpy(np.stack([src, dst])),  # [2, E] src -> dst
            edge_attr=edge_attr,  # [E, F]
            edge_ts=torch.from_numpy(ts / _US),  # [E] float64 epoch s
            edge_dt_window=torch.from_numpy(((ts - start_us) / _US).astype(np.float32)),
            edge_dt_prev=torch.from_numpy(dt_prev),
            edge_row=torch.from_numpy(rows),
            edge_label=torch.from_numpy(np.array(label, dtype=np.int64)),  # NOT a feature
            node_gid=torch.from_numpy(gids),
            node_key=node_key,
            window_start=float(window.start),
            window_end=float(window.end),
            num_nodes=N,
        )

    def _dt_prev(self, window: Window, src: np.ndarray, ts: np.ndarray, gids: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Seconds since the same source endpoint's previous flow; updates the carried state."""
        E = src.size
        out = np.full(E, -1.0, dtype=np.float32)
        if E == 0:
            return out
        rows = np.arange(E)
        order = np.lexsort((rows, ts, src))  # by source, then event time, then row
        s, t = src[order], ts[order]
        first = np.ones(E, dtype=bool)
        first[1:] = s[1:] != s[:-1]
        dt = np.empty(E, dtype=np.float64)
        dt[1:] = (t[1:] - t[:-1]) / _US
        # First flow of each source in this window: look at the state carried from earlier windows.
        self._grow(int(slots.max()) + 1 if slots.size else 0)
        fs = slots[s[first]]
        known = (self._owner[fs] == gids[s[first]]) & (self._last_ts[fs] <= t[first])
        dt[first] = np.where(known, (t[first] - self._last_ts[fs]) / _US, -1.0)
        out[order] = dt.astype(np.float32)

        # Carry forward each source's last flow *before the next window starts*: with
        # sliding windows the next window repeats the flows after that point, and
        # they must not count as their own predecessors.
        slide = window.slide if window.slide is not None else window.end - window.start
        cutoff = int(round((window.start + slide) * _US))
        keep = t < cutoff
        if keep.any():
            s_k, t_k = s[keep], t[keep]
            last = np.ones(s_k.size, dtype=bool)
            last[:-1] = s_k[1:] != s_k[:-1]
            ls = slots[s_k[last]]
            self._last_ts[ls] = t_k[last]
            self._owner[ls] = gids[s_k[last]]
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
        for win in w.push(b):
            yield win, builder.build(win)
    for win in w.flush():
        yield win, builder.build(win)

"""Minimal stand-ins for ``ingest.features.FlowPreprocessor``, ``ingest.graph.GraphBuilder`` /
``NodeIdMap`` and ``ingest.windows.Window``, following docs/CONTRACTS.md.

They are used only when the ``ingest`` implementations cannot be imported (the
detector was developed in parallel with them); the bundle records which
implementation it was trained with and loads the same one.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Data

NUMERIC = ("duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts", "src_ip_bytes", "dst_ip_bytes",
           "syn_count", "rst_count", "entropy")
CATEGORICAL = {"proto": 4, "conn_state": 8, "service": 8}


@dataclass
class Window:
    """Same shape as ``ingest.windows.Window``."""

    start: float
    end: float
    table: pa.Table


def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


class FallbackPreprocessor:
    """log1p + standardise numeric columns, one-hot the most frequent categories, port buckets."""

    impl = "fallback"

    def __init__(self) -> None:
        self.mean_: list[float] = []
        self.std_: list[float] = []
        self.cats_: dict[str, list[str]] = {}

    def _numeric(self, table: pa.Table) -> np.ndarray:
        cols = []
        for n in NUMERIC:
            v = np.array([np.nan if x is None else float(x) for x in _col(table, n)], dtype=np.float64)
            cols.append(np.log1p(np.clip(np.nan_to_num(v, nan=0.0), 0, None)))
            cols.append(np.isnan(v).astype(np.float64))
        return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))

    def fit(self, tables) -> "FallbackPreprocessor":
        tables = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
        big = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        num = self._numeric(big)
        self.mean_ = num.mean(axis=0).tolist()
        self.std_ = (num.std(axis=0) + 1e-6).tolist()
        for c, k in CATEGORICAL.items():
            vals, counts = np.unique([str(x) for x in _col(big, c)], return_counts=True)
            self.cats_[c] = [str(v) for v in vals[np.argsort(-counts)][:k]]
        return self

    @property
    def feature_names(self) -> list[str]:
        names = [f"{n}{s}" for n in NUMERIC for s in ("", "_isnull")]
        for c, vals in self.cats_.items():
            names += [f"{c}={v}" for v in vals] + [f"{c}=other"]
        return names + ["dst_port<1024", "dst_port<49152", "dst_port_null"]

    def transform(self, table) -> np.ndarray:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        num = (self._numeric(table) - np.asarray(self.mean_)) / np.asarray(self.std_)
        parts = [num]
        for c, vals in self.cats_.items():
            col = [str(x) for x in _col(table, c)]
            oh = np.zeros((table.num_rows, len(vals) + 1))
            idx = {v: i for i, v in enumerate(vals)}
            for r, v in enumerate(col):
                oh[r, idx.get(v, len(vals))] = 1.0
            parts.append(oh)
        port = np.array([-1 if p is None else p for p in _col(table, "dst_port")])
        parts.append(np.stack([(port >= 0) & (port < 1024), (port >= 1024) & (port < 49152), port < 0], 1))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump({"impl": self.impl, "mean": self.mean_, "std": self.std_, "cats": self.cats_}, f)

    @classmethod
    def load(cls, path) -> "FallbackPreprocessor":
        with open(path) as f:
            d = json.load(f)
        p = cls()
        p.mean_, p.std_, p.cats_ = d["mean"], d["std"], d["cats"]
        return p


class FallbackIdMap:
    """Stable endpoint -> int id with LRU eviction (ids of evicted keys are not reused)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, int] = OrderedDict()
        self._next = 0

    def get(self, key: str) -> int:
        if key in self._ids:
            self._ids.move_to_end(key)
            return self._ids[key]
        self._ids[key] = self._next
        self._next += 1
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return self._ids[key]


class FallbackGraphBuilder:
    """Window -> Data with the fields of the contract (node_mode 'ip' or 'ipport')."""

    def __init__(self, node_mode: str = "ip", preprocessor=None, id_map=None) -> None:
        if node_mode not in ("ip", "ipport", "as"):
            raise ValueError(f"node_mode must be ip, ipport or as, got {node_mode!r}")
        self.node_mode = node_mode
        self.pre = preprocessor
        self.ids = id_map or FallbackIdMap()
        self._last: dict[str, float] = {}

    def build(self, window) -> Data:
        t = window.table
        src, dst = _col(t, "src_ip"), _col(t, "dst_ip")
        if self.node_mode == "ipport":
            dst = [f"{d}:{p}" for d, p in zip(dst, _col(t, "dst_port"))]
        keys: dict[str, int] = {}
        ei = np.zeros((2, t.num_rows), dtype=np.int64)
        for i, (s, d) in enumerate(zip(src, dst)):
            ei[0, i] = keys.setdefault(str(s), len(keys))
            ei[1, i] = keys.setdefault(str(d), len(keys))
        node_key = list(keys)
        n = len(node_key)
        ts = t.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6 if t.num_rows else np.zeros(0)
        dt_prev = np.full(t.num_rows, -1.0)
        for i in np.argsort(ts, kind="stable"):
            k = str(src[i])
            if k in self._last:
                dt_prev[i] = max(0.0, ts[i] - self._last[k])
            self._last[k] = max(ts[i], self._last.get(k, ts[i]))
        outd = np.bincount(ei[0], minlength=n).astype(np.float32)
        ind = np.bincount(ei[1], minlength=n).astype(np.float32)
        x = np.stack([np.log1p(outd), np.log1p(ind)], axis=1)
        labels = [(-1 if v is None else int(v)) for v in _col(t, "label")]
        ea = self.pre.transform(t) if self.pre is not None else np.zeros((t.num_rows, 0), np.float32)
        return Data(
            x=torch.from_numpy(x), edge_index=torch.from_numpy(ei), edge_attr=torch.from_numpy(ea),
            edge_ts=torch.from_numpy(ts), edge_dt_window=torch.from_numpy((ts - window.start).astype(np.float32)),
            edge_dt_prev=torch.from_numpy(dt_prev.astype(np.float32)),
            edge_row=torch.as_tensor(_col(t, "row"), dtype=torch.long),
            edge_label=torch.as_tensor(labels, dtype=torch.long),
            node_gid=torch.as_tensor([self.ids.get(k) for k in node_key], dtype=torch.long),
            node_key=node_key, window_start=float(window.start), window_end=float(window.end), num_nodes=n,
        )


def tumbling_windows(table: pa.Table, size: float) -> list[Window]:
    """Cut a table into tumbling event-time windows (rows in ``row`` order inside a window)."""
    if table.num_rows == 0:
        return []
    ts = table.column("ts").cast(pa.int64()).to_numpy() / 1e6
    wid = np.floor(ts / size).astype(np.int64)
    out = []
    for w in np.unique(wid):
        idx = np.nonzero(wid == w)[0]
        sub = table.take(pa.array(idx))
        order = np.argsort(sub.column("row").to_numpy(), kind="stable")
        out.append(Window(float(w * size), float((w + 1) * size), sub.take(pa.array(order))))
    return out

"""Transaction windows as heterogeneous graphs with persistent per-node history.

A window of ``TX_SCHEMA`` rows becomes a :class:`torch_geometric.data.HeteroData`
with ``customer`` and ``terminal`` nodes and one ``('customer', 'pays', 'terminal')``
edge per transaction (plus the reverse relation ``('terminal', 'rev_pays', 'customer')``
sharing the same edge features). **Edge i is row i of the window table.**

The builder keeps state across windows so that a node's history counts, the way
the Fraud Detection Handbook's best features do:

* customer spending: number of transactions and mean amount over 1/7/30 days,
  including the current transaction and earlier ones of the same window;
* terminal fraud risk over 1/7/30 days **with a delay** for label latency.

History is kept in per-node ring buffers of daily bins (UTC calendar days).
Definitions, for a transaction at time ``t`` on day ``d``:

* ``cust_nb_w`` / ``cust_avg_w``: the customer's transactions on days
  ``d-w+1 .. d`` with time <= t (the current one included). ``w=1`` is therefore
  "today so far", not "the last 24 h" (the handbook's pandas rolling window) —
  a documented simplification that makes the state O(nodes x 40) numbers.
* ``term_nb_w`` / ``term_risk_w``: the terminal's transactions on days
  ``d-D-w .. d-D-1`` where ``D = label_delay_s // 86400`` and the fraction of them
  whose fraud label is *known*.

Label-latency rule: the label of a transaction at time ``s`` becomes known at
``s + label_delay_s``. Fraud labels enter the terminal bins only when released,
and they are released at the start of each day chunk only if ``known_at <= t0``
(t0 = earliest time of the chunk). Any label not yet known at ``t`` can therefore
never influence a feature at ``t`` (``tests/ingest/fraud/test_graph_latency.py``).
Labels never enter any other feature.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch_geometric.data import HeteroData

log = logging.getLogger(__name__)

DAY = 86400.0
RING = 40  # daily bins per node: 30-day windows + 7-day delay + slack
WINDOWS_DAYS = (1, 7, 30)
NO_PREV_HOURS = 720.0  # "no previous transaction" is treated as 30 days ago

# Edge features fed to the model (log-scaled); groups are used by the synthesiser.
EDGE_FEATURES = [
    "log_amount", "amount_ratio_7", "amount_ratio_30",          # amount group
    "tod_sin", "tod_cos", "is_weekend", "is_night",             # time group
    "cust_nb_1", "cust_nb_7", "cust_nb_30",                     # customer group
    "cust_avg_1", "cust_avg_7", "cust_avg_30", "cust_dt_prev",
    "term_nb_1", "term_nb_7", "term_nb_30",                     # terminal group
    "term_risk_1", "term_risk_7", "term_risk_30", "term_dt_prev",
]
FEATURE_GROUPS = {
    "amount": [0, 1, 2],
    "time": [3, 4, 5, 6],
    "customer": [7, 8, 9, 10, 11, 12, 13],
    "terminal": [14, 15, 16, 17, 18, 19, 20],
}
# The handbook's 15 engineered features (raw scale), used by the baselines.
HANDBOOK_FEATURES = [
    "TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW", "CUSTOMER_ID_NB_TX_7DAY_WINDOW", "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW", "TERMINAL_ID_NB_TX_7DAY_WINDOW", "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW", "TERMINAL_ID_RISK_7DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW",
]
CUSTOMER_NODE_FEATURES = ["nb_1", "nb_7", "nb_30", "avg_1", "avg_7", "avg_30"]
TERMINAL_NODE_FEATURES = ["nb_1", "nb_7", "nb_30", "risk_1", "risk_7", "risk_30"]


@dataclass
class TxFeatures:
    """Per-transaction features of one window, in window row order."""

    edge: np.ndarray          # float32 [E, len(EDGE_FEATURES)]
    handbook: np.ndarray      # float32 [E, 15] raw handbook features
    cust: np.ndarray          # int64 [E] stable customer ids
    term: np.ndarray          # int64 [E] stable terminal ids
    ts: np.ndarray            # float64 [E] epoch seconds
    cust_x: np.ndarray        # float32 [n_cust_ids_used, 6] state at chunk start, indexed by position in `cust_ids`
    term_x: np.ndarray
    cust_ids: np.ndarray      # unique customer gids in this window (sorted)
    term_ids: np.ndarray


class _IdMap:
    """String id -> stable int id (grows; no eviction: FDH-sized populations fit easily)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.keys: list[str] = []

    def encode(self, col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        # Dictionary-encode first so only the distinct keys of the window go through Python.
        enc = pc.dictionary_encode(col)
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
        uniq = enc.dictionary.to_pylist()
        lut = np.empty(len(uniq), dtype=np.int64)
        for i, k in enumerate(uniq):
            j = self.index.get(k)
            if j is None:
                j = len(self.keys)
                self.index[k] = j
                self.keys.append(k)
            lut[i] = j
        return lut[enc.indices.to_numpy(zero_copy_only=False)]

    def __len__(self) -> int:
        return len(self.keys)


class _DayBins:
    """Per-node ring of daily bins: ``day[node, slot]`` and value arrays ``vals[name][node, slot]``."""

    def __init__(self, names: tuple[str, ...], capacity: int = 1024) -> None:
        self.names = names
        self.day = np.full((capacity, RING), -(10**9), dtype=np.int64)
        self.vals = {n: np.zeros((capacity, RING), dtype=np.float64) for n in names}
        self.last_ts = np.full(capacity, np.nan)

    def ensure(self, n: int) -> None:
        cap = self.day.shape[0]
        if n <= cap:
            return
        new = max(n, cap * 2)
        day = np.full((new, RING), -(10**9), dtype=np.int64)
        day[:cap] = self.day
        self.day = day
        for k, v in self.vals.items():
            nv = np.zeros((new, RING), dtype=np.float64)
            nv[:cap] = v
            self.vals[k] = nv
        lt = np.full(new, np.nan)
        lt[:cap] = self.last_ts
        self.last_ts = lt

    def gather(self, node: np.ndarray, day: np.ndarray, first: int, count: int, name: str) -> np.ndarray:
        """Values of days ``day-first, day-first-1, ..., day-first-count+1`` -> [n, count]."""
        want = day[:, None] - (first + np.arange(count))[None, :]
        slot = want % RING
        rows = node[:, None]
        ok = self.day[rows, slot] == want
        return np.where(ok, self.vals[name][rows, slot], 0.0)

    def add(self, node: np.ndarray, day: int, name_vals: dict[str, np.ndarray]) -> None:
        """Add values for ``node`` (may repeat) on ``day``; recycles stale slots first."""
        slot = day % RING
        stale = self.day[node, slot] != day
        if stale.any():
            s_nodes = np.unique(node[stale])
            self.day[s_nodes, slot] = day
            for v in self.vals.values():
                v[s_nodes, slot] = 0.0
        for k, x in name_vals.items():
            np.add.at(self.vals[k][:, slot], node, x)

    def add_at_days(self, node: np.ndarray, days: np.ndarray, name: str, x: np.ndarray) -> None:
        """Add to existing bins only (bins recycled since are too old to matter: skip)."""
        slot = days % RING
        ok = self.day[node, slot] == days
        np.add.at(self.vals[name], (node[ok], slot[ok]), x[ok])

    def state(self, n: int) -> dict[str, np.ndarray]:
        out = {"day": self.day[:n], "last_ts": self.last_ts[:n]}
        out.update({f"v_{k}": v[:n] for k, v in self.vals.items()})
        return out

    def load(self, st: dict[str, np.ndarray]) -> None:
        n = st["day"].shape[0]
        self.ensure(max(n, 1))
        self.day[:n] = st["day"]
        self.last_ts[:n] = st["last_ts"]
        for k in self.vals:
            self.vals[k][:n] = st[f"v_{k}"]


def _group_prev(keys: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows in time order: stable sort by key; return (order, same_as_prev mask, group start index)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    same = np.zeros(len(k), dtype=bool)
    same[1:] = k[1:] == k[:-1]
    start_flag = ~same
    start_idx = np.maximum.accumulate(np.where(start_flag, np.arange(len(k)), 0))
    return order, same, start_idx


def _group_cumsum(order: np.ndarray, start_idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of ``values`` within groups; result in the original row order."""
    v = values[order]
    cs = np.cumsum(v)
    base = np.where(start_idx > 0, cs[start_idx - 1], 0.0) if len(cs) else cs
    base = np.where(start_idx == 0, 0.0, base)
    out = np.empty_like(cs)
    out[order] = cs - base
    return out


def ts_seconds(table: pa.Table) -> np.ndarray:
    """``ts`` column (timestamp[us, UTC]) as float64 epoch seconds."""
    col = table.column("ts")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e6


class HeteroGraphBuilder:
    """Stateful builder: ``build(window) -> HeteroData``; state persists across windows.

    Args:
        label_delay_s: seconds after a transaction until its fraud label is known
            (default: 7 days, the handbook's delay). Must be a multiple of a day >= 1 day.
        use_labels: take labels from the window's ``label`` column as feedback
            (released after the delay). Turn off when scoring data whose labels the
            deployment would never see.
    """

    def __init__(self, label_delay_s: float = 7 * DAY, use_labels: bool = True) -> None:
        if label_delay_s < DAY or label_delay_s % DAY:
            raise ValueError(f"label_delay_s={label_delay_s!r}: must be a whole number of days >= 1 day")
        self.label_delay_s = float(label_delay_s)
        self.delay_days = int(label_delay_s // DAY)
        if self.delay_days + max(WINDOWS_DAYS) + 1 > RING:
            raise ValueError(f"label_delay_s={label_delay_s!r}: delay + 30 days must fit in {RING} daily bins")
        self.use_labels = use_labels
        self.reset_state()

    # ----------------------------------------------------------------- state
    def reset_state(self) -> None:
        """Forget all history (ids, bins, pending labels)."""
        self.cust_ids = _IdMap()
        self.term_ids = _IdMap()
        self.cust = _DayBins(("n", "amt"))
        self.term = _DayBins(("n", "fraud"))
        # Fraud labels waiting for their delay: terminal gid, day, known_at.
        self.pending = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        self.watermark = -np.inf
        self.labels_released = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream elsewhere (numpy arrays + key lists)."""
        st: dict[str, Any] = {"label_delay_s": self.label_delay_s, "watermark": float(self.watermark)}
        st["cust_keys"] = list(self.cust_ids.keys)
        st["term_keys"] = list(self.term_ids.keys)
        for p, bins, n in (("c_", self.cust, len(self.cust_ids)), ("t_", self.term, len(self.term_ids))):
            st.update({p + k: v.copy() for k, v in bins.state(n).items()})
        st["pending_term"], st["pending_day"], st["pending_known"] = (a.copy() for a in self.pending)
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.reset_state()
        for k in st["cust_keys"]:
            self.cust_ids.index[k] = len(self.cust_ids.keys)
            self.cust_ids.keys.append(k)
        for k in st["term_keys"]:
            self.term_ids.index[k] = len(self.term_ids.keys)
            self.term_ids.keys.append(k)
        for p, bins in (("c_", self.cust), ("t_", self.term)):
            bins.load({k[2:]: np.asarray(v) for k, v in st.items() if k.startswith(p)})
        self.pending = (np.asarray(st["pending_term"], np.int64), np.asarray(st["pending_day"], np.int64),
                        np.asarray(st["pending_known"], np.float64))
        self.watermark = float(st["watermark"])

    # -------------------------------------------------------------- features
    def _release_labels(self, t0: float) -> None:
        term, day, known = self.pending
        if len(known) == 0:
            return
        ready = known <= t0
        if ready.any():
            self.term.add_at_days(term[ready], day[ready], "fraud", np.ones(int(ready.sum())))
            self.labels_released += int(ready.sum())
            self.pending = (term[~ready], day[~ready], known[~ready])

    def _cust_hist(self, node: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Customer bins of days d..d-29 before the current chunk: cumulative count/amount [n, 30]."""
        n = np.cumsum(self.cust.gather(node, day, 0, 30, "n"), axis=1)
        a = np.cumsum(self.cust.gather(node, day, 0, 30, "amt"), axis=1)
        return n, a

    def _term_hist(self, node: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Terminal bins of days d-D-1..d-D-30: cumulative tx count and released-fraud count [n, 30]."""
        n = np.cumsum(self.term.gather(node, day, self.delay_days + 1, 30, "n"), axis=1)
        f = np.cumsum(self.term.gather(node, day, self.delay_days + 1, 30, "fraud"), axis=1)
        return n, f

    def node_state(self, cust: np.ndarray, term: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Node features of customers/terminals as of the current state, on ``day`` (log-scaled)."""
        w = np.array(WINDOWS_DAYS) - 1
        cn, ca = self._cust_hist(cust, np.full(len(cust), day))
        cnw, caw = cn[:, w], ca[:, w]
        cx = np.concatenate([np.log1p(cnw), np.log1p(caw / np.maximum(cnw, 1))], axis=1)
        tn, tf = self._term_hist(term, np.full(len(term), day))
        tnw, tfw = tn[:, w], tf[:, w]
        tx = np.concatenate([np.log1p(tnw), tfw / np.maximum(tnw, 1)], axis=1)
        return cx.astype(np.float32), tx.astype(np.float32)

    def transform(self, table: pa.Table) -> TxFeatures:
        """Features of every row of ``table`` (TX_SCHEMA), advancing the state past it."""
        n = table.num_rows
        ts = ts_seconds(table)
        cust = self.cust_ids.encode(table.column("customer_id"))
        term = self.term_ids.encode(table.column("terminal_id"))
        self.cust.ensure(len(self.cust_ids))
        self.term.ensure(len(self.term_ids))
        amount = table.column("amount").to_numpy(zero_copy_only=False).astype(np.float64)
        amount = np.nan_to_num(amount, nan=0.0)
        if self.use_labels and "label" in table.column_names:
            label = table.column("label").to_numpy(zero_copy_only=False)
            label = np.nan_to_num(np.asarray(label, dtype=np.float64), nan=0.0)
        else:
            label = np.zeros(n)
        day = np.floor(ts / DAY).astype(np.int64)
        edge = np.zeros((n, len(EDGE_FEATURES)), dtype=np.float32)
        hb = np.zeros((n, len(HANDBOOK_FEATURES)), dtype=np.float32)
        cust_u = np.unique(cust)
        term_u = np.unique(term)
        cust_x = term_x = None
        # Time order inside the window (a window is in `row` order, which may differ slightly).
        torder = np.argsort(ts, kind="stable")
        for d in np.unique(day):
            idx = torder[day[torder] == d]           # this day's rows, in time order
            t0 = float(ts[idx[0]])
            self._release_labels(t0)
            if cust_x is None:                        # node state as of the window's first chunk
                cust_x, term_x = self.node_state(cust_u, term_u, int(d))
            c, tm, a, t = cust[idx], term[idx], amount[idx], ts[idx]
            dd = np.full(len(idx), d)
            w = np.array(WINDOWS_DAYS) - 1
            # --- customer spending, history + this chunk's earlier rows (inclusive)
            cn, ca = self._cust_hist(c, dd)
            order, same, start = _group_prev(c, t)
            in_n = _group_cumsum(order, start, np.ones(len(idx)))
            in_a = _group_cumsum(order, start, a)
            nb = cn[:, w] + in_n[:, None]
            avg = (ca[:, w] + in_a[:, None]) / nb
            # dt since the customer's previous transaction (within the chunk, else state)
            prev_t = np.full(len(idx), np.nan)
            ts_sorted = t[order]
            ps = np.full(len(idx), np.nan)
            ps[1:] = ts_sorted[:-1]
            ps[~same] = np.nan
            prev_t[order] = ps
            prev_t = np.where(np.isnan(prev_t), self.cust.last_ts[c], prev_t)
            cust_dt = np.where(np.isnan(prev_t), NO_PREV_HOURS, np.minimum((t - prev_t) / 3600.0, NO_PREV_HOURS))
            # --- terminal risk with delay (labels only through released bins)
            tn, tf = self._term_hist(tm, dd)
            tnb = tn[:, w]
            risk = tf[:, w] / np.maximum(tnb, 1.0)
            order_t, same_t, _ = _group_prev(tm, t)
            pst = np.full(len(idx), np.nan)
            tst = t[order_t]
            pst[1:] = tst[:-1]
            pst[~same_t] = np.nan
            prev_term = np.full(len(idx), np.nan)
            prev_term[order_t] = pst
            prev_term = np.where(np.isnan(prev_term), self.term.last_ts[tm], prev_term)
            term_dt = np.where(np.isnan(prev_term), NO_PREV_HOURS, np.minimum((t - prev_term) / 3600.0, NO_PREV_HOURS))
            # --- time of day / calendar
            tod = (t - d * DAY) / DAY
            weekday = (d + 3) % 7                     # 1970-01-01 was a Thursday
            weekend = float(weekday >= 5)
            night = ((t - d * DAY) < 7 * 3600.0).astype(np.float64)  # handbook: hour <= 6
            e = edge[idx]
            e[:, 0] = np.log1p(a)
            e[:, 1] = np.log1p(a) - np.log1p(avg[:, 1])
            e[:, 2] = np.log1p(a) - np.log1p(avg[:, 2])
            e[:, 3] = np.sin(2 * np.pi * tod)
            e[:, 4] = np.cos(2 * np.pi * tod)
            e[:, 5] = weekend
            e[:, 6] = night
            e[:, 7:10] = np.log1p(nb)
            e[:, 10:13] = np.log1p(avg)
            e[:, 13] = np.log1p(cust_dt)
            e[:, 14:17] = np.log1p(tnb)
            e[:, 17:20] = risk
            e[:, 20] = np.log1p(term_dt)
            edge[idx] = e
            h = hb[idx]
            h[:, 0] = a
            h[:, 1] = weekend
            h[:, 2] = night
            h[:, 3:6] = nb
            h[:, 6:9] = avg
            h[:, 9:12] = tnb
            h[:, 12:15] = risk
            hb[idx] = h
            # --- advance state past this chunk
            self.cust.add(c, int(d), {"n": np.ones(len(idx)), "amt": a})
            self.term.add(tm, int(d), {"n": np.ones(len(idx))})
            np.fmax.at(self.cust.last_ts, c, t)
            np.fmax.at(self.term.last_ts, tm, t)
            fr = label[idx] == 1
            if fr.any():
                pt, pd, pk = self.pending
                self.pending = (np.concatenate([pt, tm[fr]]), np.concatenate([pd, dd[fr]]),
                                np.concatenate([pk, t[fr] + self.label_delay_s]))
            self.watermark = max(self.watermark, float(t.max()))
        if cust_x is None:
            cust_x = np.zeros((0, len(CUSTOMER_NODE_FEATURES)), np.float32)
            term_x = np.zeros((0, len(TERMINAL_NODE_FEATURES)), np.float32)
        return TxFeatures(edge=edge, handbook=hb, cust=cust, term=term, ts=ts, cust_x=cust_x,
                          term_x=term_x, cust_ids=cust_u, term_ids=term_u)

    # ----------------------------------------------------------------- graph
    def build(self, window: Any) -> HeteroData:
        """``Window`` (or a bare ``pa.Table``) in TX_SCHEMA -> ``HeteroData``; edge i is row i."""
        table = window.table if hasattr(window, "table") else window
        feats = self.transform(table)
        start = getattr(window, "start", float(feats.ts.min()) if len(feats.ts) else 0.0)
        end = getattr(window, "end", float(feats.ts.max()) if len(feats.ts) else 0.0)
        labels = None
        if "label" in table.column_names:
            lab = table.column("label").to_numpy(zero_copy_only=False)
            labels = np.nan_to_num(np.asarray(lab, dtype=np.float64), nan=-1).astype(np.int64)
        rows = table.column("row").to_numpy(zero_copy_only=False).astype(np.int64) if "row" in table.column_names else None
        return assemble(feats, start, end, rows=rows, labels=labels,
                        cust_keys=self.cust_ids.keys, term_keys=self.term_ids.keys)


def assemble(feats: TxFeatures, start: float, end: float, *, rows: np.ndarray | None = None,
             labels: np.ndarray | None = None, cust_keys: list[str] | None = None,
             term_keys: list[str] | None = None) -> HeteroData:
    """Wrap precomputed :class:`TxFeatures` into a ``HeteroData`` (local node ids, edge i = row i)."""
    n = len(feats.ts)
    src = np.searchsorted(feats.cust_ids, feats.cust)
    dst = np.searchsorted(feats.term_ids, feats.term)
    data = HeteroData()
    data["customer"].x = torch.from_numpy(feats.cust_x)
    data["customer"].node_gid = torch.from_numpy(feats.cust_ids.astype(np.int64))
    data["terminal"].x = torch.from_numpy(feats.term_x)
    data["terminal"].node_gid = torch.from_numpy(feats.term_ids.astype(np.int64))
    if cust_keys is not None:
        data["customer"].node_key = [cust_keys[i] for i in feats.cust_ids]
    if term_keys is not None:
        data["terminal"].node_key = [term_keys[i] for i in feats.term_ids]
    ei = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    ea = torch.from_numpy(feats.edge)
    fwd = data["customer", "pays", "terminal"]
    fwd.edge_index = ei
    fwd.edge_attr = ea
    fwd.edge_ts = torch.from_numpy(feats.ts)
    fwd.edge_dt_window = torch.from_numpy((feats.ts - start).astype(np.float32))
    fwd.edge_row = torch.from_numpy(rows if rows is not None else np.arange(n, dtype=np.int64))
    fwd.edge_label = torch.from_numpy(labels if labels is not None else np.full(n, -1, np.int64))
    rev = data["terminal", "rev_pays", "customer"]
    rev.edge_index = ei.flip(0)
    rev.edge_attr = ea
    rev.edge_dt_window = fwd.edge_dt_window
    data.window_start = float(start)
    data.window_end = float(end)
    return data

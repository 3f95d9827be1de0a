"""Alerts in the OCSF Detection Finding shape (class_uid 2004), built from one scored window.

Aggregation: flagged records of a window are grouped by (source endpoint, top ATT&CK technique);
each group becomes ONE finding carrying the count, the max/mean score, the first rows/uids
(capped), the top destinations and the evidence of the highest-scoring record. A flood of a
million flagged flows from one host in one window is one alert, not a million.

The finding id is a hash of (window start, source endpoint, technique) — not of the model or the
wall clock — so re-scoring the same window after a crash (at-least-once delivery) overwrites the
same alert in idempotent sinks (SQLite, Alertmanager) instead of duplicating it.

Long-horizon behaviour (``ws.behaviour_techniques`` / ``ws.behaviour_scores`` from the scorer's
:class:`ingest.behaviour.BehaviourState`, docs/behaviour.md): a flagged record whose window gave it no
knowledge technique takes its best fired behaviour technique (``unmapped["technique_source"]`` says
which); every finding lists the behaviour techniques fired on its records in
``unmapped["behaviour_techniques"]`` and those of its best record in ``evidences[0].data.behaviour``.
Which records are flagged never depends on them (the scores and the threshold decide).
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.schema import is_transactions
from knowledge.behaviour_predicates import TECHNIQUES as BEHAVIOUR_TECHNIQUES

OCSF_VERSION = "1.3.0"
CLASS_UID = 2004          # Detection Finding
CATEGORY_UID = 2          # Findings
ACTIVITY_CREATE = 1
SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
MAX_REFS = 50             # rows/uids listed per alert; `count` has the full number
NO_TECHNIQUE = "none"


def severity_id(max_score: float, threshold: float | None, count: int) -> int:
    """Severity from how far the score is over the threshold, and how many records agree.

    Ratio >= 2 (or a flood of >= 1000 records) is High, >= 1.5 Medium, else Low; both High
    conditions at once is Critical. Without a threshold the count alone decides.
    """
    ratio = (max_score / threshold) if threshold and threshold > 0 and np.isfinite(max_score) else 1.0
    high_ratio, flood = ratio >= 2.0, count >= 1000
    if high_ratio and flood:
        return 5
    if high_ratio or flood:
        return 4
    if ratio >= 1.5 or count >= 100:
        return 3
    return 2


def alert_id(window_start: float, src: str, technique: str) -> str:
    return hashlib.sha1(f"{window_start:.6f}|{src}|{technique}".encode()).hexdigest()[:24]


@dataclass
class WindowAlerts:
    """Alerts of one window plus how many flagged records were folded into them."""

    alerts: list[dict]
    flagged: int
    suppressed: int
    first_pos: list[int] = None  # table position of each alert's first flagged record (latency)


class _Sparse:
    """Values of a few table positions, indexed by table position."""

    def __init__(self, positions: np.ndarray, values: list) -> None:
        self._at = dict(zip(positions.tolist(), values))

    def __getitem__(self, p: int):
        return self._at[p]


def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def build_alerts(
    window: Any, ws: Any, model_version: str = "", threshold: float | None = None,
    ref_rows: np.ndarray | None = None, explain: Any = None, now: float | None = None,
) -> WindowAlerts:
    """Aggregate a window's flagged records into OCSF Detection Findings.

    ``ws`` is a WindowScores (``rows``, ``scores``, ``alerts``, ``top_technique``). ``ref_rows`` maps
    the window table's positions to the input's own row numbers (None: the table's ``row``).
    ``explain(i) -> dict | None`` optionally gives knowledge evidence for table position ``i``.
    """
    table = window.table
    now = time.time() if now is None else now
    alerts_mask = np.asarray(ws.alerts, dtype=bool)
    if not alerts_mask.any():
        return WindowAlerts([], 0, 0, [])
    ws_rows = np.asarray(ws.rows, dtype=np.int64)
    tab_rows = np.asarray(table.column("row").to_numpy(zero_copy_only=False), dtype=np.int64)
    # ws.rows are table `row` values; map them to table positions (windows are in `row` order).
    pos = np.searchsorted(tab_rows, ws_rows)
    pos = np.clip(pos, 0, max(len(tab_rows) - 1, 0))
    scores = np.asarray(ws.scores, dtype=np.float64)
    techs = list(ws.top_technique) if getattr(ws, "top_technique", None) is not None else [None] * len(ws_rows)
    beh = _BehaviourView(ws, len(ws_rows))
    # Only flagged records are looked at: convert just those rows to Python (windows can be large).
    sel = np.unique(pos[alerts_mask])
    sub = table.take(pa.array(sel))
    # Transactions: the customer (card) plays the source endpoint, the terminal the destination.
    is_tx = is_transactions(table.schema)
    src_col, dst_col, uid_col = ("customer_id", "terminal_id", "tx_id") if is_tx else ("src_ip", "dst_ip", "uid")
    src, dst = _Sparse(sel, _col(sub, src_col)), _Sparse(sel, _col(sub, dst_col))
    sport, dport = _Sparse(sel, _col(sub, "src_port")), _Sparse(sel, _col(sub, "dst_port"))
    proto, uid = _Sparse(sel, _col(sub, "proto")), _Sparse(sel, _col(sub, uid_col))
    amount = _Sparse(sel, _col(sub, "amount"))
    ts = _Sparse(sel, (sub.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6).tolist())
    refs = ref_rows if ref_rows is not None else tab_rows

    groups: dict[tuple[str, str], list[int]] = {}
    for k in np.flatnonzero(alerts_mask):
        p = int(pos[k])
        groups.setdefault((str(src[p]), techs[k] or beh.best(int(k)) or NO_TECHNIQUE), []).append(int(k))
    out = []
    first_pos: list[int] = []
    for (s, tech), ks in groups.items():
        ps = [int(pos[k]) for k in ks]
        first_pos.append(min(ps))
        sc = scores[ks]
        best = ks[int(np.nanargmax(sc))] if np.isfinite(sc).any() else ks[0]
        bp = int(pos[best])
        max_score = float(np.nanmax(sc)) if np.isfinite(sc).any() else float("nan")
        sev = severity_id(max_score, threshold, len(ks))
        aid = alert_id(float(window.start), s, tech)
        dsts = Counter(f"{dst[p]}:{dport[p]}" if dport[p] is not None else str(dst[p]) for p in ps)
        if is_tx:
            evidence: dict[str, Any] = {
                "src_endpoint": _endpoint(s, None, is_tx), "dst_endpoint": _endpoint(dst[bp], None, is_tx),
                "data": {"row": int(refs[bp]), "tx_id": uid[bp], "amount": amount[bp], "score": float(scores[best])},
            }
        else:
            evidence = {
                "src_endpoint": {"ip": s, "port": sport[bp]},
                "dst_endpoint": {"ip": dst[bp], "port": dport[bp]},
                "connection_info": {"protocol_name": proto[bp]},
                "data": {"row": int(refs[bp]), "uid": uid[bp], "score": float(scores[best])},
            }
        if explain is not None:
            try:
                ex = explain(bp)
            except Exception:  # noqa: BLE001 - an explanation failure must not lose the alert
                ex = None
            if ex:
                evidence["data"]["knowledge"] = ex
        if beh.on:
            evidence["data"]["behaviour"] = beh.evidence(best)
        attacks = [] if tech == NO_TECHNIQUE else [{"technique": {"uid": tech}, "version": "18.1"}]
        first_seen = float(min(ts[p] for p in ps))
        last_seen = float(max(ts[p] for p in ps))
        out.append({
            "class_uid": CLASS_UID, "class_name": "Detection Finding",
            "category_uid": CATEGORY_UID, "category_name": "Findings",
            "activity_id": ACTIVITY_CREATE, "activity_name": "Create",
            "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
            "time": int(now * 1000),
            "severity_id": sev, "severity": SEVERITIES[sev],
            "status_id": 1, "status": "New",
            "risk_score": int(min(100, max(0, round(20 * sev)))),
            "metadata": {
                "version": OCSF_VERSION, "uid": aid,
                "product": {"name": "graphsentry", "vendor_name": "graphsentry", "version": model_version},
            },
            "finding_info": {
                "uid": aid,
                "title": (f"Suspected card fraud: customer {s}" if is_tx else f"Anomalous traffic from {s}")
                + ("" if tech == NO_TECHNIQUE else f" ({tech})"),
                "first_seen_time": int(first_seen * 1000), "last_seen_time": int(last_seen * 1000),
                "analytic": {"name": "graphsentry-stgnn", "type": "Learning (ML/DL)", "type_id": 4,
                             "version": model_version},
                "attacks": attacks,
            },
            "src_endpoint": _endpoint(s, None, is_tx),
            "dst_endpoint": _endpoint(dst[bp], dport[bp], is_tx),
            "evidences": [evidence],
            "unmapped": {
                "score": max_score, "mean_score": float(np.nanmean(sc)) if np.isfinite(sc).any() else None,
                "threshold": threshold, "count": len(ks), "technique": tech,
                "window": {"start": float(window.start), "end": float(window.end)},
                "rows": [int(refs[p]) for p in ps[:MAX_REFS]],
                "uids": [u for u in (uid[p] for p in ps[:MAX_REFS]) if u is not None],
                "top_destinations": [{"endpoint": k, "count": v} for k, v in dsts.most_common(5)],
                "model_version": model_version,
            },
        })
        if beh.on:
            u = out[-1]["unmapped"]
            u["behaviour_techniques"] = beh.union(ks)
            u["technique_source"] = (None if tech == NO_TECHNIQUE else
                                     "knowledge" if any(techs[k] for k in ks) else "behaviour")
    return WindowAlerts(out, int(alerts_mask.sum()), int(alerts_mask.sum()) - len(out), first_pos)


class _BehaviourView:
    """The window's behaviour results per flow index ``k`` (off when the scorer gave none)."""

    def __init__(self, ws: Any, n: int) -> None:
        techs = getattr(ws, "behaviour_techniques", None)
        scores = getattr(ws, "behaviour_scores", None)
        self.on = techs is not None and len(techs) == n
        self.techs = techs
        self.scores = np.asarray(scores, dtype=np.float32) if self.on and scores is not None else None
        if self.scores is not None and self.scores.shape != (n, len(BEHAVIOUR_TECHNIQUES)):
            self.scores = None

    def fired(self, k: int) -> tuple:
        return tuple(self.techs[k] or ()) if self.on else ()

    def best(self, k: int) -> str | None:
        """The fired technique with the highest score (ties: the first in ``TECHNIQUES`` order)."""
        ids = self.fired(k)
        if not ids:
            return None
        if self.scores is None:
            return ids[0]
        return max(ids, key=lambda t: (float(self.scores[k, BEHAVIOUR_TECHNIQUES.index(t)]),
                                       -BEHAVIOUR_TECHNIQUES.index(t)) if t in BEHAVIOUR_TECHNIQUES else (-1.0, 0))

    def union(self, ks: list[int]) -> list[str]:
        return sorted({t for k in ks for t in self.fired(k)})

    def evidence(self, k: int) -> dict:
        ev: dict[str, Any] = {"techniques": list(self.fired(k))}
        if self.scores is not None:
            ev["scores"] = {t: round(float(v), 4) for t, v in zip(BEHAVIOUR_TECHNIQUES, self.scores[k]) if v > 0}
        return ev


def _endpoint(ident: Any, port: Any, is_tx: bool) -> dict:
    """OCSF endpoint: an IP (flows) or a customer/terminal id in ``uid`` (transactions)."""
    return {"uid": ident} if is_tx else {"ip": ident, "port": port}


def source_id(a: dict) -> str:
    """The alert's source: the IP for flows, the customer id for transactions."""
    ep = a["src_endpoint"]
    return str(ep["ip"] if "ip" in ep else ep.get("uid"))


def alert_key(a: dict) -> tuple[float, str, str]:
    """(window start, src, technique) — what identifies an alert across runs."""
    u = a["unmapped"]
    return (round(u["window"]["start"], 6), source_id(a), u["technique"])

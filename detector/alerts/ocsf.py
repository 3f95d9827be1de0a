"""Alerts in the OCSF Detection Finding shape (class_uid 2004), built from one scored window.

Aggregation (:mod:`detector.alerts.grouping`): the flagged records of a window are grouped by
(source endpoint, technique), or by (destination endpoint, technique) for many-to-one activity
(floods, scans, brute force, or any technique once enough distinct sources reach one destination).
Each group is ONE finding with the count, the distinct sources and destinations, the top of each,
the max/mean score against the threshold, the first rows/uids (capped) and the evidence of its
highest-scoring record: the knowledge predicates that fired with their values and the candidate
techniques with their ATT&CK names and tactics (``explain``), the behaviour techniques, and
``finding_info.attacks[]`` (OCSF attack objects, :mod:`detector.alerts.attack`). Severity comes from
:mod:`detector.alerts.severity`. ``WindowAlerts.finding_of`` gives each scored record's finding id.

The finding id is a hash of (window start, key, technique) — not of the model or the wall clock — so
re-scoring the same window after a crash (at-least-once delivery) overwrites the same alert in
idempotent sinks (SQLite, Alertmanager) instead of duplicating it. Consecutive windows of one activity
are folded into one finding by :class:`detector.alerts.incidents.IncidentTracker`.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from detector.alerts import attack as attack_db
from detector.alerts.grouping import distinct_counts, distinct_pairs, group, top_all
from detector.alerts.severity import FindingFacts, Networks, points, severity_of
from ingest.schema import is_transactions
from knowledge.behaviour_predicates import TECHNIQUES as BEHAVIOUR_TECHNIQUES

OCSF_VERSION = "1.3.0"
CLASS_UID = 2004          # Detection Finding
CATEGORY_UID = 2          # Findings
ACTIVITY_CREATE = 1
ACTIVITY_UPDATE = 2
SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
MAX_REFS = 50             # rows/uids listed per alert; `count` has the full number
TOP_K = 10                # top sources / destinations listed per alert
NO_TECHNIQUE = "none"
SKETCH_K = 256            # distinct-source sketch size (exact up to this many sources, an estimate beyond)
_DEFAULT_NETS = Networks()


def alert_id(window_start: float, src: str, technique: str, by: str = "src") -> str:
    """Finding id of one window's group; ``by="dst"``: ``src`` is the destination endpoint."""
    key = src if by == "src" else f"dst:{src}"
    return hashlib.sha1(f"{window_start:.6f}|{key}|{technique}".encode()).hexdigest()[:24]


@dataclass
class WindowAlerts:
    """Alerts of one window plus how many flagged records were folded into them.

    ``finding_of[k]``: the finding id of scored record ``k`` (index into ``ws.rows``), None when not
    flagged. ``first_pos``: table position of each alert's first flagged record (latency).
    """

    alerts: list[dict]
    flagged: int
    suppressed: int
    first_pos: list[int] = field(default_factory=list)
    finding_of: np.ndarray | None = None
    sketches: list = field(default_factory=list)  # per alert: smallest SKETCH_K hashes of its distinct sources


def _col(table: pa.Table, name: str) -> pa.ChunkedArray:
    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])


def build_alerts(
    window: Any, ws: Any, model_version: str = "", threshold: float | None = None,
    ref_rows: np.ndarray | None = None, explain: Any = None, now: float | None = None,
    networks: Networks | None = None,
) -> WindowAlerts:
    """Aggregate a window's flagged records into OCSF Detection Findings.

    ``ws`` is a WindowScores (``rows``, ``scores``, ``alerts``, ``top_technique``). ``ref_rows`` maps
    the window table's positions to the input's own row numbers (None: the table's ``row``).
    ``explain(k) -> dict | None`` gives the knowledge evidence of scored record ``k`` (None: the
    scorer's own ``ws.explain`` when it has one); ``networks``: the internal networks (direction).
    """
    table = window.table
    now = time.time() if now is None else now
    nets = networks or _DEFAULT_NETS
    explain = explain if explain is not None else getattr(ws, "explain", None)
    alerts_mask = np.asarray(ws.alerts, dtype=bool)
    n_ws = len(alerts_mask)
    if not alerts_mask.any():
        return WindowAlerts([], 0, 0, [], np.full(n_ws, None, dtype=object))
    ws_rows = np.asarray(ws.rows, dtype=np.int64)
    tab_rows = np.asarray(table.column("row").to_numpy(zero_copy_only=False), dtype=np.int64)
    # ws.rows are table `row` values; map them to table positions (windows are in `row` order).
    pos = np.clip(np.searchsorted(tab_rows, ws_rows), 0, max(len(tab_rows) - 1, 0))
    scores = np.asarray(ws.scores, dtype=np.float64)
    beh = _BehaviourView(ws, n_ws)
    ks = np.flatnonzero(alerts_mask)                 # flagged records, as indices into ws
    ks_l = ks.tolist()
    top_tech = getattr(ws, "top_technique", None)
    techs = [top_tech[k] for k in ks_l] if top_tech is not None else [None] * len(ks_l)  # per flagged record
    fp = pos[ks]                                     # their table positions
    # Only flagged records are looked at: the window's other rows are never converted (windows can be large).
    sub = table.take(pa.array(fp))
    is_tx = is_transactions(table.schema)
    src_col, dst_col, uid_col = ("customer_id", "terminal_id", "tx_id") if is_tx else ("src_ip", "dst_ip", "uid")
    tech_k = [t or beh.best(k) or NO_TECHNIQUE for t, k in zip(techs, ks_l)]
    g = group(_col(sub, src_col), _col(sub, dst_col), tech_k)
    svc = _services(sub, dst_col)
    ts = sub.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6
    refs = np.asarray(ref_rows if ref_rows is not None else tab_rows)
    fscores = scores[ks]
    # Per group, all groups at once (group g's records: g.order[g.bounds[g]:g.bounds[g + 1]], ascending).
    st = _GroupStats(g, fscores, fp, ts, svc)
    n_src_all, top_src_all = top_all(g, g.src_codes, g.src_names, TOP_K)
    n_dst_all, top_dst_all = top_all(g, g.dst_codes, g.dst_names, TOP_K)
    sketches = _sketches(g)
    best_rows = sub.take(pa.array(st.best)).to_pylist()  # each group's highest-scoring record, as a dict
    uids = _col(sub, uid_col).to_pylist()
    aids = [alert_id(float(window.start), ep, tech, by) for by, ep, tech in zip(g.by, g.endpoint, g.technique)]
    finding_of = np.full(n_ws, None, dtype=object)
    finding_of[ks] = np.array(aids, dtype=object)[g.inverse]
    out = []
    for gi, members in enumerate(g.members):
        by, ep, tech = g.by[gi], g.endpoint[gi], g.technique[gi]
        aid = aids[gi]
        bi = int(st.best[gi])
        best = ks_l[bi]
        fin = bool(st.finite[gi])
        max_score = float(st.max_score[gi]) if fin else float("nan")
        n_src, top_src = int(n_src_all[gi]), top_src_all[gi]
        n_dst, top_dst = int(n_dst_all[gi]), top_dst_all[gi]
        bsrc, bdst = g.src_names[int(g.src_codes[bi])], g.dst_names[int(g.dst_codes[bi])]
        row = best_rows[gi]
        n_svc = int(st.services[gi])
        facts = FindingFacts(None if tech == NO_TECHNIQUE else tech, len(members), n_src, n_dst, n_svc, max_score,
                             threshold, nets.direction(bsrc, bdst), is_tx)
        pts = points(facts)
        sev = severity_of(pts)
        evidence = _evidence(row, is_tx, int(refs[fp[bi]]), float(scores[best]), threshold)
        ex = _explain(explain, best)
        if ex:
            evidence["data"]["knowledge"] = ex
        if beh.on:
            evidence["data"]["behaviour"] = beh.evidence(best)
        evidences = [evidence] + _spread_evidence(by, ep, top_src if by == "dst" else top_dst, is_tx)
        key_src = ep if by == "src" else bsrc
        key_dst = ep if by == "dst" else bdst
        head = members[:MAX_REFS].tolist()
        rows = [int(r) for r in refs[fp[head]].tolist()]
        uid_list = [uids[i] for i in head if uids[i] is not None]
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
                "uid": aid, "title": title(by, ep, tech, n_src, is_tx),
                "first_seen_time": int(float(st.ts_min[gi]) * 1000),
                "last_seen_time": int(float(st.ts_max[gi]) * 1000),
                "analytic": {"name": "graphsentry-stgnn", "type": "Learning (ML/DL)", "type_id": 4,
                             "version": model_version},
                "attacks": [] if tech == NO_TECHNIQUE else attack_db.attacks(tech),
            },
            "src_endpoint": _endpoint(key_src, None, is_tx),
            "dst_endpoint": _endpoint(key_dst, row.get("dst_port") if by == "src" or is_tx else None, is_tx),
            "evidences": evidences,
            "unmapped": {
                "score": max_score, "mean_score": st.mean(gi) if fin else None,
                "threshold": threshold,
                "score_ratio": (max_score / threshold) if threshold and fin else None,
                "count": len(members), "technique": tech,
                "technique_name": attack_db.technique(tech)[0] if tech != NO_TECHNIQUE else None,
                "group_by": by, "key": ep,
                "sources": n_src, "destinations": n_dst, "services": n_svc,
                "top_sources": top_src, "top_destinations": top_dst,
                "direction": facts.direction, "severity_points": pts,
                "window": {"start": float(window.start), "end": float(window.end)},
                "rows": rows, "uids": uid_list,
                "model_version": model_version,
            },
        })
        if beh.on:
            u = out[-1]["unmapped"]
            mk = [ks_l[i] for i in members.tolist()]
            u["behaviour_techniques"] = beh.union(mk)
            u["technique_source"] = (None if tech == NO_TECHNIQUE else
                                     "knowledge" if any(techs[i] for i in members.tolist()) else "behaviour")
    return WindowAlerts(out, len(ks), len(ks) - len(out), st.first_pos.tolist(), finding_of, sketches)


class _GroupStats:
    """Per group of a window's flagged records (:class:`~detector.alerts.grouping.Groups`), computed for all
    groups at once: its best record (highest score, the first of equals; NaN scores ignored; the first
    record when none is finite), whether any score is finite, the highest score, first position, first and
    last time, distinct services; :meth:`mean` the NaN-ignoring mean score. The values of
    ``np.nanargmax``, ``np.nanmax``, ``np.nanmean``, ``min``, ``max`` and ``len(np.unique(...))`` on each
    group's records."""

    def __init__(self, g, fscores: np.ndarray, fp: np.ndarray, ts: np.ndarray, svc: np.ndarray) -> None:
        order, start = g.order, g.bounds[:-1]
        self._start, self._end = g.bounds[:-1].tolist(), g.bounds[1:].tolist()
        s = fscores[order]  # group by group, each group's records in ascending order
        self.finite = np.logical_or.reduceat(np.isfinite(s), start)
        self.max_score = np.fmax.reduceat(s, start)  # NaN ignored (NaN only where every score is NaN)
        gid = np.repeat(np.arange(len(start)), np.diff(g.bounds))
        at_max = np.where(s == self.max_score[gid], np.arange(len(s)), len(s))
        first_max = np.minimum.reduceat(at_max, start)
        self.best = order[np.where(self.finite, first_max, start)]
        self._s0 = np.where(np.isnan(s), 0.0, s)  # nanmean's sum: NaN as 0, over the non-NaN count
        self._n = np.add.reduceat((~np.isnan(s)).astype(np.int64), start)
        self.first_pos = np.minimum.reduceat(fp[order], start)
        t = ts[order]
        self.ts_min, self.ts_max = np.minimum.reduceat(t, start), np.maximum.reduceat(t, start)
        self.services = distinct_counts(g, svc, int(svc.max(initial=-1)) + 1)

    def mean(self, gi: int) -> float:
        return float(np.sum(self._s0[self._start[gi]:self._end[gi]]) / self._n[gi])


def _sketches(g) -> list[np.ndarray]:
    """Per group: the smallest :data:`SKETCH_K` distinct hashes of its distinct sources (ascending uint64)."""
    pg, pc, _ = distinct_pairs(g, g.src_codes, len(g.src_names))
    src_hash = np.fromiter((hash(x) for x in g.src_names), dtype=np.int64, count=len(g.src_names)).view(np.uint64)
    h = src_hash[pc]
    order = np.lexsort((h, pg))
    pg, h = pg[order], h[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (pg[1:] != pg[:-1]) | (h[1:] != h[:-1])  # one hash per group once (as np.unique)
    pg, h = pg[keep], h[keep]
    bounds = np.searchsorted(pg, np.arange(len(g.members) + 1))
    return [h[a:min(b, a + SKETCH_K)].copy() for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _services(sub: pa.Table, dst_col: str) -> np.ndarray:
    """Integer code of each record's destination service (destination and port)."""
    import pyarrow.compute as pc

    dst = _col(sub, dst_col).cast(pa.string()).fill_null("")
    if "dst_port" in sub.column_names:
        dst = pc.binary_join_element_wise(dst, sub.column("dst_port").cast(pa.string()).fill_null(""), ":")
    enc = dst.combine_chunks().dictionary_encode()
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def title(by: str, ep: str, tech: str, n_src: int, is_tx: bool) -> str:
    """The finding's title (``finding_info.title``)."""
    name = attack_db.technique(tech)[0] if tech != NO_TECHNIQUE else ""
    what = "" if tech == NO_TECHNIQUE else f" ({tech}{' ' + name if name else ''})"
    if is_tx:
        return (f"Suspected card fraud at terminal {ep} from {n_src} customers" if by == "dst"
                else f"Suspected card fraud: customer {ep}") + what
    if by == "dst":
        return f"Anomalous traffic against {ep} from {n_src} sources{what}"
    return f"Anomalous traffic from {ep}{what}"


def _evidence(row: dict, is_tx: bool, ref: int, score: float, threshold: float | None) -> dict:
    """OCSF evidence of the finding's best record (the highest score)."""
    data = {"row": ref, "score": score, "threshold": threshold}
    if is_tx:
        return {"src_endpoint": {"uid": row.get("customer_id")}, "dst_endpoint": {"uid": row.get("terminal_id")},
                "data": {**data, "tx_id": row.get("tx_id"), "amount": row.get("amount")}}
    return {"src_endpoint": {"ip": row.get("src_ip"), "port": row.get("src_port")},
            "dst_endpoint": {"ip": row.get("dst_ip"), "port": row.get("dst_port")},
            "connection_info": {"protocol_name": row.get("proto")},
            "data": {**data, "uid": row.get("uid")}}


def _spread_evidence(by: str, ep: str, tops: list[dict], is_tx: bool) -> list[dict]:
    """One evidence per top source (destination-keyed findings) or top destination (source-keyed)."""
    out = []
    for t in tops[:5]:
        other = t["endpoint"]
        src, dst = (other, ep) if by == "dst" else (ep, other)
        out.append({"src_endpoint": _endpoint(src, None, is_tx), "dst_endpoint": _endpoint(dst, None, is_tx),
                    "data": {"records": t["count"]}})
    return out


def _explain(explain: Any, k: int) -> dict | None:
    """The knowledge explanation of scored record ``k`` with ATT&CK names on every technique."""
    if explain is None:
        return None
    try:
        ex = explain(k)
    except Exception:  # noqa: BLE001 - an explanation failure must not lose the alert
        return None
    if not ex:
        return None
    ex = dict(ex)
    techs = []
    for t in ex.get("techniques") or []:
        t = dict(t)
        ids = t.get("tactics") or attack_db.technique(str(t.get("id")))[1]
        t["tactics"] = [{"uid": ta, "name": attack_db.tactic_name(ta)} for ta in ids]
        t.pop("refs", None)
        techs.append(t)
    ex["techniques"] = techs
    return ex


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
    """(window start, key, technique) — what identifies a window's finding across runs. The key is the
    source endpoint, or ``dst:<endpoint>`` for a finding grouped by destination."""
    u = a["unmapped"]
    key = f"dst:{u['key']}" if u.get("group_by") == "dst" else source_id(a)
    return (round(u["window"]["start"], 6), key, u["technique"])


def finding_key(a: dict) -> tuple[str, str, str]:
    """(group_by, key endpoint, technique): what an ongoing activity is across windows."""
    u = a["unmapped"]
    return (u.get("group_by", "src"), str(u.get("key", source_id(a))), u["technique"])

"""An alert's surroundings: evidence flows, the subgraph of its window, the entity's timeline and
score history, and the explanation the finding carries.

With an archive of scored records (``ingest.archive``, ``graphsentry ui --archive DIR``) they come
from the records themselves: the window's records touching the alert's hosts, and the source's
records in the hours around it. Without one they come from what the findings carry: the evidence
records, listed uids and top destinations/sources, and the same source's other findings.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from detector.ui.fields import dig, endpoint, obj, parse_finding

log = logging.getLogger(__name__)

MAX_FLOWS = 200        # evidence flows listed
MAX_EDGES = 150        # subgraph edges drawn (highest scores first)
TIMELINE_SPAN = 6 * 3600.0  # archive timeline: this many seconds either side of the alert's window
FLOW_COLS = ("ts", "uid", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "service", "duration",
             "src_bytes", "dst_bytes", "score", "alert", "alert_id", "model_version")
TX_COLS = ("ts", "tx_id", "customer_id", "terminal_id", "amount", "mcc", "score", "alert", "alert_id",
           "model_version")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "timestamp"):
        return v.timestamp()
    return v


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _int(x: Any, default: int = 0) -> int:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else default


def _str(x: Any) -> str | None:
    return None if x is None or isinstance(x, (dict, list)) else str(x)


def explanation(finding: dict) -> dict:
    """What fired: predicates with their values, knowledge/behaviour techniques and their scores."""
    preds: dict[str, Any] = {}
    behaviour: dict[str, Any] = {}
    knowledge: list[dict] = []
    for ev in finding.get("evidences") or []:
        data = obj(dig(ev, "data"))
        for src in (dig(data, "predicates"), dig(data, "knowledge", "predicates")):
            if isinstance(src, dict):
                preds.update({str(k): v for k, v in src.items() if not isinstance(v, (dict, list))})
            elif isinstance(src, list):
                for p in src:
                    name = dig(p, "name") or dig(p, "predicate")
                    if name is not None:
                        preds[str(name)] = dig(p, "value")
        kn = dig(data, "knowledge")
        if isinstance(kn, dict):
            for t in kn.get("techniques") or []:
                if isinstance(t, dict):
                    preds_t = [f"{dig(p, 'name')}={dig(p, 'value')}" for p in t.get("predicates") or []
                               if isinstance(p, dict)]
                    knowledge.append({"id": _str(t.get("id") or t.get("uid")), "name": _str(t.get("name")),
                                      "score": t.get("score") if isinstance(t.get("score"), (int, float)) else None,
                                      "predicates": ", ".join(preds_t)})
        b = dig(data, "behaviour")
        if isinstance(b, dict) and isinstance(b.get("scores"), dict):
            behaviour.update(b["scores"])
    u = obj(finding.get("unmapped"))
    return {"predicates": [{"name": k, "value": v} for k, v in sorted(preds.items())],
            "knowledge_techniques": knowledge,
            "behaviour_scores": [{"technique": k, "score": v} for k, v in sorted(behaviour.items())],
            "behaviour_techniques": [str(t) for t in (u.get("behaviour_techniques") or []) if isinstance(t, str)],
            "technique_source": u.get("technique_source") if isinstance(u.get("technique_source"), str) else None,
            "severity_points": {str(k): v for k, v in (u.get("severity_points") or {}).items()
                                if isinstance(v, (int, float))} if isinstance(u.get("severity_points"), dict) else {},
            "score": u.get("score"), "threshold": u.get("threshold"), "mean_score": u.get("mean_score")}


def _host(ep: str) -> str:
    """``ip:port`` -> ip (an IPv6 address or a bare id stays whole)."""
    if ep.count(":") == 1:
        return ep.split(":")[0]
    return ep


def _graph(edges: dict[tuple[str, str], dict], focus: set[str]) -> dict:
    def score(e: dict) -> float:
        v = e.get("score")
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0

    top = sorted(edges.items(), key=lambda kv: -score(kv[1]))[:MAX_EDGES]
    nodes: dict[str, dict] = {}
    out_edges = []
    for i, ((s, d), e) in enumerate(top):
        for n in (s, d):
            nodes.setdefault(n, {"id": n, "focus": n in focus})
        out_edges.append({"id": f"e{i}", "source": s, "target": d, **e})
    return {"nodes": list(nodes.values()), "edges": out_edges, "edges_total": len(edges)}


def from_finding(finding: dict, others: list[dict]) -> dict:
    """Flows, subgraph and timeline from the findings alone (no archive)."""
    src = endpoint(finding.get("src_endpoint")) or "?"
    dst = endpoint(finding.get("dst_endpoint"))
    u = obj(finding.get("unmapped"))
    flows = []
    for ev in finding.get("evidences") or []:
        data = obj(dig(ev, "data"))
        flows.append({"ts": None, "uid": _clean(data.get("uid") or data.get("tx_id")),
                      "src": endpoint(dig(ev, "src_endpoint")), "src_port": dig(ev, "src_endpoint", "port"),
                      "dst": endpoint(dig(ev, "dst_endpoint")), "dst_port": dig(ev, "dst_endpoint", "port"),
                      "proto": dig(ev, "connection_info", "protocol_name"), "amount": data.get("amount"),
                      "score": _clean(data.get("score")), "alert": True, "row": data.get("row"),
                      "records": data.get("records")})
    listed = {f["uid"] for f in flows}
    for uid in (u.get("uids") or [])[:MAX_FLOWS]:
        if isinstance(uid, (str, int)) and uid not in listed:
            flows.append({"uid": uid, "src": src, "alert": True})
    edges: dict[tuple[str, str], dict] = {}
    for t in u.get("top_destinations") or []:
        ep = dig(t, "endpoint")
        if ep is not None:
            e = edges.setdefault((src, _host(str(ep))), {"count": 0, "score": _num(u.get("score")), "flagged": 0})
            e["count"] += _int(dig(t, "count"))
            e["flagged"] = e["count"]
    for t in u.get("top_sources") or []:  # per-destination incidents list their sources
        ep = dig(t, "endpoint") or dig(t, "ip") or dig(t, "src")
        if ep is not None and dst:
            e = edges.setdefault((_host(str(ep)), dst), {"count": 0, "score": _num(u.get("score")), "flagged": 0})
            e["count"] += _int(dig(t, "count"))
            e["flagged"] = e["count"]
    if not edges and dst:
        edges[(src, dst)] = {"count": _int(u.get("count"), 1), "score": _num(u.get("score")), "flagged": _int(u.get("count"), 1)}
    timeline = [{"window_start": o["window_start"], "window_end": o["window_end"], "records": None,
                 "flagged": o["count"], "max_score": _clean(o["score"]), "alert_id": o["id"],
                 "technique": o["technique"], "severity_id": o["severity_id"]} for o in others]
    timeline = _with_window_counts(timeline, finding)
    return {"source": "findings", "flows": flows[:MAX_FLOWS], "flows_total": _int(u.get("count"), len(flows)),
            "graph": _graph(edges, {src} | ({dst} if dst else set())), "timeline": timeline}


def _with_window_counts(timeline: list[dict], finding: dict) -> list[dict]:
    """An ongoing finding's own per-window record counts (``unmapped.window_counts``) in the timeline."""
    u = obj(finding.get("unmapped"))
    counts = u.get("window_counts")
    ws, we = dig(u, "window", "start"), dig(u, "window", "end")
    if not isinstance(counts, dict) or not isinstance(ws, (int, float)) or not isinstance(we, (int, float)):
        return timeline
    span = float(we) - float(ws)
    by_start = {round(float(t["window_start"]), 3): t for t in timeline if isinstance(t.get("window_start"), (int, float))}
    aid = _str(dig(finding, "finding_info", "uid"))
    for k, c in counts.items():
        try:
            start = float(k)
        except (TypeError, ValueError):
            continue
        t = by_start.get(round(start, 3))
        if t is None:
            t = by_start[round(start, 3)] = {"window_start": start, "window_end": start + span, "records": None,
                                             "flagged": None, "max_score": None, "alert_id": aid,
                                             "technique": _str(u.get("technique")), "severity_id": None}
        if t.get("alert_id") == aid:
            t["flagged"] = _int(c, 0)
    return sorted(by_start.values(), key=lambda t: t["window_start"])


def from_archive(archive: Path, finding: dict, alert_id: str, others: list[dict], by_dst: bool = False) -> dict:
    """Flows, subgraph and timeline from the archived records around the alert."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ingest.archive import read_archive

    ws, we = dig(finding, "unmapped", "window", "start"), dig(finding, "unmapped", "window", "end")
    if not isinstance(ws, (int, float)) or not isinstance(we, (int, float)):
        return from_finding(finding, others)
    tx = "uid" in (finding.get("src_endpoint") or {}) and "ip" not in (finding.get("src_endpoint") or {})
    s_col, d_col = ("customer_id", "terminal_id") if tx else ("src_ip", "dst_ip")
    src = endpoint(finding.get("src_endpoint")) or "?"
    dst = endpoint(finding.get("dst_endpoint"))
    hosts = {src} | ({dst} if dst else set())
    cols = TX_COLS if tx else FLOW_COLS
    flows: list[dict] = []
    edges: dict[tuple[str, str], dict] = {}
    span = float(we) - float(ws)
    buckets: dict[int, dict] = defaultdict(lambda: {"records": 0, "flagged": 0, "max_score": None})
    kind_ok = False  # an archive of the other kind (flows vs transactions) says nothing about this alert
    scan = read_archive(archive, since=float(ws) - TIMELINE_SPAN, until=float(we) + TIMELINE_SPAN)
    try:
        for b in scan:
            names = b.schema.names
            if s_col not in names or d_col not in names:
                continue
            kind_ok = True
            hv = pa.array(sorted(hosts), pa.string())
            mask = pc.or_(pc.is_in(b.column(s_col), value_set=hv), pc.is_in(b.column(d_col), value_set=hv))
            data = b.filter(mask).select([c for c in cols if c in names]).to_pylist()
            for r in data:
                s, d = str(r.get(s_col)), str(r.get(d_col))
                if s not in hosts and d not in hosts:
                    continue
                t = _clean(r.get("ts")) or 0.0
                sc = _clean(r.get("score"))
                if (d == dst if by_dst else s == src):  # the entity's timeline, one bucket per window length
                    k = int((t - float(ws)) // span) if span > 0 else 0
                    bk = buckets[k]
                    bk["records"] += 1
                    bk["flagged"] += 1 if r.get("alert") else 0
                    if r.get("alert_id") == alert_id:  # an ongoing finding spans windows under one id
                        bk["alert_id"] = alert_id
                    if sc is not None and (bk["max_score"] is None or sc > bk["max_score"]):
                        bk["max_score"] = sc
                if not float(ws) <= t < float(we):
                    continue
                e = edges.setdefault((s, d), {"count": 0, "score": None, "flagged": 0})
                e["count"] += 1
                e["flagged"] += 1 if r.get("alert") else 0
                if sc is not None and (e["score"] is None or sc > e["score"]):
                    e["score"] = sc
                if r.get("alert_id") == alert_id or (s == src and len(flows) < MAX_FLOWS // 2):
                    flows.append({"ts": t, "uid": r.get("uid") or r.get("tx_id"), "src": s,
                                  "src_port": r.get("src_port"), "dst": d, "dst_port": r.get("dst_port"),
                                  "proto": r.get("proto"), "service": r.get("service"), "amount": r.get("amount"),
                                  "bytes": (r.get("src_bytes") or 0) + (r.get("dst_bytes") or 0) if not tx else None,
                                  "score": sc, "alert": bool(r.get("alert")), "in_alert": r.get("alert_id") == alert_id})
    except (OSError, ValueError) as exc:
        log.warning("archive %s not readable for alert %s (%s): showing the finding's own evidence", archive, alert_id, exc)
        return from_finding(finding, others)
    if not kind_ok:
        return from_finding(finding, others)
    flows.sort(key=lambda f: (not f["in_alert"], -(f["score"] or 0)))
    timeline = [{"window_start": float(ws) + k * span, "window_end": float(ws) + (k + 1) * span, **v}
                for k, v in sorted(buckets.items())]
    by_start: dict[float, dict] = {}  # one finding per window: this alert where it is one of several
    for o in others:
        k = round(o["window_start"], 3)
        if k not in by_start or o["id"] == alert_id:
            by_start[k] = o
    for t in timeline:
        hit = by_start.get(round(t["window_start"], 3))
        if t.get("alert_id") == alert_id:
            t.setdefault("technique", _str(dig(finding, "unmapped", "technique")))
        elif hit:
            t.update(alert_id=hit["id"], technique=hit["technique"], severity_id=hit["severity_id"])
    return {"source": "archive", "flows": flows[:MAX_FLOWS], "flows_total": len(flows),
            "graph": _graph(edges, hosts), "timeline": timeline}


def alert_context(archive: Path | None, row: dict, others: list[dict], by_dst: bool = False) -> dict:
    finding = parse_finding(row.get("finding"))
    if archive is not None:
        return from_archive(Path(archive), finding, str(row.get("id")), others, by_dst)
    return from_finding(finding, others)

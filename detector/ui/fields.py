"""One alert's display fields, read defensively from its store row and OCSF finding.

Every key of a finding may be missing or of the wrong type (older or newer findings, hand-written
records): a missing value reads as ``None`` and the page shows it as absent. Nothing here trusts
the content; the browser inserts every value as text.
"""
from __future__ import annotations

import json
from typing import Any

SEVERITIES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal"}


def dig(obj: Any, *path: Any) -> Any:
    """``obj[p0][p1]...`` or None when any step is missing or of the wrong type."""
    for p in path:
        if isinstance(p, int):
            if not isinstance(obj, list) or not -len(obj) <= p < len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[p] if isinstance(p, int) else obj.get(p)
    return obj


def obj(x: Any) -> dict:
    """``x`` when it is a dict, else an empty one."""
    return x if isinstance(x, dict) else {}


def parse_finding(text: Any) -> dict:
    """The finding JSON as a dict ({} when it is not a JSON object)."""
    if isinstance(text, dict):
        return text
    try:
        obj = json.loads(text) if isinstance(text, (str, bytes)) else None
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if x == x and abs(x) != float("inf") else None


def _str(x: Any) -> str | None:
    if x is None or isinstance(x, (dict, list)):
        return None
    return str(x)


def endpoint(ep: Any) -> str | None:
    """An OCSF endpoint as one string: its IP (flows) or uid (transactions)."""
    if not isinstance(ep, dict):
        return None
    return _str(ep.get("ip")) or _str(ep.get("uid")) or _str(ep.get("hostname"))


def techniques(finding: dict, column: Any = None) -> list[dict]:
    """ATT&CK techniques of a finding: ``[{"id", "name"?, "tactics"?}]``, the store's column first."""
    out: dict[str, dict] = {}
    if isinstance(column, str) and column and column != "none":
        out[column] = {"id": column}
    for a in dig(finding, "finding_info", "attacks") or []:
        tid = _str(dig(a, "technique", "uid"))
        if not tid:
            continue
        t = out.setdefault(tid, {"id": tid})
        name = _str(dig(a, "technique", "name"))
        if name:
            t["name"] = name
        tactic = _str(dig(a, "tactic", "name")) or _str(dig(a, "tactic", "uid"))
        if tactic:
            t.setdefault("tactics", []).append(tactic)
    return list(out.values())


def is_transaction(finding: dict) -> bool:
    src = finding.get("src_endpoint")
    return isinstance(src, dict) and "uid" in src and "ip" not in src


def summary(row: dict) -> dict:
    """The queue's fields of one alert from its store row (``finding`` parsed here)."""
    f = parse_finding(row.get("finding"))
    u = obj(f.get("unmapped"))
    sev = row.get("severity_id")
    sev = sev if isinstance(sev, int) else dig(f, "severity_id")
    first = _num(dig(f, "finding_info", "first_seen_time"))
    last = _num(dig(f, "finding_info", "last_seen_time"))
    tx = is_transaction(f)
    amount = _num(dig(f, "evidences", 0, "data", "amount"))
    return {
        "id": _str(row.get("id")),
        "title": _str(dig(f, "finding_info", "title")),
        "window_start": _num(row.get("window_start")),
        "window_end": _num(row.get("window_end")),
        "first_seen": first / 1000 if first is not None else None,
        "last_seen": last / 1000 if last is not None else None,
        "created": (_num(row.get("time_ms")) or 0) / 1000 or None,
        "severity_id": sev if isinstance(sev, int) else None,
        "severity": SEVERITIES.get(sev) if isinstance(sev, int) else None,
        "src": _str(row.get("src_ip")) or endpoint(f.get("src_endpoint")),
        "dst": _str(row.get("dst_ip")) or endpoint(f.get("dst_endpoint")),
        "dst_port": dig(f, "dst_endpoint", "port") if isinstance(dig(f, "dst_endpoint", "port"), int) else None,
        "techniques": techniques(f, row.get("technique")),
        "count": row.get("count") if isinstance(row.get("count"), int) else _num(u.get("count")),
        "score": _num(row.get("score")),
        "threshold": _num(u.get("threshold")),
        "model_version": _str(row.get("model_version")) or _str(u.get("model_version")),
        "kind": "transaction" if tx else "flow",
        "amount": amount if tx else None,
        "status": row.get("status") or "new",
        "assignee": row.get("assignee"),
        "verdict": row.get("verdict"),
        "distinct_sources": _num(row.get("sources")) if _num(row.get("sources")) is not None
        else _num(u.get("distinct_sources", u.get("sources"))),
        "windows": _num(row.get("windows")) if _num(row.get("windows")) is not None else _num(u.get("windows")),
        "distinct_destinations": _num(u.get("distinct_destinations", u.get("destinations"))),
        "group_by": _str(row.get("group_by")) or _str(u.get("group_by")),
        "direction": _str(u.get("direction")),
        "services": _num(u.get("services")),
        "activity": _str(f.get("activity_name")),
    }

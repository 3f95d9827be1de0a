"""Ongoing activity: consecutive windows of one (key, endpoint, technique) fold into ONE finding.

:class:`IncidentTracker` takes each window's findings (:func:`detector.alerts.build_alerts`) in event-time
order and returns what the sinks get: a finding whose key was active within ``gap`` seconds (event time,
from the end of its last window with activity to the start of this one) keeps the uid of the finding
that opened it and becomes an OCSF Update (``activity_id`` 2) with the cumulative count, the windows
count, first/last seen, the highest score and severity so far, and the distinct sources (exact up to
:data:`detector.alerts.ocsf.SKETCH_K`, then a k-minimum-values estimate) with the merged top sources.
After ``gap`` seconds without activity the key starts a new finding.

Bounded: at most ``max_open`` open incidents (the least recently active are closed first); per incident the
counts of its last :data:`KEEP_WINDOWS` windows (the rest summed), a fixed-size sketch and the top sources.

Idempotent under at-least-once replay: a window folded twice (a crash re-scored it) replaces its own
contribution instead of adding to it. :meth:`IncidentTracker.seed` restores the open incidents from a
SQLite alert store (their last findings) so that a restarted daemon updates them instead of duplicating.
"""
from __future__ import annotations

import copy
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.alerts.ocsf import (
    ACTIVITY_CREATE,
    ACTIVITY_UPDATE,
    CLASS_UID,
    SEVERITIES,
    SKETCH_K,
    WindowAlerts,
    finding_key,
    title,
)
from detector.alerts.severity import FindingFacts, points, severity

KEEP_WINDOWS = 32
TOP_KEEP = 50


@dataclass
class _Incident:
    uid: str
    first_seen_ms: int
    last_seen_ms: int
    first_window: float
    last_end: float
    base_count: int = 0
    base_windows: int = 0
    windows: dict = field(default_factory=dict)      # window start -> count (the last KEEP_WINDOWS)
    max_score: float = float("-inf")
    severity_id: int = 2
    sketch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    sources_floor: int = 0                           # a lower bound restored from a store (seed)
    tops: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return self.base_count + sum(self.windows.values())

    @property
    def n_windows(self) -> int:
        return self.base_windows + len(self.windows)

    def sources(self) -> int:
        n = len(self.sketch)
        if n < SKETCH_K:
            est = n
        else:  # k-minimum values: (k - 1) / (k-th smallest hash as a fraction of the hash space)
            est = int(round((SKETCH_K - 1) / (float(self.sketch[-1]) / 2.0 ** 64)))
        return max(est, self.sources_floor)


class IncidentTracker:
    """Fold consecutive windows' findings of one key into one finding (see the module docstring).

    Args:
        gap: seconds of event time without activity after which a key starts a new finding (> 0).
        max_open: open incidents kept (default: 100000).
    """

    def __init__(self, gap: float, max_open: int = 100_000) -> None:
        if not gap > 0:
            raise ValueError(f"incident gap={gap!r}: must be > 0 seconds")
        if max_open < 1:
            raise ValueError(f"max_open={max_open!r}: must be >= 1")
        self.gap, self.max_open = float(gap), int(max_open)
        self.open: dict[tuple, _Incident] = {}
        self.closed = 0

    def __repr__(self) -> str:
        return f"IncidentTracker(gap={self.gap!r}, max_open={self.max_open!r})"

    def fold(self, wa: WindowAlerts) -> WindowAlerts:
        """The window's findings as incident findings (same order), ``finding_of`` mapped to incident uids."""
        out, remap = [], {}
        for i, a in enumerate(wa.alerts):
            sketch = wa.sketches[i] if i < len(wa.sketches) else np.zeros(0, np.uint64)
            b = self._fold_one(a, sketch)
            remap[a["finding_info"]["uid"]] = b["finding_info"]["uid"]
            out.append(b)
        if wa.alerts:
            self._expire(min(a["unmapped"]["window"]["start"] for a in wa.alerts))
        fo = wa.finding_of
        if fo is not None and remap:
            fo = np.array(fo, dtype=object)  # a copy; only the flagged records' entries (not None) change
            hit = np.flatnonzero(fo != None)  # noqa: E711 - elementwise over an object array
            if len(hit):
                fo[hit] = np.array([remap.get(x, x) for x in fo[hit].tolist()] + [None], dtype=object)[:-1]
        return WindowAlerts(out, wa.flagged, wa.suppressed, wa.first_pos, fo, wa.sketches)

    def _fold_one(self, a: dict, sketch: np.ndarray) -> dict:
        u = a["unmapped"]
        key = finding_key(a)
        start, end = float(u["window"]["start"]), float(u["window"]["end"])
        fi = a["finding_info"]
        inc = self.open.get(key)
        if inc is not None and start - inc.last_end > self.gap:
            self.open.pop(key)
            self.closed += 1
            inc = None
        if inc is None:
            inc = _Incident(fi["uid"], fi["first_seen_time"], fi["last_seen_time"], start, end)
            self.open[key] = inc
            if len(self.open) > self.max_open:
                self._close_oldest()
        inc.windows[start] = max(inc.windows.get(start, 0), int(u["count"]))
        while len(inc.windows) > KEEP_WINDOWS:
            old = min(inc.windows)
            inc.base_count += inc.windows.pop(old)
            inc.base_windows += 1
        inc.first_seen_ms = min(inc.first_seen_ms, fi["first_seen_time"])
        inc.last_seen_ms = max(inc.last_seen_ms, fi["last_seen_time"])
        inc.first_window = min(inc.first_window, start)
        inc.last_end = max(inc.last_end, end)
        if u.get("score") is not None and np.isfinite(u["score"]):
            inc.max_score = max(inc.max_score, float(u["score"]))
        inc.sketch = np.unique(np.concatenate([inc.sketch, np.asarray(sketch, np.uint64)]))[:SKETCH_K]
        for t in u.get("top_sources") or []:
            inc.tops[t["endpoint"]] += int(t["count"])
        if len(inc.tops) > TOP_KEEP:
            inc.tops = Counter(dict(inc.tops.most_common(TOP_KEEP)))
        return self._finding(a, inc)

    def _finding(self, a: dict, inc: _Incident) -> dict:
        b = copy.copy(a)
        u = dict(a["unmapped"])
        fi = dict(a["finding_info"])
        update = inc.n_windows > 1 or fi["uid"] != inc.uid
        act = ACTIVITY_UPDATE if update else ACTIVITY_CREATE
        n_src = max(inc.sources(), int(u.get("sources", 1)))
        facts = FindingFacts(None if u["technique"] == "none" else u["technique"], inc.count, n_src,
                             int(u.get("destinations", 1)), int(u.get("services", 1)), inc.max_score if np.isfinite(inc.max_score) else u["score"],
                             u.get("threshold"), str(u.get("direction", "")), "uid" in a["src_endpoint"])
        inc.severity_id = max(inc.severity_id, severity(facts), int(a["severity_id"]))
        fi.update(uid=inc.uid, first_seen_time=int(inc.first_seen_ms), last_seen_time=int(inc.last_seen_ms),
                  title=title(u.get("group_by", "src"), str(u.get("key")), u["technique"], n_src, facts.transactions))
        b["finding_info"] = fi
        b["metadata"] = {**a["metadata"], "uid": inc.uid}
        b.update(activity_id=act, activity_name="Update" if update else "Create", type_uid=CLASS_UID * 100 + act,
                 severity_id=inc.severity_id, severity=SEVERITIES[inc.severity_id],
                 risk_score=int(min(100, 20 * inc.severity_id)))
        u.update(window_count=int(a["unmapped"]["count"]), count=inc.count, windows=inc.n_windows,
                 first_window_start=inc.first_window, sources=n_src,
                 score=inc.max_score if np.isfinite(inc.max_score) else u["score"],
                 severity_points=points(facts),
                 window_counts={f"{k:.6f}": v for k, v in sorted(inc.windows.items())},
                 base_count=inc.base_count, base_windows=inc.base_windows)
        if inc.tops:
            u["top_sources"] = [{"endpoint": k, "count": v} for k, v in inc.tops.most_common(10)]
        b["unmapped"] = u
        return b

    def _expire(self, now_start: float) -> None:
        """Close the incidents idle for more than ``gap`` before the window starting at ``now_start``."""
        for k in [k for k, inc in self.open.items() if now_start - inc.last_end > self.gap]:
            del self.open[k]
            self.closed += 1

    def _close_oldest(self) -> None:
        k = min(self.open, key=lambda k: self.open[k].last_end)
        del self.open[k]
        self.closed += 1

    # -- restart ---------------------------------------------------------------------------------
    def seed(self, findings: list[dict]) -> int:
        """Restore open incidents from stored findings (the latest per key wins); returns how many."""
        latest: dict[tuple, dict] = {}
        for a in findings:
            k = finding_key(a)
            if k not in latest or a["unmapped"]["window"]["end"] >= latest[k]["unmapped"]["window"]["end"]:
                latest[k] = a
        for k, a in latest.items():
            u, fi = a["unmapped"], a["finding_info"]
            wc = {float(s): int(c) for s, c in (u.get("window_counts") or {}).items()} or \
                {float(u["window"]["start"]): int(u.get("window_count", u["count"]))}
            inc = _Incident(fi["uid"], fi["first_seen_time"], fi["last_seen_time"],
                            float(u.get("first_window_start", u["window"]["start"])), float(u["window"]["end"]),
                            base_count=int(u.get("base_count", 0)), base_windows=int(u.get("base_windows", 0)),
                            windows=wc, max_score=float(u["score"]) if u.get("score") is not None else float("-inf"),
                            severity_id=int(a["severity_id"]), sources_floor=int(u.get("sources", 0)),
                            tops=Counter({t["endpoint"]: int(t["count"]) for t in u.get("top_sources") or []}))
            self.open[k] = inc
        while len(self.open) > self.max_open:
            self._close_oldest()
        return len(latest)

    def seed_from_store(self, path: str | Path) -> int:
        """:meth:`seed` from a SQLite alert store: the findings of its last ``gap`` seconds of event time."""
        if not Path(path).exists():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if not db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='alerts'").fetchone():
                return 0
            (last,) = db.execute("SELECT MAX(window_end) FROM alerts").fetchone()
            if last is None:
                return 0
            rows = db.execute("SELECT finding FROM alerts WHERE window_end >= ? ORDER BY window_end LIMIT ?",
                              (float(last) - self.gap, self.max_open * 4)).fetchall()
        finally:
            db.close()
        return self.seed([json.loads(r[0]) for r in rows])


def tracker_from_config(alerts_cfg: dict[str, Any]) -> IncidentTracker | None:
    """The tracker of the daemon's ``alerts`` section (None when ``incident_gap`` is 0), reseeded from the
    first SQLite sink's store when there is one."""
    gap = float(alerts_cfg.get("incident_gap") or 0)
    if gap <= 0:
        return None
    t = IncidentTracker(gap, int(alerts_cfg.get("incident_max_open") or 100_000))
    for spec in alerts_cfg.get("sinks") or []:
        if spec.get("type") == "sqlite":
            t.seed_from_store(spec.get("path", "alerts.db"))
            break
    return t

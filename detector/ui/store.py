"""The alert queue in SQL: filtering, include/exclude, sorting, paging and grouping.

The alert store is opened read-only (``mode=ro``); the triage database is attached read-only as
``t`` so the queue can filter and sort on triage status without ever writing to the alert records.
When the store file is writable, :func:`ensure_indexes` adds the queue's indexes to it
(``CREATE INDEX IF NOT EXISTS``: indexes only, never a change to a row).

Every value from a request goes into SQL as a bound parameter; field and sort names are looked up in
fixed tables (:data:`FIELDS`, :data:`SORTS`), never pasted.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.ui.fields import summary

log = logging.getLogger(__name__)

MAX_PAGE = 200
SORT_IN_MEMORY = 5000  # matches up to which a page is sorted from the filter's index rather than the sort's
# The destination of a store without a dst_ip column: an expression SQLite can index (ensure_indexes).
DST_JSON = "COALESCE(json_extract(finding, '$.dst_endpoint.ip'), json_extract(finding, '$.dst_endpoint.uid'))"
STATUS = "COALESCE(s.status, 'new')"
SORTS = {"time": "a.window_start", "severity": "a.severity_id", "score": "a.score", "count": "a.count",
         "src": "a.src_ip", "technique": "a.technique", "created": "a.time_ms",
         "last_seen": "a.window_end"}  # a.last_seen where the store has it (findings that span windows)
GROUPS = {"host": ("a.src_ip",), "technique": ("a.technique",), "rule": ("a.technique", "a.src_ip"),
          "rule_dst": ("a.technique", "a.src_ip", "{dst}")}
_COLS = "a.id, a.time_ms, a.window_start, a.window_end, a.src_ip, a.technique, a.severity_id, a.score, a.count, " \
        "a.model_version, a.finding"


def _ro_uri(path: Path) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def ensure_indexes(alerts: Path) -> bool:
    """Add the queue's indexes to a writable alert store; False when it is read-only."""
    if not os.access(alerts, os.W_OK) or not os.access(Path(alerts).parent, os.W_OK):
        return False
    db = sqlite3.connect(str(alerts), timeout=10)
    try:
        have = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
        dst_name, dst = ("ui_dst_ip", "dst_ip, window_start") if "dst_ip" in have else ("ui_dst", DST_JSON)
        extra = (("ui_last", "last_seen"),) if "last_seen" in have else ()
        for name, cols in extra + (("ui_time", "window_start, id"), ("ui_sev", "severity_id, window_start"),
                           ("ui_src", "src_ip, window_start"), ("ui_tech", "technique, window_start"),
                           ("ui_score", "score"), ("ui_created", "time_ms"), (dst_name, dst)):
            db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON alerts({cols})")
        db.commit()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


@dataclass
class Query:
    """A queue request, validated from the URL's parameters by :meth:`from_params`."""

    since: float | None = None
    until: float | None = None
    severity_min: int | None = None
    technique: str | None = None
    host: str | None = None
    status: str | None = None
    text: str | None = None
    include: list[tuple[str, str]] = field(default_factory=list)
    exclude: list[tuple[str, str]] = field(default_factory=list)
    sort: str = "time"
    desc: bool = True
    offset: int = 0
    limit: int = 50
    group: str | None = None

    @classmethod
    def from_params(cls, p: dict[str, list[str]]) -> Query:
        def one(k: str) -> str | None:
            v = (p.get(k) or [""])[-1].strip()
            return v or None

        def num(k: str, kind=float) -> Any:
            v = one(k)
            if v is None:
                return None
            try:
                return kind(v)
            except ValueError:
                raise ValueError(f"parameter {k}={v!r} is not a number") from None

        q = cls(since=num("since"), until=num("until"), severity_min=num("severity", int), technique=one("technique"),
                host=one("host"), status=one("status"), text=one("q"), sort=one("sort") or "time",
                desc=(one("order") or "desc") != "asc", offset=max(0, num("offset", int) or 0),
                limit=min(MAX_PAGE, max(1, num("limit", int) or 50)), group=one("group"))
        for raw in p.get("f", []):
            neg = raw.startswith("-")
            name, sep, value = raw[1 if neg else 0:].partition(":")
            if not sep or name not in FIELDS:
                raise ValueError(f"filter {raw!r}: expected [-]FIELD:VALUE with FIELD one of {', '.join(FIELDS)}")
            (q.exclude if neg else q.include).append((name, value))
        if q.sort not in SORTS:
            raise ValueError(f"sort {q.sort!r}: expected one of {', '.join(SORTS)}")
        if q.group is not None and q.group not in GROUPS:
            raise ValueError(f"group {q.group!r}: expected one of {', '.join(GROUPS)}")
        return q


# Filterable fields: name -> SQL expression over alerts a / triage s ({dst} is the destination).
FIELDS = {"src": "a.src_ip", "dst": "{dst}", "technique": "a.technique", "severity": "a.severity_id",
          "model": "a.model_version", "status": STATUS, "assignee": "s.assignee", "id": "a.id"}


class AlertQueue:
    """Read-only queries on an alert store joined with its triage database."""

    def __init__(self, alerts: Path, triage: Path) -> None:
        self.alerts, self.triage = Path(alerts), Path(triage)
        self.indexed = ensure_indexes(self.alerts)
        if not self.indexed:
            log.warning("%s is read-only: the queue's indexes were not added, a large store pages slower", self.alerts)
        self._local = threading.local()
        self._stamp_db = self._connect()
        self._stamp_lock = threading.Lock()
        cols = {r[1] for r in self._stamp_db.execute("PRAGMA table_info(alerts)")}
        if "id" not in cols:
            raise ValueError(f"{self.alerts} has no alerts table of the graphsentry sqlite sink")
        # The enriched store may carry dst_ip; otherwise the destination comes from the finding JSON.
        self.dst_expr = "a.dst_ip" if "dst_ip" in cols else DST_JSON.replace("finding", "a.finding")
        self.seen_cols = {"first_seen", "last_seen"} <= cols
        self.sorts = {**SORTS, **({"last_seen": "a.last_seen"} if "last_seen" in cols else {})}
        self.extra_cols = [c for c in ("dst_ip", "first_seen", "last_seen", "windows", "sources", "group_by")
                           if c in cols]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(_ro_uri(self.alerts), uri=True, check_same_thread=False, timeout=10)
        db.execute("ATTACH DATABASE ? AS t", (_ro_uri(self.triage),))
        return db

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def stamp(self) -> int:
        """Changes to the alert store seen by this process (``PRAGMA data_version`` grows on each commit)."""
        with self._stamp_lock:
            return int(self._stamp_db.execute("PRAGMA data_version").fetchone()[0]) + \
                int(self._stamp_db.execute("SELECT COALESCE(MAX(rowid), 0) FROM alerts").fetchone()[0])

    def _where(self, q: Query) -> tuple[str, list]:
        w: list[str] = []
        args: list[Any] = []

        def add(sql: str, *values: Any) -> None:
            w.append(sql)
            args.extend(values)

        # time range: the activity overlaps it (first/last seen of a finding that spans windows, else its window)
        if q.since is not None:
            add("a.last_seen >= ?" if self.seen_cols else "a.window_end > ?", q.since)
        if q.until is not None:
            add("a.first_seen < ?" if self.seen_cols else "a.window_start < ?", q.until)
        if q.severity_min is not None:
            add("a.severity_id >= ?", q.severity_min)
        if q.technique:
            # the technique or its sub-techniques ("T1046.xxx" sorts between "T1046." and "T1046/"): index ranges
            add("(a.technique = ? OR (a.technique > ? AND a.technique < ?))", q.technique, q.technique + ".",
                q.technique + "/")
        if q.host:
            add(f"(a.src_ip = ? OR {self.dst_expr} = ?)", q.host, q.host)
        if q.status:
            add(f"{STATUS} = ?", q.status)
        if q.text:
            pat = "%" + _like(q.text) + "%"
            add("(a.id LIKE ? ESCAPE '\\' OR a.src_ip LIKE ? ESCAPE '\\' OR a.technique LIKE ? ESCAPE '\\' "
                "OR a.finding LIKE ? ESCAPE '\\')", pat, pat, pat, pat)
        for neg, items in ((False, q.include), (True, q.exclude)):
            for name, value in items:
                expr = FIELDS[name].format(dst=self.dst_expr)
                if neg:
                    add(f"COALESCE(CAST({expr} AS TEXT), '') != ?", value)
                elif value == "":
                    add(f"({expr} IS NULL OR {expr} = '')")
                else:  # a plain equality, so the field's index serves it
                    add(f"{expr} = ?", value)
        return (" WHERE " + " AND ".join(w)) if w else "", args

    def page(self, q: Query) -> dict:
        """One page of alerts (``items``) and the number matching (``total``)."""
        where, args = self._where(q)
        # The triage join only when a filter needs it: with it SQLite's planner scans instead of using indexes.
        needs = q.status is not None or any(n in ("status", "assignee") for n, _ in q.include + q.exclude)
        frm = " FROM alerts a" + (" LEFT JOIN t.triage s ON s.alert_id = a.id" if needs else "")
        db = self._db()
        total = db.execute("SELECT COUNT(*)" + frm + where, args).fetchone()[0]
        # Few matches: fetch them through the filter's own index and sort them (the unary + keeps SQLite from
        # walking the sort column's index over the whole store); many: walking that index finds a page quickly.
        selective = bool(where) and total <= SORT_IN_MEMORY
        order = (f" ORDER BY {'+' if selective else ''}{self.sorts[q.sort]} {'DESC' if q.desc else 'ASC'}, "
                 f"a.id {'DESC' if q.desc else 'ASC'}")
        sql = (f"SELECT {_COLS}" + "".join(f", a.{c}" for c in self.extra_cols)
               + frm + where + order + " LIMIT ? OFFSET ?")
        cur = db.execute(sql, args + [q.limit, q.offset])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        ids = [r["id"] for r in rows]
        state = {r[0]: {"status": r[1], "assignee": r[2], "verdict": r[3]} for r in db.execute(
            f"SELECT alert_id, status, assignee, verdict FROM t.triage WHERE alert_id IN ({','.join('?' * len(ids))})",
            ids)} if ids else {}
        items = [summary({**r, **state.get(r["id"], {})}) for r in rows]
        return {"total": total, "offset": q.offset, "limit": q.limit, "items": items}

    def groups(self, q: Query) -> dict:
        """Alerts grouped by ``q.group``: key fields, alert and flow counts, first/last seen, top severity."""
        group = q.group or "host"
        keys = [k.format(dst=self.dst_expr) for k in GROUPS[group]]
        where, args = self._where(q)
        key_sql = ", ".join(f"{k} AS k{i}" for i, k in enumerate(keys))
        needs = q.status is not None or any(n in ("status", "assignee") for n, _ in q.include + q.exclude)
        join = " LEFT JOIN t.triage s ON s.alert_id = a.id" if needs else ""
        # open = not triaged yet; the triaged ids are one small set looked up per row (no join to plan around)
        sql = (f"SELECT {key_sql}, COUNT(*) AS n, SUM(a.count) AS flows, MIN(a.window_start) AS first, "
               f"MAX(a.window_end) AS last, MAX(a.severity_id) AS sev, "
               f"SUM(CASE WHEN a.id IN (SELECT alert_id FROM t.triage WHERE status != 'new') THEN 0 ELSE 1 END) "
               f"AS open FROM alerts a{join}{where} GROUP BY {', '.join(f'k{i}' for i in range(len(keys)))}")
        db = self._db()
        # one pass: the number of groups rides along as a window function over the grouped rows
        rows = db.execute(f"SELECT *, COUNT(*) OVER () FROM ({sql}) ORDER BY n DESC, last DESC LIMIT ? OFFSET ?",
                          args + [q.limit, q.offset]).fetchall()
        total = rows[0][-1] if rows else (0 if q.offset == 0 else
                                          db.execute(f"SELECT COUNT(*) FROM ({sql})", args).fetchone()[0])
        names = {"host": ["src"], "technique": ["technique"], "rule": ["technique", "src"],
                 "rule_dst": ["technique", "src", "dst"]}[group]
        items = [{"key": dict(zip(names, r[:len(keys)])), "alerts": r[len(keys)], "flows": r[len(keys) + 1],
                  "first_seen": r[len(keys) + 2], "last_seen": r[len(keys) + 3], "severity_id": r[len(keys) + 4],
                  "open": r[len(keys) + 5]} for r in rows]
        return {"total": total, "offset": q.offset, "limit": q.limit, "group": q.group, "items": items}

    def row(self, alert_id: str) -> dict | None:
        """One alert's store row (with ``finding`` as text), or None."""
        cur = self._db().execute(f"SELECT {_COLS}" + "".join(f", a.{c}" for c in self.extra_cols)
                                 + " FROM alerts a WHERE a.id = ?", (alert_id,))
        r = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], r)) if r else None

    def entity_findings(self, host: str, by_dst: bool = False, limit: int = 200) -> list[dict]:
        """Other findings of this source (or destination, for findings keyed by it), by window."""
        col = self.dst_expr if by_dst else "a.src_ip"
        cur = self._db().execute(
            "SELECT a.id, a.window_start, a.window_end, a.technique, a.severity_id, a.score, a.count "
            f"FROM alerts a WHERE {col} = ? ORDER BY a.window_start DESC LIMIT ?", (host, limit))
        rows = [dict(zip(["id", "window_start", "window_end", "technique", "severity_id", "score", "count"], r))
                for r in cur.fetchall()]
        return rows[::-1]


def _like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

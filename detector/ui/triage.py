"""Triage state of alerts, kept in a SQLite database of its own.

The alert store belongs to the daemon (it upserts findings when a window is re-scored); verdicts
live here, keyed by the alert id, so a re-import or re-score never overwrites one.

Tables: ``triage(alert_id PK, status, verdict, reason, assignee, updated_ms)`` — the current
state — and ``history(alert_id, time_ms, actor, action, detail)`` — every change, never edited.

Actions (:data:`ACTIONS`): ``ack``, ``close`` (``verdict`` true_positive|false_positive and a
``reason``), ``escalate``, ``assign`` (``assignee``), ``comment`` (``text``), ``reopen``.
:func:`export_verdicts` writes the closed alerts as the CSV :func:`ingest.verdicts.read_verdicts` reads.
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

STATUSES = ("new", "acknowledged", "escalated", "closed")
CLOSE_VERDICTS = ("true_positive", "false_positive")
ACTIONS = ("ack", "close", "escalate", "assign", "comment", "reopen")
MAX_TEXT = 2000
MAX_NAME = 64


class TriageError(ValueError):
    """A triage request that cannot be applied (the message says why)."""


def _text(body: dict, key: str, limit: int, required: bool = True) -> str | None:
    v = body.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise TriageError(f"{key!r} is required")
        return None
    if not isinstance(v, str):
        raise TriageError(f"{key!r} must be text")
    v = v.strip()
    if len(v) > limit or "\x00" in v:
        raise TriageError(f"{key!r} is longer than {limit} characters")
    return v


class TriageStore:
    """Triage state and history. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(
            """CREATE TABLE IF NOT EXISTS triage (
                 alert_id TEXT PRIMARY KEY, status TEXT NOT NULL, verdict TEXT, reason TEXT,
                 assignee TEXT, updated_ms INTEGER NOT NULL);
               CREATE INDEX IF NOT EXISTS triage_status ON triage(status);
               CREATE TABLE IF NOT EXISTS history (
                 alert_id TEXT NOT NULL, time_ms INTEGER NOT NULL, actor TEXT, action TEXT NOT NULL,
                 detail TEXT);
               CREATE INDEX IF NOT EXISTS history_alert ON history(alert_id, time_ms);"""
        )
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def revision(self) -> int:
        """Changes so far (grows with every action): the page reloads when it moves."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0])

    def state(self, alert_id: str) -> dict:
        with self._lock:
            r = self._db.execute("SELECT status, verdict, reason, assignee, updated_ms FROM triage WHERE alert_id=?",
                                 (alert_id,)).fetchone()
        if r is None:
            return {"status": "new", "verdict": None, "reason": None, "assignee": None, "updated": None}
        return {"status": r[0], "verdict": r[1], "reason": r[2], "assignee": r[3], "updated": r[4] / 1000}

    def history(self, alert_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT time_ms, actor, action, detail FROM history WHERE alert_id=? "
                                    "ORDER BY time_ms, rowid", (alert_id,)).fetchall()
        return [{"time": t / 1000, "actor": a, "action": act, "detail": json.loads(d) if d else {}}
                for t, a, act, d in rows]

    def apply(self, alert_id: str, body: dict, actor: str, now: float | None = None) -> dict:
        """Apply one action (``body["action"]``) and return the new state; TriageError on a bad request."""
        if not isinstance(body, dict):
            raise TriageError("the request body must be a JSON object")
        action = body.get("action")
        if action not in ACTIONS:
            raise TriageError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        cur = self.state(alert_id)
        new = {k: cur[k] for k in ("status", "verdict", "reason", "assignee")}
        detail: dict[str, Any] = {}
        if action == "ack":
            new["status"] = "acknowledged" if cur["status"] == "new" else cur["status"]
        elif action == "close":
            verdict = body.get("verdict")
            if verdict not in CLOSE_VERDICTS:
                raise TriageError(f"verdict must be one of {', '.join(CLOSE_VERDICTS)}")
            reason = _text(body, "reason", MAX_TEXT)
            new.update(status="closed", verdict=verdict, reason=reason)
            detail = {"verdict": verdict, "reason": reason}
        elif action == "escalate":
            new["status"] = "escalated"
            detail = {"reason": _text(body, "reason", MAX_TEXT, required=False)}
        elif action == "assign":
            new["assignee"] = _text(body, "assignee", MAX_NAME)
            detail = {"assignee": new["assignee"]}
        elif action == "comment":
            detail = {"text": _text(body, "text", MAX_TEXT)}
        elif action == "reopen":
            new.update(status="new", verdict=None, reason=None)
        ms = int((time.time() if now is None else now) * 1000)
        detail["status"] = new["status"]
        with self._lock:
            with self._db:  # one transaction: the state and its history line
                self._db.execute(
                    """INSERT INTO triage VALUES (?,?,?,?,?,?) ON CONFLICT(alert_id) DO UPDATE SET
                       status=excluded.status, verdict=excluded.verdict, reason=excluded.reason,
                       assignee=excluded.assignee, updated_ms=excluded.updated_ms""",
                    (alert_id, new["status"], new["verdict"], new["reason"], new["assignee"], ms))
                self._db.execute("INSERT INTO history VALUES (?,?,?,?,?)",
                                 (alert_id, ms, actor, action, json.dumps(detail)))
        return self.state(alert_id)

    def verdicts(self) -> list[tuple[str, str, str | None]]:
        """``(alert id, verdict, reason)`` of every closed alert, by alert id."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT alert_id, verdict, reason FROM triage WHERE status='closed' AND verdict IS NOT NULL "
                "ORDER BY alert_id")]


def export_verdicts(triage: TriageStore, out: str | os.PathLike) -> int:
    """Write ``alert_id,verdict,reason`` (the format :func:`ingest.verdicts.read_verdicts` reads:
    true_positive -> malicious, false_positive -> benign) and return the number of lines written.
    Written to a temporary name and renamed, so a reader never sees half a file."""
    rows = triage.verdicts()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["alert_id", "verdict", "reason"])
        for aid, verdict, reason in rows:
            w.writerow([aid, verdict, " ".join((reason or "").split())])
    os.replace(tmp, out)
    return len(rows)

"""Alert sinks. Each has ``write(alerts)``, ``flush()`` (returns only once the alerts are durable)
and ``close()``. The daemon commits Kafka offsets only after every *required* sink flushed.

* :class:`SQLiteAlertStore` — embedded default; an upsert on the finding id, so a window
  re-scored after a crash updates its alert instead of duplicating it, and an ongoing incident
  (:mod:`detector.alerts.incidents`) keeps one row that its updates overwrite.
* :class:`JsonLinesSink` — one OCSF JSON object per line, fsync'd on flush.
* :class:`KafkaAlertSink` — a topic, acks=all, keyed by the finding id (consumers see its updates
  in order, on one partition).
* :class:`AlertmanagerSink` — Alertmanager HTTP API v2 ``POST /api/v2/alerts``; notification,
  so not required by default (a down Alertmanager does not stall detection).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from detector.alerts.ocsf import source_id

#: columns added to ``alerts`` after its first version (added to an existing store when it is opened)
EXTRA_COLUMNS = (("dst_ip", "TEXT"), ("group_by", "TEXT"), ("first_seen", "REAL"), ("last_seen", "REAL"),
                 ("windows", "INTEGER"), ("sources", "INTEGER"), ("activity_id", "INTEGER"))

log = logging.getLogger(__name__)


class AlertSink:
    """Base class: ``required`` sinks must flush before offsets are committed.

    ``resumable_flush``: after a failed ``flush()`` the sink still holds what was not written, so
    the daemon retries ``flush()`` alone (writing the alerts again would duplicate them).
    """

    name = "sink"
    required = True
    resumable_flush = False

    def write(self, alerts: list[dict]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()


class JsonLinesSink(AlertSink):
    name = "jsonl"

    def __init__(self, path: str | os.PathLike, required: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self.required = required

    def write(self, alerts: list[dict]) -> None:
        for a in alerts:
            self._f.write(json.dumps(a, separators=(",", ":"), default=str) + "\n")

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()


class SQLiteAlertStore(AlertSink):
    """Alerts in one SQLite table, queryable by time, source, technique and severity."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike, required: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.required = required
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._lock = threading.Lock()
        # WAL + synchronous=FULL: a committed transaction survives a crash of the process or machine.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS alerts (
                 id TEXT PRIMARY KEY, time_ms INTEGER, window_start REAL, window_end REAL,
                 src_ip TEXT, technique TEXT, severity_id INTEGER, score REAL, count INTEGER,
                 model_version TEXT, finding TEXT)"""
        )
        have = {r[1] for r in self._db.execute("PRAGMA table_info(alerts)")}
        for name, typ in EXTRA_COLUMNS:  # migration of a store written before these columns existed
            if name not in have:
                self._db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {typ}")
        self._db.execute("CREATE INDEX IF NOT EXISTS alerts_window ON alerts(window_start)")
        # One row per scored window (an audit of what was scored, written in the same transaction).
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS windows (
                 scored_at REAL, window_start REAL, window_end REAL, records INTEGER, alerts INTEGER,
                 flagged INTEGER, model_version TEXT, rows TEXT)"""
        )
        self._db.commit()

    def record_window(self, info: dict) -> None:
        """Audit row for a scored window (``rows`` only when the daemon's ``audit_rows`` is on)."""
        rows = info.get("rows")
        with self._lock:
            self._db.execute(
                "INSERT INTO windows VALUES (?,?,?,?,?,?,?,?)",
                (time.time(), info["window_start"], info["window_end"], info["records"], info["alerts"],
                 info["flagged"], info.get("model_version", ""), None if rows is None else json.dumps(rows)),
            )

    def write(self, alerts: list[dict]) -> None:
        rows = []
        for a in alerts:
            u, fi = a["unmapped"], a["finding_info"]
            rows.append((
                fi["uid"], a["time"], u["window"]["start"], u["window"]["end"],
                source_id(a), u["technique"], a["severity_id"], u["score"], u["count"],
                u.get("model_version", ""), json.dumps(a, default=str),
                a.get("dst_endpoint", {}).get("ip", a.get("dst_endpoint", {}).get("uid")), u.get("group_by", "src"),
                fi.get("first_seen_time", 0) / 1000.0, fi.get("last_seen_time", 0) / 1000.0,
                int(u.get("windows", 1)), int(u.get("sources", 1)), int(a.get("activity_id", 1)),
            ))
        with self._lock:
            # Upsert on the finding id, keeping the version that saw the most records: after a crash a
            # window may be re-scored from a replay that starts inside it (at-least-once); an incident's
            # update (a later window, a cumulative count) replaces its row.
            self._db.executemany(
                """INSERT INTO alerts (id, time_ms, window_start, window_end, src_ip, technique, severity_id, score,
                     count, model_version, finding, dst_ip, group_by, first_seen, last_seen, windows, sources,
                     activity_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET time_ms=excluded.time_ms, window_start=excluded.window_start,
                     window_end=excluded.window_end, src_ip=excluded.src_ip, severity_id=excluded.severity_id,
                     score=excluded.score, count=excluded.count, model_version=excluded.model_version,
                     finding=excluded.finding, dst_ip=excluded.dst_ip, group_by=excluded.group_by,
                     first_seen=excluded.first_seen, last_seen=excluded.last_seen, windows=excluded.windows,
                     sources=excluded.sources, activity_id=excluded.activity_id
                   WHERE excluded.count >= alerts.count""", rows)

    def flush(self) -> None:
        with self._lock:
            self._db.commit()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def all(self) -> list[dict]:
        with self._lock:
            return [json.loads(r[0]) for r in self._db.execute("SELECT finding FROM alerts ORDER BY window_start, id")]


def read_alert_store(path: str | os.PathLike) -> list[dict]:
    """All findings in a SQLite alert store (read-only helper for tools and tests)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [json.loads(r[0]) for r in db.execute("SELECT finding FROM alerts ORDER BY window_start, id")]
    finally:
        db.close()


class KafkaAlertSink(AlertSink):
    """Alerts on a topic. ``flush`` returns once the broker acknowledged every alert; while it is
    away ``flush`` raises after ``flush_timeout`` and a later ``flush`` goes on with the alerts still
    unacknowledged only (none is sent twice, none is dropped)."""

    name = "kafka"
    resumable_flush = True

    def __init__(self, producer, topic: str, required: bool = True, bootstrap: str = "",
                 flush_timeout: float = 10.0) -> None:
        from ingest.kafka_io import AckedProducer

        self.producer, self.topic, self.required = producer, topic, required
        self.bootstrap = bootstrap
        self._acked = AckedProducer(producer, bootstrap, flush_timeout)

    def write(self, alerts: list[dict]) -> None:
        for a in alerts:
            self._acked.send(self.topic, json.dumps(a, separators=(",", ":"), default=str).encode(),
                             key=a["finding_info"]["uid"].encode())

    def flush(self) -> None:
        self._acked.flush()  # raises while the broker has not acknowledged: offsets are not committed

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._acked.close()


class AlertmanagerSink(AlertSink):
    """POST findings to Alertmanager's API v2 as alerts with labels and annotations.

    Labels: alertname=GraphsentryDetection, finding_uid, severity, technique, src_ip, dst_ip
    (Alertmanager labels are not Prometheus series, so an address is fine here): the updates of one
    ongoing finding carry the same labels, so Alertmanager keeps ONE alert and refreshes it (a
    severity escalation is a new label set: a new notification). ``endsAt`` = now + ``resolve_after``
    so a finding that is not seen again resolves by itself.
    """

    name = "alertmanager"

    def __init__(self, url: str, required: bool = False, timeout: float = 5.0, resolve_after: float = 900.0) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.required, self.timeout, self.resolve_after = required, timeout, resolve_after
        self._pending: list[dict] = []

    def write(self, alerts: list[dict]) -> None:
        now = time.time()
        for a in alerts:
            u = a["unmapped"]
            by = u.get("group_by", "src")
            self._pending.append({
                "labels": {
                    "alertname": "GraphsentryDetection", "severity": a["severity"].lower(),
                    # the finding's key only (the best record's other end changes between updates)
                    "technique": u["technique"], "src_ip": source_id(a) if by == "src" else "",
                    "dst_ip": str(u.get("key", "")) if by == "dst" else "",
                    "finding_uid": a["finding_info"]["uid"], "service": "graphsentry",
                },
                "annotations": {
                    "summary": a["finding_info"]["title"], "score": f"{u['score']:.4g}",
                    "count": str(u["count"]), "sources": str(u.get("sources", 1)),
                    "windows": str(u.get("windows", 1)),
                },
                "startsAt": _rfc3339(a["finding_info"].get("first_seen_time", u["window"]["start"] * 1000) / 1000.0),
                "endsAt": _rfc3339(now + self.resolve_after),
            })

    def flush(self) -> None:
        if not self._pending:
            return
        body = json.dumps(self._pending).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # raises on HTTP errors
            resp.read()
        self._pending = []


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def make_sink(spec: dict[str, Any], kafka_cfg: dict[str, Any] | None = None) -> AlertSink:
    """Build a sink from a config entry: ``{type: sqlite|jsonl|kafka|alertmanager, ...}``."""
    kind = spec.get("type")
    req = spec.get("required")
    if kind == "sqlite":
        return SQLiteAlertStore(spec.get("path", "alerts.db"), required=True if req is None else bool(req))
    if kind == "jsonl":
        return JsonLinesSink(spec["path"], required=True if req is None else bool(req))
    if kind == "kafka":
        from ingest.kafka_io import make_producer

        cfg = dict(kafka_cfg or {})
        if spec.get("bootstrap"):
            cfg["bootstrap"] = spec["bootstrap"]
        return KafkaAlertSink(make_producer(cfg), spec.get("topic", "graphsentry-alerts"),
                              required=True if req is None else bool(req), bootstrap=str(cfg.get("bootstrap", "")),
                              flush_timeout=float(spec.get("flush_timeout") or 10.0))
    if kind == "alertmanager":
        return AlertmanagerSink(spec.get("url", "http://127.0.0.1:9093"),
                                required=False if req is None else bool(req))
    raise ValueError(f"unknown alert sink type {kind!r}; expected sqlite, jsonl, kafka or alertmanager")

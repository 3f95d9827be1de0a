"""kill -9 of `graphsentry serve` mid-stream, then a restart: every record scored, no alert missing."""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from daemon_helpers import log_tail, make_flows, reference_alerts, serve_process, write_fanout_model
from kafka_fixtures import new_topic

from detector.alerts import alert_key
from detector.alerts.sinks import read_alert_store
from ingest.kafka_io import make_producer, replay

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
SIZE, LATE = 10.0, 1.0


def _windows(db: Path) -> list[tuple[float, int, list[int]]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return [(w, n, json.loads(r)) for w, n, r in con.execute("SELECT window_start, records, rows FROM windows")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_kill9_mid_stream_then_restart_accounts_for_every_record(kafka_bootstrap, tmp_path):
    t = make_flows(n_benign=2000, n_scan=400, duration=120.0, seed=11)   # 12 windows of 10 s
    topic = new_topic(kafka_bootstrap, 2)
    p = make_producer({"bootstrap": kafka_bootstrap})
    replay([t], p, topic, 2, fmt="json")
    p.close()
    write_fanout_model(tmp_path / "model", delay=0.5)                     # slow enough to die mid-stream
    db = tmp_path / "alerts.db"
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(json.dumps({
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-crash", "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "commit_interval": 0.2, "max_poll_records": 100},
        "window": {"size": SIZE, "lateness": LATE, "idle_timeout": 2.0},
        "model": {"path": str(tmp_path / "model"), "loader": "daemon_helpers:load_fanout", "watch": False},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(db)}]},
        "metrics": {"port": 0}, "pipeline": {"audit_rows": True, "queue_size": 4, "window_queue_size": 2},
    }))
    first = serve_process(cfg, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 90
        while len(_windows(db)) < 3:
            assert first.poll() is None, "daemon exited early"
            assert time.monotonic() < deadline, "daemon scored nothing"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = _windows(db)
    assert 3 <= len(before) < 12, "the kill must land mid-stream"
    second = serve_process(cfg, tmp_path / "second.log", {"GRAPHSENTRY_KAFKA_STOP_AT_END": "true"})
    try:
        assert second.wait(150) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    after = _windows(db)
    scored = [r for _, _, rows in after for r in rows]
    missing = sorted(set(range(t.num_rows)) - set(scored))
    assert not missing, f"rows never scored: {missing}\n--- restarted daemon ---\n{log_tail(tmp_path / 'second.log')}"
    assert set(scored) == set(range(t.num_rows))                 # every input record scored ...
    assert sum(n for _, n, _ in after) >= t.num_rows             # ... at least once
    got = read_alert_store(db)
    ref = reference_alerts(t, SIZE, LATE)
    assert sorted(map(alert_key, got)) == sorted(map(alert_key, ref))   # no alert missing, none invented
    assert {alert_key(a): a["unmapped"]["count"] for a in got} == {alert_key(a): a["unmapped"]["count"] for a in ref}

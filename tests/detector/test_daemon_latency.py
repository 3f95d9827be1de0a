"""Event-to-alert latency: a quiet live stream closes its last window at its end plus the lateness (not after
``window.idle_timeout``), a backlog does not, and ``graphsentry_event_to_alert_seconds`` sees every alert."""
from __future__ import annotations

import threading
import time

import pytest

from daemon_helpers import FanoutScorer, make_flows
from detector.daemon import Daemon, load_config, scorer_model
from ingest.windows import EventTimeWindower, Tumbling

SIZE, LATE = 4.0, 0.5


def file_daemon(tmp_path) -> Daemon:
    (tmp_path / "in.log").write_text("")
    cfg = load_config(overrides={
        "source": {"type": "file", "paths": [str(tmp_path / "in.log")]},
        "window": {"size": SIZE, "lateness": LATE, "idle_timeout": 60.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "a.db")}]},
        "metrics": {"enabled": False}, "model": {"watch": False},
    }, env={})
    return Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False)


def windower_at(newest: float) -> EventTimeWindower:
    w = EventTimeWindower(Tumbling(SIZE), lateness=LATE, idle_timeout=60.0)
    t = make_flows(n_benign=50, n_scan=0, duration=SIZE * 2, t0=newest - SIZE * 2)
    w.push(t)
    return w


def test_a_quiet_live_stream_closes_its_windows_with_the_wall_clock(tmp_path):
    d = file_daemon(tmp_path)
    w = windower_at(time.time())
    newest = w.max_event_time
    end = max(e for _s, e in w.open_windows)
    assert d._quiet_watermark(w, time.monotonic()) == []           # not quiet for longer than the lateness yet
    # quiet for as long as it takes event time to pass the last window's end plus the lateness
    closed = d._quiet_watermark(w, time.monotonic() - (end - newest + LATE + 0.01))
    assert closed and w.open_windows == [] and max(c.end for c in closed) == pytest.approx(end)


def test_a_backlog_is_left_to_the_idle_timeout(tmp_path):
    d = file_daemon(tmp_path)
    w = windower_at(time.time() - 3600.0)  # event times an hour old: a backlog being read, not a live stream
    assert d._quiet_watermark(w, time.monotonic() - 30.0) == []
    assert w.open_windows


@pytest.mark.kafka
@pytest.mark.slow
def test_the_last_window_of_a_live_burst_alerts_within_window_plus_lateness(kafka_bootstrap, tmp_path):
    """A burst of live flows (scanners in its last window), then silence: the alerts come at about the window's
    end + lateness, although ``window.idle_timeout`` is 60 s; the latency histogram saw each alert."""
    from detector.alerts.sinks import read_alert_store
    from ingest.kafka_io import make_producer, replay
    from kafka_fixtures import new_topic

    topic = new_topic(kafka_bootstrap, 2)
    cfg = load_config(overrides={
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-lat", "dead_letter_topic": None,
                  "commit_interval": 0.5},
        "window": {"size": SIZE, "lateness": LATE, "idle_timeout": 60.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "a.db")}]},
        "metrics": {"port": 0}, "model": {"watch": False},
        # the merge may hold a silent partition back 30 s; a quiet live stream is not held at all
        "pipeline": {"partition_idle": 30.0},
    }, env={})
    d = Daemon(cfg, model=scorer_model(FanoutScorer(threshold=20.0)), install_signals=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()), daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 60
        while not (d.source is not None and d.source.assigned):
            assert time.monotonic() < deadline, "no partitions assigned"
            time.sleep(0.1)
        now = time.time()
        t = make_flows(n_benign=300, n_scan=150, duration=SIZE * 2 - 0.2, seed=4, t0=now - SIZE * 2 + 0.2)
        p = make_producer({"bootstrap": kafka_bootstrap})
        replay([t], p, topic, 2, fmt="json")
        p.close()
        sent = time.monotonic()
        deadline = sent + 30
        while d.summary.records_scored + d.summary.late < t.num_rows:
            assert time.monotonic() < deadline, "the burst's windows did not close by the wall clock"
            time.sleep(0.1)
        took = time.monotonic() - sent
        hist_count = d.metrics.value("graphsentry_event_to_alert_seconds_count")
        stage_counts = {st: d.metrics.value("graphsentry_window_stage_seconds_count", {"stage": st})
                        for st in ("close", "queued", "score", "alerts", "write")}
    finally:
        d.stop("test")
        th.join(60)
    s = out["s"]
    assert took < SIZE + LATE + 5.0          # far from the 60 s idle timeout
    assert s.alerts > 0 and hist_count == s.alerts
    assert s.event_to_alert_p99_s is not None and s.event_to_alert_p99_s < 2 * SIZE + LATE + 5.0
    assert len(read_alert_store(tmp_path / "a.db")) == s.alerts
    # where the seconds went, per window: every scored window has its row, a live stream's its close delay
    rows = list(d.window_timings)
    assert len(rows) == s.windows_scored == stage_counts["score"] == stage_counts["write"] == stage_counts["close"]
    assert sum(r["records"] for r in rows) == s.records_scored
    for r in rows:
        # the burst is sent up to 2 windows after its event times: its windows are due before they are read
        assert r["close"] is not None and -1.0 < r["close"] < 2 * SIZE + LATE + 5.0
        assert r["queued"] >= 0.0 and r["score"] > 0.0 and r["alerts"] > 0.0 and r["write"] > 0.0

"""Ongoing activity is one finding: the incident tracker folds consecutive windows of one key into one finding
(same uid, cumulative count, first/last seen, OCSF Update), opens a new one after the gap, is idempotent under
replay and bounded; the SQLite store keeps one row per finding (with the added columns, migrated in old stores),
a restarted daemon continues the finding from its store, and the archive's alert ids are the stored ones."""
from __future__ import annotations

import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest

from daemon_helpers import T0, FanoutScorer, make_flows, read_archived
from detector.alerts import IncidentTracker, build_alerts
from detector.alerts.sinks import AlertmanagerSink, SQLiteAlertStore, read_alert_store
from detector.alerts.stage import AlertStage
from detector.daemon import load_config, run_daemon
from ingest.windows import EventTimeWindower, Tumbling

SCANNER = "10.0.9.9"


def _scan_windows(duration=40.0, size=10.0, t0=T0, n_scan=120, seed=0):
    """Windows of benign chatter with one scanner active in the middle ~30% of ``duration``."""
    t = make_flows(n_scan=n_scan, duration=duration, t0=t0, seed=seed)
    w = EventTimeWindower(Tumbling(size), lateness=0.0)
    return w.push(t) + w.flush()


def _scan_alerts(windows):
    return [build_alerts(win, FanoutScorer().score_window(win), threshold=20.0, now=0.0) for win in windows]


def test_consecutive_windows_update_one_finding():
    was = _scan_alerts(_scan_windows(duration=100.0))       # the scan spans windows 30..60 s
    per_window = [a for wa in was for a in wa.alerts]
    assert len(per_window) >= 3
    tr = IncidentTracker(gap=10.0)
    out = [a for wa in was for a in tr.fold(wa).alerts]
    uids = {a["finding_info"]["uid"] for a in out}
    assert len(uids) == 1 and uids == {per_window[0]["finding_info"]["uid"]}   # the first window's id
    assert [a["activity_id"] for a in out] == [1] + [2] * (len(out) - 1)
    assert [a["type_uid"] for a in out] == [200401] + [200402] * (len(out) - 1)
    last = out[-1]
    assert last["unmapped"]["count"] == sum(a["unmapped"]["count"] for a in per_window)
    assert last["unmapped"]["windows"] == len(per_window)
    assert last["unmapped"]["window_count"] == per_window[-1]["unmapped"]["count"]
    assert last["finding_info"]["first_seen_time"] == per_window[0]["finding_info"]["first_seen_time"]
    assert last["finding_info"]["last_seen_time"] == per_window[-1]["finding_info"]["last_seen_time"]
    assert last["severity_id"] >= max(a["severity_id"] for a in per_window)


def test_a_pause_longer_than_the_gap_opens_a_new_finding():
    first = _scan_windows(duration=40.0)
    again = _scan_windows(duration=40.0, t0=T0 + 1000.0, seed=1)   # the same scanner 1000 s later
    tr = IncidentTracker(gap=300.0)
    uids = [a["finding_info"]["uid"] for wa in _scan_alerts(first + again) for a in tr.fold(wa).alerts]
    assert len(set(uids)) == 2 and tr.closed >= 1
    tr_long = IncidentTracker(gap=2000.0)
    assert len({a["finding_info"]["uid"] for wa in _scan_alerts(first + again) for a in tr_long.fold(wa).alerts}) == 1


def test_a_replayed_window_is_not_counted_twice():
    was = [wa for wa in _scan_alerts(_scan_windows(duration=100.0)) if wa.alerts]
    tr = IncidentTracker(gap=10.0)
    once = [tr.fold(wa) for wa in was][-1].alerts[-1]["unmapped"]["count"]
    again = tr.fold(was[-1]).alerts           # at-least-once: the last window is scored and folded again
    assert again[-1]["unmapped"]["count"] == once and again[-1]["unmapped"]["windows"] == len(was)


def test_open_incidents_are_bounded():
    tr = IncidentTracker(gap=1e9, max_open=2)
    wins = [_scan_windows(duration=30.0, size=100.0, t0=T0 + 1000 * k, seed=k)[0] for k in range(4)]
    for win in wins:
        ws = FanoutScorer(threshold=0.0).score_window(win)   # every source flagged: many keys
        tr.fold(build_alerts(win, ws, threshold=1.0, now=0.0))
    assert len(tr.open) == 2
    with pytest.raises(ValueError, match="must be > 0"):
        IncidentTracker(gap=0)


def test_finding_ids_of_records_follow_the_incident():
    was = _scan_alerts(_scan_windows(duration=100.0))
    tr = IncidentTracker(gap=10.0)
    folded = [tr.fold(wa) for wa in was if wa.alerts]
    ids = {x for wa in folded for x in wa.finding_of if x is not None}
    assert ids == {folded[-1].alerts[-1]["finding_info"]["uid"]}
    assert sum(x is not None for wa in folded for x in wa.finding_of) == folded[-1].alerts[-1]["unmapped"]["count"]


def test_sqlite_keeps_one_row_per_finding_and_a_new_tracker_continues_it(tmp_path):
    was = _scan_alerts(_scan_windows(duration=100.0))
    half = len(was) // 2 + 1
    db = SQLiteAlertStore(tmp_path / "a.db")
    tr = IncidentTracker(gap=10.0)
    for wa in was[:half]:
        db.write(tr.fold(wa).alerts)
        db.flush()
    db.close()
    tr2 = IncidentTracker(gap=10.0)          # a restarted daemon
    assert tr2.seed_from_store(tmp_path / "a.db") >= 1
    db = SQLiteAlertStore(tmp_path / "a.db")
    for wa in was[half - 1:]:                # one window replayed (its offsets were not committed) + the rest
        db.write(tr2.fold(wa).alerts)
        db.flush()
    db.close()
    rows = read_alert_store(tmp_path / "a.db")
    assert len(rows) == 1
    total = sum(a["unmapped"]["count"] for wa in was for a in wa.alerts)
    assert rows[0]["unmapped"]["count"] == total and rows[0]["unmapped"]["windows"] == sum(bool(w.alerts) for w in was)
    con = sqlite3.connect(tmp_path / "a.db")
    (r,) = con.execute("SELECT id, src_ip, technique, count, dst_ip, group_by, first_seen, last_seen, windows, "
                       "sources, activity_id FROM alerts").fetchall()
    con.close()
    assert r[1:4] == (SCANNER, "T1046", total) and r[5] == "src" and r[6] < r[7] and r[8] >= 3 and r[10] == 2


def test_old_stores_are_migrated(tmp_path):
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute("""CREATE TABLE alerts (id TEXT PRIMARY KEY, time_ms INTEGER, window_start REAL, window_end REAL,
                   src_ip TEXT, technique TEXT, severity_id INTEGER, score REAL, count INTEGER,
                   model_version TEXT, finding TEXT)""")
    con.execute("INSERT INTO alerts VALUES ('x', 1, 0, 10, '1.2.3.4', 'none', 2, 1.5, 1, 'm', '{}')")
    con.commit()
    con.close()
    SQLiteAlertStore(tmp_path / "old.db").close()
    con = sqlite3.connect(tmp_path / "old.db")
    cols = [r[1] for r in con.execute("PRAGMA table_info(alerts)")]
    assert cols[:11] == ["id", "time_ms", "window_start", "window_end", "src_ip", "technique", "severity_id", "score",
                         "count", "model_version", "finding"]
    assert {"dst_ip", "group_by", "first_seen", "last_seen", "windows", "sources", "activity_id"} <= set(cols)
    assert con.execute("SELECT id, count FROM alerts").fetchall() == [("x", 1)]
    con.close()


def test_alertmanager_sees_one_alert_per_finding():
    was = _scan_alerts(_scan_windows(duration=100.0))
    tr = IncidentTracker(gap=10.0)
    am = AlertmanagerSink("http://127.0.0.1:9")
    for wa in was:
        am.write(tr.fold(wa).alerts)
    labels = [p["labels"] for p in am._pending]
    assert len(labels) >= 3
    assert all({k: v for k, v in lab.items() if k != "severity"} == {k: v for k, v in labels[0].items()
                                                                     if k != "severity"} for lab in labels)
    assert labels[0]["src_ip"] == SCANNER and labels[0]["finding_uid"]
    assert len({p["startsAt"] for p in am._pending}) == 1


def _cfg(tmp_path, paths, **alerts):
    return load_config(overrides={
        "source": {"paths": [str(p) for p in paths]}, "window": {"size": 10.0, "lateness": 1.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}], **alerts},
        "archive": {"enabled": True, "path": str(tmp_path / "archive")},
        "metrics": {"port": 0}, "model": {"watch": False}}, env={})


def test_daemon_folds_windows_and_continues_after_a_restart(tmp_path):
    pq.write_table(make_flows(duration=100.0, n_scan=240), tmp_path / "a.parquet")
    s = run_daemon(_cfg(tmp_path, [tmp_path / "a.parquet"], incident_gap=30.0), scorer=FanoutScorer(),
                   install_signals=False)
    assert s.windows_scored >= 10
    first = [a for a in read_alert_store(tmp_path / "alerts.db") if a["unmapped"]["key"] == SCANNER]
    assert len(first) == 1 and first[0]["unmapped"]["windows"] >= 3
    assert s.alerts == len(read_alert_store(tmp_path / "alerts.db"))      # findings, not their updates
    arch = read_archived(tmp_path / "archive")
    ids = {x for x in arch.column("alert_id").to_pylist() if x}
    assert ids == {a["finding_info"]["uid"] for a in read_alert_store(tmp_path / "alerts.db")}
    # the scan goes on in the next file, 10 s after the first ended: a restarted daemon updates the same finding
    pq.write_table(make_flows(duration=100.0, n_scan=240, t0=T0 + 110.0, seed=3), tmp_path / "b.parquet")
    run_daemon(_cfg(tmp_path, [tmp_path / "b.parquet"], incident_gap=200.0), scorer=FanoutScorer(),
               install_signals=False)
    after = [a for a in read_alert_store(tmp_path / "alerts.db") if a["unmapped"]["key"] == SCANNER]
    assert len(after) == 1 and after[0]["finding_info"]["uid"] == first[0]["finding_info"]["uid"]
    assert after[0]["unmapped"]["count"] > first[0]["unmapped"]["count"]
    assert after[0]["finding_info"]["first_seen_time"] == first[0]["finding_info"]["first_seen_time"]
    assert AlertStage.from_config({"incident_gap": 0}).tracker is None
    assert np.isfinite(after[0]["unmapped"]["score"])


@pytest.mark.kafka
def test_kafka_messages_are_keyed_by_the_finding(kafka_bootstrap):
    import json

    from detector.alerts.sinks import KafkaAlertSink
    from ingest.kafka_io import iter_topic, make_producer
    from kafka_fixtures import new_topic

    topic = new_topic(kafka_bootstrap, 3)
    sink = KafkaAlertSink(make_producer({"bootstrap": kafka_bootstrap}), topic, bootstrap=kafka_bootstrap)
    tr = IncidentTracker(gap=10.0)
    sent = []
    for wa in _scan_alerts(_scan_windows(duration=100.0)):
        folded = tr.fold(wa).alerts
        sink.write(folded)
        sent += folded
    sink.close()
    msgs = list(iter_topic(kafka_bootstrap, topic, idle_s=1.5))
    assert len(msgs) == len(sent) >= 3
    assert {m.key.decode() for m in msgs} == {sent[0]["finding_info"]["uid"]}
    assert len({m.partition for m in msgs}) == 1                      # one finding, one partition: in order
    counts = [json.loads(m.value)["unmapped"]["count"] for m in sorted(msgs, key=lambda m: m.offset)]
    assert counts == sorted(counts) and counts[-1] == sent[-1]["unmapped"]["count"]

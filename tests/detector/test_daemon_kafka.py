"""The daemon against a real Kafka-protocol broker: alerts topic, dead letters, replicas, reload, restarts.

These use the fan-out scorer (passed in; a real, simple detector) so they test the transport and the
delivery guarantees; test_daemon_bundle.py runs the trained ModelBundle end to end.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from daemon_helpers import FanoutScorer, load_fanout, make_flows, reference_alerts, write_fanout_model
from detector.alerts import alert_key
from detector.alerts.sinks import read_alert_store
from detector.daemon import Daemon, load_config, scorer_model
from ingest.kafka_io import iter_topic, make_producer, replay
from kafka_fixtures import new_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
SIZE, LATE = 10.0, 1.0


def kcfg(tmp_path, bootstrap, topic, group, **over):
    base = {
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": group, "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "commit_interval": 0.3, "dead_letter_topic": f"{topic}-dlq"},
        "window": {"size": SIZE, "lateness": LATE, "idle_timeout": 1.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / f"{group}.db")}]},
        "metrics": {"port": 0}, "model": {"watch": False}, "pipeline": {"audit_rows": True, "partition_idle": 5.0},
    }
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(overrides=base, env={})


@contextmanager
def running(daemon: Daemon):
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("summary", daemon.run()), daemon=True)
    th.start()
    try:
        yield out
    finally:
        daemon.stop("test")
        th.join(60)
        assert not th.is_alive(), "daemon did not stop"


def wait(cond, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def scored_rows(db: Path) -> list[int]:
    con = sqlite3.connect(db)
    try:
        return [r for (rows,) in con.execute("SELECT rows FROM windows") for r in json.loads(rows)]
    finally:
        con.close()


def split_at_window(t, boundary_s: float):
    """(records before, records from) an event-time window boundary: an idle flush between the two
    halves then closes only windows the second half cannot fall into (nothing becomes late)."""
    import pyarrow as pa

    ts = t.column("ts").cast(pa.int64()).to_numpy() / 1e6
    k = int(np.searchsorted(ts, ts[0] - (ts[0] % SIZE) + boundary_s))
    return k


def publish(bootstrap, topic, parts, table, fmt="json"):
    p = make_producer({"bootstrap": bootstrap})
    try:
        return replay([table], p, topic, parts, fmt=fmt, arrow_batch=100)
    finally:
        p.close()


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_alert_topic_matches_reference_and_malformed_goes_to_dead_letter(kafka_bootstrap, tmp_path, backend):
    if backend == "confluent":
        pytest.importorskip("confluent_kafka", reason="optional backend: pip install confluent-kafka")
    t = make_flows()
    topic, atopic = new_topic(kafka_bootstrap, 2), new_topic(kafka_bootstrap, 1, "alerts")
    publish(kafka_bootstrap, topic, 2, t.slice(0, 300), "json")
    publish(kafka_bootstrap, topic, 2, t.slice(300), "arrow")      # both formats on one topic
    p = make_producer({"bootstrap": kafka_bootstrap})
    p.send(topic, b'{"ts": "not a time", "src_ip": "1.1.1.1", "dst_ip": "2.2.2.2"}', partition=0)
    p.send(topic, b"\x00garbage", partition=1)
    p.close()
    cfg = kcfg(tmp_path, kafka_bootstrap, topic, f"g-e2e-{backend}", kafka={"stop_at_end": True, "backend": backend},
               alerts={"sinks": [{"type": "kafka", "topic": atopic}]})
    d = Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False)
    s = d.run()
    assert s.records_in == s.records_scored == t.num_rows and s.late == 0
    got = [json.loads(m.value) for m in iter_topic(kafka_bootstrap, atopic, idle_s=1.5)]
    ref = reference_alerts(t, SIZE, LATE)
    assert ref and sorted(map(alert_key, got)) == sorted(map(alert_key, ref))
    assert {alert_key(a): a["unmapped"]["count"] for a in got} == {alert_key(a): a["unmapped"]["count"] for a in ref}
    dead = [json.loads(m.value) for m in iter_topic(kafka_bootstrap, f"{topic}-dlq", idle_s=1.5)]
    assert sorted(x["reason"] for x in dead) == ["bad_ts", "unknown_format"]
    assert d.metrics.value("graphsentry_malformed_total", {"reason": "bad_ts"}) == 1
    assert d.metrics.value("graphsentry_malformed_total", {"reason": "unknown_format"}) == 1
    assert d.metrics.value("graphsentry_dead_letter_total", {"reason": "bad_ts"}) == 1
    lag = d.metrics.render().decode()
    assert f'graphsentry_consumer_lag{{partition="0",topic="{topic}"}}' in lag
    assert f'graphsentry_consumer_lag{{partition="1",topic="{topic}"}}' in lag
    # offsets of everything, bad messages included, were committed: 300 json + arrow msgs + 2 bad
    assert sum(s.committed.values()) > 300


def test_two_replicas_split_partitions_and_produce_the_same_alerts(kafka_bootstrap, tmp_path):
    t = make_flows(n_benign=600, n_scan=150, seed=3)
    topic = new_topic(kafka_bootstrap, 4)
    ds = [Daemon(kcfg(tmp_path, kafka_bootstrap, topic, "g-rep",
                      alerts={"sinks": [{"type": "sqlite", "path": str(tmp_path / f"r{i}.db")}]}),
                 model=scorer_model(FanoutScorer()), install_signals=False) for i in range(2)]
    with running(ds[0]), running(ds[1]):
        wait(lambda: all(d.source is not None and d.source.assigned for d in ds)
             and sum(len(d.source.assigned) for d in ds) == 4, 60, "both replicas assigned")
        a0, a1 = set(ds[0].source.assigned), set(ds[1].source.assigned)
        publish(kafka_bootstrap, topic, 4, t, "json")
        wait(lambda: sum(d.summary.records_scored for d in ds) >= t.num_rows, 90, "all records scored")
        time.sleep(1.0)  # let the last commits go out
    assert a0 and a1 and not (a0 & a1) and len(a0 | a1) == 4
    assert all(d.summary.records_scored > 0 for d in ds)
    got = read_alert_store(tmp_path / "r0.db") + read_alert_store(tmp_path / "r1.db")
    ref = reference_alerts(t, SIZE, LATE)
    # Keying by source endpoint keeps each source's flows in one replica, so per-source alerts agree.
    assert sorted(map(alert_key, got)) == sorted(map(alert_key, ref))
    assert sorted(scored_rows(tmp_path / "r0.db") + scored_rows(tmp_path / "r1.db")) == list(range(t.num_rows))


def test_model_swap_mid_stream(kafka_bootstrap, tmp_path):
    t = make_flows(n_benign=600, n_scan=200, duration=60.0, seed=5)
    half = split_at_window(t, 30.0)
    topic = new_topic(kafka_bootstrap, 2)
    write_fanout_model(tmp_path / "m1", threshold=20.0, technique="T1046", version="v1")
    write_fanout_model(tmp_path / "m2", threshold=2.0, technique="T1595", version="v2")
    pointer = tmp_path / "current"
    pointer.write_text("m1\n")
    cfg = kcfg(tmp_path, kafka_bootstrap, topic, "g-swap",
               model={"path": str(pointer), "watch": True, "watch_interval": 0.2})
    d = Daemon(cfg, loader=load_fanout, install_signals=False)
    with running(d):
        wait(lambda: d.source is not None and d.source.assigned, 60, "assignment")
        publish(kafka_bootstrap, topic, 2, t.slice(0, half))
        wait(lambda: d.summary.records_scored + d.summary.late >= half, 60, "first half scored")
        tmp = tmp_path / "current.tmp"
        tmp.write_text("m2\n")
        tmp.replace(pointer)                       # atomic promotion of the new model
        time.sleep(1.0)  # the watcher (0.2 s) loads it beside the running model; swap at the next window
        publish(kafka_bootstrap, topic, 2, t.slice(half))
        wait(lambda: d.summary.records_scored + d.summary.late >= t.num_rows, 60, "all scored")
    s = d.summary
    assert s.model_reloads == 1 and s.model_version == "v2"
    assert 'version="v2"' in d.metrics.render().decode()
    con = sqlite3.connect(tmp_path / "g-swap.db")
    wins = con.execute("SELECT window_start, model_version, rows FROM windows ORDER BY scored_at").fetchall()
    con.close()
    rows = [r for _, _, rr in wins for r in json.loads(rr)]
    assert sorted(rows) == list(range(t.num_rows))   # no record dropped or scored twice by the swap
    versions = [v for _, v, _ in wins]
    k = versions.index("v2")
    assert set(versions[:k]) == {"v1"} and set(versions[k:]) == {"v2"}  # one switch, between windows
    by_version = {a["unmapped"]["model_version"] for a in read_alert_store(tmp_path / "g-swap.db")}
    assert by_version == {"v1", "v2"}


def test_broker_restart_loses_nothing(noida_broker, tmp_path):
    b = noida_broker
    t = make_flows(n_benign=600, n_scan=150, duration=60.0, seed=7)
    half = split_at_window(t, 30.0)
    topic = new_topic(b.bootstrap, 2)
    cfg = kcfg(tmp_path, b.bootstrap, topic, "g-restart", kafka={"dead_letter_topic": None})
    d = Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False)
    with running(d):
        wait(lambda: d.source is not None and d.source.assigned, 60, "assignment")
        publish(b.bootstrap, topic, 2, t.slice(0, half))
        wait(lambda: d.summary.records_in >= half, 60, "first half read")
        b.stop()
        time.sleep(2.0)
        b.start()
        publish(b.bootstrap, topic, 2, t.slice(half))
        wait(lambda: d.summary.records_scored + d.summary.late >= t.num_rows, 120, "all scored after restart")
        wait(lambda: sum(d.source.committed_offsets().values()) >= t.num_rows, 30, "final commits")
    # Records the consumer fetches again after the reconnect are ones the daemon holds: they are
    # dropped by offset, so every record is scored exactly once and none turns up late.
    assert sorted(scored_rows(tmp_path / "g-restart.db")) == list(range(t.num_rows))
    assert d.summary.late == 0
    got = read_alert_store(tmp_path / "g-restart.db")
    assert sorted(map(alert_key, got)) == sorted(map(alert_key, reference_alerts(t, SIZE, LATE)))


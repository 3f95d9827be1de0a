"""The daemon waits out its broker: absent at startup, stopped mid-stream, and `replay` to a dead port.

Real brokers (noida-db keeps messages and committed offsets on disk across its own restart). The
fan-out scorer (daemon_helpers) is a real, simple detector passed in, so alerts can be compared with
an uninterrupted reference; the SQLite audit rows show every record was scored exactly once.
"""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon_helpers import FanoutScorer, make_flows, reference_alerts
from detector.alerts import alert_key
from detector.alerts.sinks import read_alert_store
from detector.daemon import Daemon, scorer_model
from ingest.kafka_io import ensure_topics, iter_topic
from kafka_fixtures import NoidaBroker, free_port
from test_daemon_kafka import LATE, SIZE, kcfg, publish, running, scored_rows, split_at_window, wait

REPO = Path(__file__).resolve().parents[2]
kafka_slow = [pytest.mark.kafka, pytest.mark.slow]


def readyz(d: Daemon) -> bool:
    url = d.summary.metrics_url.replace("/metrics", "/readyz")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())["ready"]
    except urllib.error.HTTPError as e:
        assert e.code == 503
        return json.loads(e.read())["ready"]


def broker_up(d: Daemon) -> float:
    return d.metrics.value("graphsentry_broker_up")


def waiting_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for Kafka at ")]


def outage_cfg(tmp_path, bootstrap, topic, group, **over):
    cfg = kcfg(tmp_path, bootstrap, topic, group, **over)
    # kafka-python refreshes topic metadata every 5 min by default: a topic created after the daemon
    # subscribed would wait that long
    cfg["kafka"]["client_options"] = {"metadata_max_age_ms": 1000}
    cfg["kafka"]["retry_backoff_max_s"] = 4.0   # the daemon's default cap is 30 s; keep the test short
    cfg["pipeline"]["progress_interval"] = 1.0
    return cfg


@pytest.mark.kafka
@pytest.mark.slow
def test_serve_waits_for_a_broker_that_is_not_there_yet(tmp_path, caplog):
    b = NoidaBroker(tmp_path / "noida-data")       # a fixed free port, nothing listening yet
    b.data_dir.mkdir()
    t = make_flows(n_benign=500, n_scan=120, seed=11)
    topic = "flows-late-broker"
    cfg = outage_cfg(tmp_path, b.bootstrap, topic, "g-late")
    d = Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False)
    caplog.set_level(logging.INFO)
    try:
        with running(d):
            wait(lambda: d.summary.metrics_url is not None, 20, "metrics server")
            wait(lambda: waiting_lines(caplog), 30, "a 'waiting for Kafka' log line")
            time.sleep(1.5)
            assert readyz(d) is False and broker_up(d) == 0.0
            line = waiting_lines(caplog)[0]
            assert f"waiting for Kafka at {b.bootstrap} (topic " in line and "connection refused" in line
            assert "; retry in " in line
            b.start()
            ensure_topics(b.bootstrap, {topic: 2})
            wait(lambda: d.source is not None and d.source.assigned, 60, "assignment after the broker came")
            wait(lambda: readyz(d) is True, 20, "ready")
            assert broker_up(d) == 1.0
            publish(b.bootstrap, topic, 2, t, "json")
            wait(lambda: d.summary.records_scored + d.summary.late >= t.num_rows, 60, "all scored")
            wait(lambda: sum(d.source.committed_offsets().values()) >= t.num_rows, 30, "commits")
        assert d.summary.late == 0
        assert sorted(scored_rows(tmp_path / "g-late.db")) == list(range(t.num_rows))   # exactly once
        got = read_alert_store(tmp_path / "g-late.db")
        ref = reference_alerts(t, SIZE, LATE)
        assert ref and sorted(map(alert_key, got)) == sorted(map(alert_key, ref))
        msgs = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("graphsentry ") and " serving: model injected" in m for m in msgs)
        assert any(m.startswith("Kafka at ") and " is back " in m for m in msgs)
        assert any(m.startswith("progress: read ") for m in msgs)
    finally:
        b.stop()


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_down_mid_stream_for_30s_loses_and_doubles_nothing(noida_broker, tmp_path, caplog):
    b = noida_broker
    t = make_flows(n_benign=600, n_scan=150, duration=60.0, seed=13)
    half = split_at_window(t, 30.0)
    topic, atopic = "flows-outage", "alerts-outage"
    ensure_topics(b.bootstrap, {topic: 2, atopic: 1})
    cfg = outage_cfg(tmp_path, b.bootstrap, topic, "g-outage",
                     window={"idle_timeout": 20.0},
                     alerts={"sinks": [{"type": "sqlite", "path": str(tmp_path / "g-outage.db")},
                                       {"type": "kafka", "topic": atopic, "flush_timeout": 3}]})
    d = Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False)
    caplog.set_level(logging.INFO)
    with running(d):
        wait(lambda: d.source is not None and d.source.assigned and readyz(d), 60, "ready")
        publish(b.bootstrap, topic, 2, t.slice(0, half))
        # The first half's last window (it holds part of the scan) closes only after 20 idle seconds,
        # while the broker is away: its alerts go through the Kafka sink's retries.
        wait(lambda: d.summary.records_in >= half, 60, "first half read")
        b.stop()
        down_at = time.monotonic()
        wait(lambda: broker_up(d) == 0.0, 20, "broker-up gauge 0")
        assert readyz(d) is False
        wait(lambda: d.metrics.value("graphsentry_sink_errors_total", {"sink": "kafka"}) >= 1, 30,
             "the Kafka alert sink waiting for the broker")
        assert d.summary.records_scored < half           # that window is not done until its alerts are
        time.sleep(max(0.0, 30.0 - (time.monotonic() - down_at)))
        assert readyz(d) is False and broker_up(d) == 0.0
        b.start()
        wait(lambda: broker_up(d) == 1.0 and readyz(d), 60, "broker back")
        d.windower.idle_timeout = 2.0   # the outage part is over: close the last windows sooner (test time)
        publish(b.bootstrap, topic, 2, t.slice(half))
        wait(lambda: d.summary.records_scored + d.summary.late >= t.num_rows, 60, "all scored after the outage")
        wait(lambda: sum(d.source.committed_offsets().values()) >= t.num_rows, 30, "final commits")
    assert d.summary.late == 0
    assert sorted(scored_rows(tmp_path / "g-outage.db")) == list(range(t.num_rows))   # none lost, none twice
    ref = sorted(map(alert_key, reference_alerts(t, SIZE, LATE)))
    assert ref and sorted(map(alert_key, read_alert_store(tmp_path / "g-outage.db"))) == ref
    on_topic = [json.loads(m.value) for m in iter_topic(b.bootstrap, atopic, idle_s=2.0)]
    assert sorted(map(alert_key, on_topic)) == ref                # the alert topic: no alert lost or sent twice
    assert d.metrics.value("graphsentry_broker_reconnects_total") >= 1
    lines = waiting_lines(caplog)
    assert any(f"waiting for Kafka at {b.bootstrap} (topic {topic})" in ln for ln in lines)
    assert any(f"(topic {atopic})" in ln for ln in lines)


def _listening_socket():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nothing listening", "not answering Kafka"])
def test_replay_to_an_unreachable_broker_exits_2_with_one_line(tmp_path, kind):
    sock = _listening_socket() if kind == "not answering Kafka" else None
    port = sock.getsockname()[1] if sock else free_port()
    sample = REPO / "samples" / "netflow" / "handmade-nf-v3.csv"
    t0 = time.monotonic()
    try:
        r = subprocess.run([str(Path(sys.executable).parent / "graphsentry"), "replay", str(sample), "--bootstrap",
                            f"127.0.0.1:{port}", "--topic", "t"], capture_output=True, text=True, timeout=60)
    finally:
        if sock:
            sock.close()
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"graphsentry replay: error: cannot reach Kafka at 127.0.0.1:{port}: ")
    assert lines[0].endswith("; start the broker or fix --bootstrap")
    assert took < 20, took


def test_serve_takes_positional_inputs_and_keeps_input_as_a_hidden_alias(tmp_path, capsys):
    from training.cli import main

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for p in (a, b):
        p.write_text("x\n")
    assert main(["serve", str(a), str(b), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert f"- {a}" in out and f"- {b}" in out and "type: file" in out
    assert main(["serve", "--input", str(a), "--print-config"]) == 0
    assert f"- {a}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert "INPUT" in help_text and "--input" not in help_text

"""The daemon on a file source: finite run, tailing a growing file, SIGTERM drain, event-time merge."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daemon_helpers import FanoutScorer, make_flows, write_fanout_model
from detector.alerts import alert_key, build_alerts
from detector.alerts.sinks import read_alert_store
from detector.daemon import Daemon, load_config, run_daemon, scorer_model
from detector.daemon.pipeline import PartitionMerger, RowLedger
from ingest.windows import EventTimeWindower, Tumbling

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"


def _cfg(tmp_path, paths, **over):
    base = {"source": {"paths": [str(p) for p in paths]}, "window": {"size": 10.0, "lateness": 1.0},
            "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
            "metrics": {"port": 0}, "model": {"watch": False}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(overrides=base, env={})


def _reference_alerts(table, size, lateness):
    w = EventTimeWindower(Tumbling(size), lateness=lateness)
    out = []
    for win in w.push(table) + w.flush():
        out += build_alerts(win, FanoutScorer().score_window(win)).alerts
    return out


def test_finite_file_run_scores_everything_and_matches_reference(tmp_path):
    t = make_flows()
    pq.write_table(t, tmp_path / "flows.parquet")
    s = run_daemon(_cfg(tmp_path, [tmp_path / "flows.parquet"]), scorer=FanoutScorer(), install_signals=False)
    assert s.records_in == s.records_scored == t.num_rows
    assert s.stopped_by == "end of input" and s.late == 0
    got = read_alert_store(tmp_path / "alerts.db")
    ref = _reference_alerts(t, 10.0, 1.0)
    assert ref, "the scan must produce alerts"
    assert sorted(alert_key(a) for a in got) == sorted(alert_key(a) for a in ref)
    assert {alert_key(a): a["unmapped"]["count"] for a in got} == {alert_key(a): a["unmapped"]["count"] for a in ref}
    # rows in alerts are the input's own row numbers
    scan_rows = set(np.flatnonzero(np.array(t.column("src_ip").to_pylist()) == "10.0.9.9").tolist())
    assert all(set(a["unmapped"]["rows"]) <= scan_rows for a in got)
    assert "records read 520" in s.text()
    assert 0 < s.flagged_records < t.num_rows                     # the threshold-drift signal is counted


def test_bundled_zeek_sample_through_readers(tmp_path):
    from ingest.readers import open_inputs

    n = sum(b.num_rows for b in open_inputs([str(SAMPLE)]))
    cfg = _cfg(tmp_path, [SAMPLE], window={"size": 600.0, "lateness": 60.0},
               pipeline={"dead_letter_path": str(tmp_path / "dl.jsonl")})
    s = run_daemon(cfg, scorer=FanoutScorer(threshold=5), install_signals=False)
    assert s.records_in == n == 1500
    assert s.records_scored + s.late + s.invalid == n
    assert s.windows_scored > 0


def test_tail_follows_a_growing_zeek_log(tmp_path):
    lines = SAMPLE.read_text().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.startswith("#")][:300]
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "conn.log"
    log.write_text("".join(header) + "".join(body[:100]) + body[100][:20])  # ends mid-line
    cfg = _cfg(tmp_path, [tmp_path / "logs"], source={"follow": True, "poll_interval": 0.1},
               window={"size": 600.0, "lateness": 0.0, "idle_timeout": 0.5})
    d = Daemon(cfg, model=scorer_model(FanoutScorer(threshold=5)), install_signals=False)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()))
    th.start()
    try:
        _wait(lambda: d.summary.records_in >= 100, 30)
        with open(log, "a") as f:
            f.write(body[100][20:] + "".join(body[101:200]))
        (tmp_path / "logs" / "notes.bin").write_bytes(b"\x00\x01 not a flow log\nstill not one\n")  # ignored, counted
        (tmp_path / "logs" / "conn2.log").write_text("".join(header) + "".join(body[200:]))  # a new file appears
        _wait(lambda: d.summary.records_in >= 300, 30)
        _wait(lambda: d.summary.records_scored + d.summary.late >= 300, 30)  # idle flush closes the windows
        _wait(lambda: d.metrics.value("graphsentry_malformed_total", {"reason": "unreadable_file"}) == 1, 30)
    finally:
        d.stop("test")
        th.join(30)
    s = out["s"]
    assert s.records_in == 300 and s.records_scored + s.late == 300
    assert s.stopped_by == "test"
    assert s.malformed.get("unreadable_file") == 1


def _wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_sigterm_drains_flushes_and_exits_zero(tmp_path):
    """`graphsentry serve` on a tailed file: SIGTERM -> open windows scored, alerts written, exit 0."""
    t = make_flows()
    pq.write_table(t, tmp_path / "in" / "flows.parquet") if (tmp_path / "in").mkdir() is None else None
    write_fanout_model(tmp_path / "model")
    cfgf = tmp_path / "serve.yaml"
    cfgf.write_text(json.dumps({
        "source": {"type": "file", "paths": [str(tmp_path / "in")], "follow": True, "poll_interval": 0.2},
        "window": {"size": 10.0, "lateness": 1.0, "idle_timeout": 600.0},
        "model": {"path": str(tmp_path / "model"), "loader": "daemon_helpers:load_fanout", "watch": False},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"port": 0},
    }))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'detector'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--config", str(cfgf),
                          "--summary-json", str(tmp_path / "s.json")],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: (tmp_path / "alerts.db").exists(), 60)
        time.sleep(2.0)  # the file is read; its last window stays open (idle timeout 600 s)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["stopped_by"] == "SIGTERM"
    assert s["records_scored"] == t.num_rows  # the open windows were drained, not dropped
    assert len(read_alert_store(tmp_path / "alerts.db")) == s["alerts"] > 0


def test_partition_merger_orders_bursts_by_event_time():
    now = [0.0]
    m = PartitionMerger(idle_after=5.0, clock=lambda: now[0], assigned=lambda: {0, 1})

    def tab(ts):
        return pa.table({"row": pa.array(range(len(ts)), pa.int64()),
                         "ts": pa.array([int(x * 1e6) for x in ts], pa.int64()).cast(pa.timestamp("us", tz="UTC"))})

    m.add(0, tab([1, 2, 3, 10, 20]))
    assert m.release() is None            # partition 1 has said nothing yet: wait
    m.add(1, tab([1.5, 2.5, 12]))
    out = m.release()
    got = out.column("ts").cast(pa.int64()).to_numpy() / 1e6
    assert got.tolist() == [1, 1.5, 2, 2.5, 3, 10, 12]  # up to min(20, 12), in event-time order
    assert m.buffered == 1
    now[0] = 10.0                         # partition 1 idle: it stops holding partition 0 back
    assert (m.release().column("ts").cast(pa.int64()).to_numpy() / 1e6).tolist() == [20]


def test_row_ledger_maps_and_releases():
    led = RowLedger()
    a = led.add(np.array([100, 101, 102]), 5.0)
    b = led.add(np.array([7, 8]), 6.0)
    ref, arr = led.lookup(np.array([b + 1, a]))
    assert ref.tolist() == [8, 100] and arr.tolist() == [6.0, 5.0]
    led.done(np.array([a, a + 1, a + 2, b]))
    assert led.pending() == 1


def test_file_config_is_the_make_run_setup(tmp_path):
    from detector.daemon import file_config

    cfg = file_config([str(SAMPLE)], "models/current", str(tmp_path / "out"), metrics_port=0)
    assert cfg["source"] == {**cfg["source"], "type": "file", "follow": False, "paths": [str(SAMPLE)]}
    assert [s["type"] for s in cfg["alerts"]["sinks"]] == ["sqlite", "jsonl"]
    assert cfg["metrics"]["host"] == "127.0.0.1" and cfg["window"]["size"] is None
    s = run_daemon(cfg, scorer=FanoutScorer(threshold=3), install_signals=False)
    assert s.records_in == 1500 and (tmp_path / "out" / "alerts.db").exists()
    assert s.alerts == len(read_alert_store(tmp_path / "out" / "alerts.db"))


def test_directory_with_non_flow_files_skips_and_counts_them(tmp_path):
    from ingest.readers import open_inputs

    d = tmp_path / "logs"
    d.mkdir()
    (d / "conn.log").write_text(SAMPLE.read_text())
    (d / "README.md").write_text("# not flows\n\nsome words\n")
    s = run_daemon(_cfg(tmp_path, [d], window={"size": 600.0, "lateness": 60.0}),
                   scorer=FanoutScorer(threshold=5), install_signals=False)
    assert s.records_in == sum(b.num_rows for b in open_inputs([str(SAMPLE)]))
    assert s.malformed.get("unreadable_file") == 1


def test_broken_new_model_is_counted_and_the_old_one_keeps_scoring(tmp_path):
    from daemon_helpers import load_fanout

    lines = SAMPLE.read_text().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.startswith("#")]
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "conn.log"
    log.write_text("".join(header) + "".join(body[:200]))
    write_fanout_model(tmp_path / "m1", threshold=3, version="v1")
    (tmp_path / "broken").mkdir()                      # no config.json: not a model
    pointer = tmp_path / "current"
    pointer.write_text("m1\n")
    cfg = _cfg(tmp_path, [tmp_path / "logs"], source={"follow": True, "poll_interval": 0.1},
               window={"size": 600.0, "lateness": 0.0, "idle_timeout": 0.5},
               model={"path": str(pointer), "watch": True, "watch_interval": 0.1})
    d = Daemon(cfg, loader=load_fanout, install_signals=False)
    th = threading.Thread(target=d.run)
    th.start()
    try:
        _wait(lambda: d.summary.records_scored + d.summary.late >= 200, 30)
        pointer.write_text("broken\n")
        _wait(lambda: d.metrics.value("graphsentry_model_reloads_total", {"result": "failed"}) == 1, 30)
        with open(log, "a") as f:
            f.write("".join(body[200:400]))
        _wait(lambda: d.summary.records_scored + d.summary.late >= 400, 30)
    finally:
        d.stop("test")
        th.join(30)
    assert d.summary.model_version == "v1" and d.summary.model_reloads == 0
    assert 'version="v1"' in d.metrics.render().decode()


@pytest.mark.shared_data
def test_tailed_directory_reads_new_pcaps_whole(tmp_path, shared_data):
    import shutil

    from ingest.readers import open_inputs

    pcap = shared_data / "pcaps" / "test8-malicious.pcap"
    if not pcap.exists():
        pytest.skip("test8-malicious.pcap not in the shared data")
    n = sum(b.num_rows for b in open_inputs([str(pcap)]))
    assert n > 0
    (tmp_path / "caps").mkdir()
    cfg = _cfg(tmp_path, [tmp_path / "caps"], source={"follow": True, "poll_interval": 0.1},
               window={"size": 3600.0, "lateness": 3600.0, "idle_timeout": 0.5})
    d = Daemon(cfg, model=scorer_model(FanoutScorer(threshold=5)), install_signals=False)
    th = threading.Thread(target=d.run)
    th.start()
    try:
        time.sleep(0.5)
        shutil.copy(pcap, tmp_path / "caps" / "rot-0001.pcap")    # a rotated capture appears
        _wait(lambda: d.summary.records_scored + d.summary.late >= n, 60)
    finally:
        d.stop("test")
        th.join(30)
    assert d.summary.records_in == n

"""The daemon's deployed threshold (calibration section): grace on the file source, exported as a gauge,
persisted atomically, resumed after a restart, reset by SIGHUP."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pyarrow.parquet as pq

from daemon_helpers import T0, FanoutScorer, make_flows
from detector.daemon import Daemon, load_config, run_daemon, scorer_model
from detector.metrics import Metrics

WRONG = 1.0  # the "trained" threshold: far too low for this network (benign fan-outs are 1-6)


def _flows(tmp_path, name, t0=T0, seed=0):
    # 400 s: 10 benign records/s from 20 hosts, a scanner from 120 s to 240 s (25 new ports per 10 s window)
    t = make_flows(n_benign=4000, n_scan=300, duration=400.0, seed=seed, t0=t0)
    p = tmp_path / name
    pq.write_table(t, p)
    return p, t


def _cfg(tmp_path, path, grace=100.0, state=True, **over):
    base = {"source": {"paths": [str(path)]}, "window": {"size": 10.0, "lateness": 1.0},
            "alerts": {"sinks": [{"type": "jsonl", "path": str(tmp_path / "alerts.jsonl")}]},
            "metrics": {"port": 0, "enabled": False}, "model": {"watch": False},
            "pipeline": {"progress_interval": 0},
            "calibration": {"grace": grace, "target_fpr": 0.01,
                            "state_path": str(tmp_path / "state" / "calibration.json") if state else None}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(overrides=base, env={})


def _scan_flags(tmp_path):
    """Input rows named by the alerts written so far (the flagged records)."""
    rows = [r for line in (tmp_path / "alerts.jsonl").read_text().splitlines() for r in
            json.loads(line)["unmapped"]["rows"]] if (tmp_path / "alerts.jsonl").exists() else []
    return rows


def test_deployed_threshold_is_exported_persisted_and_used(tmp_path):
    path, t = _flows(tmp_path, "a.parquet")
    m = Metrics()
    s = run_daemon(_cfg(tmp_path, path), scorer=FanoutScorer(threshold=WRONG), metrics=m, install_signals=False)
    assert s.records_scored == t.num_rows
    trained = m.value("graphsentry_threshold", {"kind": "trained"})
    deployed = m.value("graphsentry_threshold", {"kind": "deployed"})
    assert trained == WRONG and deployed > 2.0
    assert 'graphsentry_threshold{kind="deployed"}' in m.render().decode()
    st = json.loads((tmp_path / "state" / "calibration.json").read_text())
    assert st["calibrator"]["threshold"] == deployed and st["calibrator"]["in_grace"] is False
    assert not list((tmp_path / "state").glob("*.tmp"))                      # written atomically
    # after grace: the scanner is alerted, benign records hardly ever
    flagged = np.zeros(t.num_rows, bool)
    flagged[_scan_flags(tmp_path)] = True
    ts = t.column("ts").cast("int64").to_numpy() / 1e6
    src = np.array(t.column("src_ip").to_pylist())
    after = ts >= T0 + 110.0
    scan, benign = src == "10.0.9.9", src != "10.0.9.9"
    assert flagged[after & scan].mean() > 0.9
    assert flagged[after & benign].mean() < 0.02
    assert flagged[~after & benign].mean() > 0.5      # during grace the (wrong) trained threshold decided


def test_restart_resumes_without_a_new_grace_period(tmp_path):
    path, _ = _flows(tmp_path, "a.parquet")
    run_daemon(_cfg(tmp_path, path), scorer=FanoutScorer(threshold=WRONG), install_signals=False)
    deployed = json.loads((tmp_path / "state" / "calibration.json").read_text())["calibrator"]["threshold"]
    # a restart on the next day's traffic: the saved threshold applies from its first window
    later, t2 = _flows(tmp_path, "b.parquet", t0=T0 + 86400, seed=1)
    m = Metrics()
    s = run_daemon(_cfg(tmp_path, later), scorer=FanoutScorer(threshold=WRONG), metrics=m, install_signals=False)
    assert m.value("graphsentry_threshold", {"kind": "deployed"}) >= deployed - 1.0
    ts = t2.column("ts").cast("int64").to_numpy() / 1e6
    first = int((ts < T0 + 86400 + 100.0).sum())
    # control: the same run without the state file does a new grace period and floods its first 100 s
    m2 = Metrics()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    s2 = run_daemon(_cfg(fresh, later), scorer=FanoutScorer(threshold=WRONG), metrics=m2, install_signals=False)
    assert s2.flagged_records > 0.5 * first
    assert s.flagged_records < 0.25 * s2.flagged_records


def test_state_of_another_model_is_not_resumed(tmp_path):
    path, _ = _flows(tmp_path, "a.parquet")
    run_daemon(_cfg(tmp_path, path), scorer=FanoutScorer(threshold=WRONG), install_signals=False)
    later, _ = _flows(tmp_path, "b.parquet", t0=T0 + 86400, seed=1)
    runs = {}
    for version in ("injected", "other"):  # run_daemon(scorer=...) names its model "injected"
        d = Daemon(_cfg(tmp_path, later), model=scorer_model(FanoutScorer(threshold=WRONG), version=version),
                   metrics=Metrics(), install_signals=False)
        d.run()
        runs[version] = d._cal.grace_start_
    assert runs["other"] >= T0 + 86400               # another model: its own grace period on the new traffic
    # ... which then replaced the state file: the same model resumes that one
    assert json.loads((tmp_path / "state" / "calibration.json").read_text())["model_version"] == "other"
    assert runs["injected"] < T0 + 10                 # the first run's state was resumed


def test_sighup_resets_the_calibration(tmp_path):
    path, _ = _flows(tmp_path, "a.parquet")
    statef = tmp_path / "state" / "calibration.json"
    d = Daemon(_cfg(tmp_path, path, grace=50.0), model=scorer_model(FanoutScorer(threshold=WRONG, delay=0.05)),
               metrics=Metrics(), install_signals=True)
    starts: list = []

    def poke() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:          # wait until the first grace period is over and saved
            cal = d._cal
            if cal is not None and not cal.in_grace_ and statef.exists():
                starts.append(cal.grace_start_)
                os.kill(os.getpid(), signal.SIGHUP)
                return
            time.sleep(0.02)

    th = threading.Thread(target=poke)
    th.start()
    d.run()                                            # main thread: the SIGHUP handler runs here
    th.join()
    assert starts, "the first grace period never ended"
    assert d._cal.grace_start_ > starts[0] + 50.0     # a second grace period began after the reset
    assert not d._cal.in_grace_ and statef.exists()    # ... ended, and was saved again
    assert signal.getsignal(signal.SIGHUP) is not None

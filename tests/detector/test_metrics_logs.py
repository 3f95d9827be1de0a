"""JSON-lines logs (detector.logs) and what the daemon logs and exports: startup, progress, the
model-fit warning and its metrics, the broker-up gauge of a daemon without Kafka."""
from __future__ import annotations

import io
import json
import logging

import pytest

from daemon_helpers import FanoutScorer, make_flows
from detector.daemon import load_config, scorer_model
from detector.daemon.pipeline import Daemon
from detector.logs import configure_logging


@pytest.fixture
def json_log():
    """Root logging to a buffer as JSON lines for one test; the previous set-up comes back after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    configure_logging(logging.INFO, "json", stream=buf)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def records(buf: io.StringIO) -> list[dict]:
    return [json.loads(ln) for ln in buf.getvalue().splitlines() if ln.strip()]


def test_json_lines_carry_ts_level_logger_msg_extra_and_exc(json_log):
    lg = logging.getLogger("graphsentry.test")
    lg.info("hello %s", "world", extra={"event": "greeting", "n": 3})
    try:
        1 / 0
    except ZeroDivisionError:
        lg.exception("boom")
    a, b = records(json_log)
    assert a["msg"] == "hello world" and a["level"] == "INFO" and a["logger"] == "graphsentry.test"
    assert a["event"] == "greeting" and a["n"] == 3 and a["ts"].endswith("Z") and "T" in a["ts"]
    assert b["level"] == "ERROR" and "ZeroDivisionError" in b["exc"]
    assert "\n" not in json_log.getvalue().splitlines()[1]  # one object per line, traceback included


def test_text_format_and_bad_arguments():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    try:
        configure_logging("warning", "text", stream=buf)
        logging.getLogger("x").warning("plain")
        logging.getLogger("x").info("hidden")
        assert buf.getvalue().rstrip().endswith("WARNING x: plain") and "hidden" not in buf.getvalue()
        with pytest.raises(ValueError, match="text' or 'json"):
            configure_logging("INFO", "xml")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def _file_daemon(tmp_path, threshold: float) -> Daemon:
    t = make_flows(n_benign=2500, n_scan=100, duration=120.0, seed=2)
    import pyarrow.parquet as pq

    pq.write_table(t, tmp_path / "flows.parquet")
    cfg = load_config(overrides={
        "source": {"paths": [str(tmp_path / "flows.parquet")]}, "window": {"size": 10.0, "lateness": 1.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"port": 0}, "model": {"watch": False}}, env={})
    return Daemon(cfg, model=scorer_model(FanoutScorer(threshold=threshold), version="fan", target_fpr=0.01),
                  install_signals=False)


def test_daemon_warns_once_when_it_flags_far_more_than_calibrated(tmp_path, json_log):
    d = _file_daemon(tmp_path, threshold=0.5)     # every flow has fan-out >= 1: all flagged
    s = d.run()
    assert s.records_scored == 2600
    recs = records(json_log)
    start = [r for r in recs if r.get("event") == "startup"]
    assert len(start) == 1 and start[0]["model_version"] == "fan" and "flows.parquet" in start[0]["source"]
    misfit = [r for r in recs if r.get("event") == "model_misfit"]
    assert len(misfit) == 1 and misfit[0]["level"] == "WARNING"
    assert misfit[0]["flagged_ratio"] > 0.9 and misfit[0]["target_fpr"] == 0.01
    assert "does not fit this network" in misfit[0]["msg"] and "graphsentry calibrate" in misfit[0]["msg"]
    final = [r for r in recs if r.get("event") == "progress" and r["msg"].startswith("final:")]
    assert final and final[-1]["records_scored"] == 2600
    assert d.metrics.value("graphsentry_fit_warnings_total") == 1
    assert d.metrics.value("graphsentry_flagged_ratio") > 0.9
    assert d.metrics.value("graphsentry_broker_up") == 1.0        # no Kafka client: nothing to wait for


def test_daemon_stays_quiet_when_the_flagged_share_is_plausible(tmp_path, json_log):
    d = _file_daemon(tmp_path, threshold=20.0)    # only the scanner (100 of 2,600: 3.8%) is flagged
    d.run()
    assert not [r for r in records(json_log) if r.get("event") == "model_misfit"]
    assert d.metrics.value("graphsentry_fit_warnings_total") == 0
    assert 0.0 < d.metrics.value("graphsentry_flagged_ratio") < 0.05

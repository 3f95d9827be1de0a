"""`graphsentry serve --ui`: the page runs beside the daemon, follows its alerts live and reads its archive."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _wait(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_serve_ui_follows_new_alerts(tmp_path):
    from daemon_helpers import make_flows, write_fanout_model

    (tmp_path / "in").mkdir()
    pq.write_table(make_flows(seed=0), tmp_path / "in" / "a.parquet")
    write_fanout_model(tmp_path / "model")
    cfgf = tmp_path / "serve.yaml"
    cfgf.write_text(json.dumps({
        "source": {"type": "file", "paths": [str(tmp_path / "in")], "follow": True, "poll_interval": 0.2},
        "window": {"size": 10.0, "lateness": 1.0, "idle_timeout": 1.0},
        "model": {"path": str(tmp_path / "model"), "loader": "daemon_helpers:load_fanout", "watch": False},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"port": 0},
        "archive": {"enabled": True, "path": str(tmp_path / "archive")},
    }))
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'detector'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--config", str(cfgf), "--ui", f"127.0.0.1:{port}"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: _get(base + "api/stamp") or p.poll() is not None, 90, "the page")
        assert p.poll() is None, p.communicate()[0]
        first = _wait(lambda: (_get(base + "api/alerts") or {}).get("total"), 90, "the first alerts on the page")
        aid = _get(base + "api/alerts")["items"][0]["id"]

        def archived_flows():
            d = _get(base + f"api/alert?id={aid}") or {}
            ctx = d.get("context") or {}
            return ctx.get("source") == "archive" and [f for f in ctx.get("flows", []) if f.get("in_alert")]

        _wait(archived_flows, 60, "the alert's records from the daemon's archive")
        stamp = _get(base + "api/stamp")
        later = make_flows(seed=1, t0=float(make_flows().column("ts").to_pylist()[-1].timestamp()) + 100)
        pq.write_table(later, tmp_path / "in" / "b.parquet")
        _wait(lambda: (_get(base + "api/stamp") or {}) != stamp, 60, "the stamp to move")
        _wait(lambda: ((_get(base + "api/alerts") or {}).get("total") or 0) > first, 60, "the new alerts")
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    assert f"alert page on {base}" in out
    assert _get(base + "api/stamp") is None  # the page stopped with the daemon

"""A real Prometheus scrapes the daemon; a deploy/ alert rule fires into a real Alertmanager, which
calls a webhook receiver; the daemon's own Alertmanager sink reaches the same receiver."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from daemon_helpers import T0, FanoutScorer, make_flows
from detector.daemon import Daemon, load_config, scorer_model
from kafka_fixtures import free_port, wait_port

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _bin(*names: str) -> str:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    pytest.skip(f"{names[0]} not installed (apt-get install prometheus prometheus-alertmanager)")


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_prometheus_scrapes_and_rule_reaches_alertmanager_webhook(tmp_path):
    prom_bin = _bin("prometheus")
    am_bin = _bin("prometheus-alertmanager", "alertmanager")
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    procs: list[subprocess.Popen] = []
    daemon = None
    th = None
    try:
        am_port, prom_port, metrics_port = free_port(), free_port(), free_port()
        am_cfg = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
        am_cfg["route"].update(group_wait="1s", group_interval="1s")
        for r in am_cfg["route"]["routes"]:
            r["group_wait"] = "1s"
        am_cfg["receivers"][0]["webhook_configs"][0]["url"] = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        (tmp_path / "am.yml").write_text(yaml.safe_dump(am_cfg))
        procs.append(subprocess.Popen(
            [am_bin, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{am_port}/-/ready", timeout=2).status == 200,
              30, "alertmanager ready")

        (tmp_path / "in").mkdir()
        pq.write_table(make_flows(), tmp_path / "in" / "flows.parquet")
        cfg = load_config(overrides={
            "source": {"paths": [str(tmp_path / "in")], "follow": True, "poll_interval": 0.2},
            "window": {"size": 10.0, "lateness": 1.0, "idle_timeout": 1.0},
            "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")},
                                 {"type": "alertmanager", "url": f"http://127.0.0.1:{am_port}"}]},
            "metrics": {"port": metrics_port}, "model": {"watch": False},
        }, env={})
        daemon = Daemon(cfg, model=scorer_model(FanoutScorer(), version="fanout-1", target_fpr=0.01),
                        install_signals=False)
        th = threading.Thread(target=daemon.run, daemon=True)
        th.start()
        wait_port(metrics_port)

        prom_cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus" / "graphsentry-rules.yml")],   # the shipped rules, verbatim
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "graphsentry",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        (tmp_path / "prom.yml").write_text(yaml.safe_dump(prom_cfg))
        procs.append(subprocess.Popen(
            [prom_bin, f"--config.file={tmp_path / 'prom.yml'}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{prom_port}"

        def records_seen():
            q = urllib.parse.quote('sum(graphsentry_records_total{job="graphsentry"})')
            res = _get_json(f"{base}/api/v1/query?query={q}")["data"]["result"]
            return res and float(res[0]["value"][1]) == 520

        _wait(records_seen, 60, "Prometheus to scrape 520 records")
        up = _get_json(f"{base}/api/v1/query?query=up")["data"]["result"]
        assert up and up[0]["value"][1] == "1"
        info = _get_json(f"{base}/api/v1/query?query=graphsentry_model_info")["data"]["result"]
        assert info[0]["metric"]["version"] == "fanout-1"
        # The threshold-drift rule's expression, verbatim from the shipped rules: the fan-out scorer flags
        # the 400-flow scan among 520 records, far above 10x the 1% target (the rule itself waits 30 min).
        rules = yaml.safe_load((DEPLOY / "prometheus" / "graphsentry-rules.yml").read_text())
        drift = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "GraphsentryThresholdDrift")
        # rate() needs the counters to grow after the first scrape: a second file, 100 s later in event time
        first = daemon.summary.flagged_records
        pq.write_table(make_flows(seed=1, t0=T0 + 100.0), tmp_path / "flows-2.parquet")
        os.replace(tmp_path / "flows-2.parquet", tmp_path / "in" / "flows-2.parquet")  # appears whole, as a producer should
        _wait(lambda: daemon.summary.records_scored == 1040, 60, "the second file to be scored")
        flagged = daemon.summary.flagged_records - first
        assert 0.1 * 520 < flagged <= 520

        def drift_holds():
            q = urllib.parse.quote(drift["expr"])
            res = _get_json(f"{base}/api/v1/query?query={q}")["data"]["result"]
            return bool(res) and abs(float(res[0]["value"][1]) - flagged / 520) < 1e-6

        _wait(drift_holds, 30, "the drift expression to hold at the flagged share")

        def names():
            return {a["labels"]["alertname"] for msg in received for a in msg.get("alerts", [])}

        _wait(lambda: {"GraphsentryHighSeverityDetections", "GraphsentryDetection"} <= names(), 90,
              "both alerts at the webhook")
        rule_alert = next(a for m in received for a in m["alerts"]
                          if a["labels"]["alertname"] == "GraphsentryHighSeverityDetections")
        assert rule_alert["labels"]["technique"] == "T1046" and rule_alert["status"] == "firing"
        finding = next(a for m in received for a in m["alerts"] if a["labels"]["alertname"] == "GraphsentryDetection")
        assert finding["labels"]["src_ip"] == "10.0.9.9"
        assert "GraphsentryDetectorDown" not in names()
    finally:
        if daemon is not None:
            daemon.stop("test")
            th.join(30)
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        hook.shutdown()
        hook.server_close()

"""Metrics registry and the /metrics, /healthz, /readyz server (bound to 127.0.0.1)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from detector.metrics import Metrics, MetricsServer


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_endpoints_and_names():
    m = Metrics()
    m.records.labels("kafka").inc(5)
    m.malformed.labels("bad_json").inc()
    m.alerts.labels("T1046", "high").inc(2)
    m.consumer_lag.labels("flows", "0").set(7)
    m.scoring_seconds.observe(0.02)
    m.set_model("v1", "/m")
    ready = {"ok": False}
    srv = MetricsServer(m, port=0, ready=lambda: ready["ok"]).start()
    try:
        assert srv.host == "127.0.0.1"
        base = f"http://127.0.0.1:{srv.port}"
        code, body = _get(base + "/metrics")
        assert code == 200
        for line in ('graphsentry_records_total{source="kafka"} 5.0', 'graphsentry_malformed_total{reason="bad_json"} 1.0',
                     'graphsentry_alerts_total{severity="high",technique="T1046"} 2.0',
                     'graphsentry_consumer_lag{partition="0",topic="flows"} 7.0',
                     'graphsentry_model_info{path="/m",version="v1"} 1.0', "graphsentry_scoring_seconds_bucket",
                     "graphsentry_event_to_alert_seconds_bucket", "graphsentry_late_total 0.0"):
            assert line in body, line
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz")[0] == 503
        ready["ok"] = True
        code, body = _get(base + "/readyz")
        assert code == 200 and json.loads(body)["ready"] is True
        assert _get(base + "/nope")[0] == 404
    finally:
        srv.stop()


def test_two_daemons_in_one_process_do_not_collide():
    a, b = Metrics(), Metrics()
    a.records.labels("file").inc()
    assert a.value("graphsentry_records_total", {"source": "file"}) == 1
    assert b.value("graphsentry_records_total", {"source": "file"}) == 0
    with pytest.raises(OSError):
        # a port already in use is an error at start, not a silent second server
        s1 = MetricsServer(a, port=0)
        try:
            MetricsServer(b, port=s1.port)
        finally:
            s1.stop()

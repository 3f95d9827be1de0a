"""deploy/: Prometheus/Alertmanager configs pass promtool/amtool, every metric the dashboards and
rules use is one the daemon exports, and the example configs load with the daemon's own loader."""
from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from detector.daemon.config import load_config
from detector.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(graphsentry_[a-z_]+)\b")


def _exported() -> set[str]:
    m = Metrics()
    # touch labelled metrics so their series appear
    m.records.labels("kafka").inc()
    m.malformed.labels("x").inc()
    m.alerts.labels("T1", "high").inc()
    m.consumer_lag.labels("t", "0").set(1)
    m.queue_depth.labels("records").set(1)
    m.set_model("v", "p")
    return set(re.findall(r"^(graphsentry_[a-z_]+)", m.render().decode(), re.M))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} not installed (apt-get install prometheus prometheus-alertmanager)")
    return path


def test_promtool_checks_config_and_rules():
    promtool = _tool("promtool")
    r = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "graphsentry-rules.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS: 6 rules found" in r.stdout, r.stdout + r.stderr


def test_amtool_checks_alertmanager_config():
    amtool = _tool("amtool")
    r = subprocess.run([amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = _exported()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "graphsentry-rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"GraphsentryDetectorDown", "GraphsentryConsumerLagGrowing", "GraphsentryAlertRateSpike",
            "GraphsentryMalformedRate", "GraphsentryThresholdDrift"} <= names
    used = set()
    for g in rules["groups"]:
        for r in g["rules"]:
            used |= set(METRIC.findall(r["expr"]))
    dash = json.loads((DEPLOY / "grafana" / "graphsentry-dashboard.json").read_text())
    assert dash["panels"] and all(p["targets"] for p in dash["panels"])
    for p in dash["panels"]:
        for t in p["targets"]:
            used |= set(METRIC.findall(t["expr"]))
    assert used, "no metrics referenced"
    missing = {u for u in used if u not in exported}
    assert not missing, f"deploy files reference metrics the daemon does not export: {missing}"


def test_example_configs_load_with_the_daemon_loader(tmp_path):
    cfg = load_config(DEPLOY / "graphsentry.yaml", env={})
    assert cfg["source"]["type"] == "kafka" and cfg["kafka"]["group_id"] == "graphsentry"
    cm = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    inner = tmp_path / "cm.yaml"
    inner.write_text(cm["data"]["graphsentry.yaml"])
    kcfg = load_config(inner, env={})
    dep = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == kcfg["metrics"]["port"]
    assert dep["spec"]["replicas"] >= 2
    probes = dep["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    kinds = {yaml.safe_load(p.read_text()).get("kind") for p in (DEPLOY / "k8s").glob("*.yaml")}
    assert {"ConfigMap", "Deployment", "Service", "ServiceMonitor"} <= kinds


def test_compose_and_systemd_unit():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"kafka", "graphsentry", "prometheus", "alertmanager", "grafana"} <= set(compose["services"])
    for svc in compose["services"].values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"compose publishes {port} beyond localhost"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "graphsentry.service")
    assert "graphsentry serve --config" in unit["Service"]["ExecStart"]
    assert unit["Service"]["KillSignal"] == "SIGTERM" and unit["Install"]["WantedBy"] == "multi-user.target"

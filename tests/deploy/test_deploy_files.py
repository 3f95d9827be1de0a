"""deploy/: Prometheus/Alertmanager configs pass promtool/amtool, every metric the dashboards and
rules use is one the daemon exports, the example configs load with the daemon's own loader (schema
validated), and docker-compose.yml is valid Compose (the Compose specification JSON schema,
vendored under tests/deploy/compose-spec/) with a healthcheck and a restart policy on every
long-running service, every replica scraped, and no alert file shared by replicas."""
from __future__ import annotations

import configparser
import json
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector.daemon.config import load_config
from detector.metrics import Metrics, MetricsServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "compose-spec" / "compose_spec.json"
METRIC = re.compile(r"\b(graphsentry_[a-z_]+)\b")


def _exported() -> set[str]:
    m = Metrics()
    # touch labelled metrics so their series appear
    m.records.labels("kafka").inc()
    m.malformed.labels("x").inc()
    m.alerts.labels("T1", "high").inc()
    m.consumer_lag.labels("t", "0").set(1)
    m.queue_depth.labels("records").set(1)
    m.window_stage.labels("score").observe(0.5)
    m.set_model("v", "p")
    from prometheus_client import generate_latest

    from training.retrain import job_metrics  # the retraining job's metrics (pushed to a Pushgateway)

    job = b"".join(generate_latest(job_metrics(ok, {"gate_passed": True}, 1.0)) for ok in (True, False))
    return set(re.findall(r"^(graphsentry_[a-z_]+)", m.render().decode() + job.decode(), re.M))


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
    assert not missing, f"deploy files reference metrics neither the daemon nor the retraining job exports: {missing}"


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
    assert unit["Service"]["Restart"] in ("on-failure", "always")


# --- docker compose ---------------------------------------------------------------------------------

RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")   # the Compose specification's rule for `name`
# services that run to completion (none today) would be listed here; every other one must keep running
ONE_SHOT: set[str] = set()


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _compose_schema_errors(doc: dict) -> list[str]:
    from jsonschema import Draft201909Validator

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    doc = dict(doc)
    name = doc.pop("name", None)   # newer than the vendored schema: checked here by the spec's own rule
    errors = [] if name is None or (isinstance(name, str) and PROJECT_NAME.match(name)) else [f"name={name!r}"]
    v = Draft201909Validator(schema)
    errors += [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in v.iter_errors(doc)]
    for sname, svc in (doc.get("services") or {}).items():
        if "restart" in svc and not RESTART.match(str(svc["restart"])):
            errors.append(f"services/{sname}/restart: {svc['restart']!r} is not no|always|unless-stopped|on-failure")
        for k in ("interval", "timeout", "start_period"):
            d = (svc.get("healthcheck") or {}).get(k)
            if d is not None and not GO_DURATION.match(str(d)):
                errors.append(f"services/{sname}/healthcheck/{k}: {d!r} is not a duration")
        if "stop_grace_period" in svc and not GO_DURATION.match(str(svc["stop_grace_period"])):
            errors.append(f"services/{sname}/stop_grace_period: not a duration")
    return errors


def test_compose_file_is_valid_against_the_compose_spec_schema():
    assert _compose_schema_errors(_compose()) == []


@pytest.mark.parametrize("breakage, expect", [
    (lambda d: d["services"]["graphsentry"].__setitem__("helthcheck", {"test": ["CMD", "true"]}),
     "'helthcheck' does not match any of the regexes"),
    (lambda d: d["services"]["kafka"].__setitem__("restart", "sometimes"), "services/kafka/restart"),
    (lambda d: d["services"]["graphsentry"]["healthcheck"].__setitem__("interval", "15 seconds"), "healthcheck/interval"),
    (lambda d: d["services"]["graphsentry"].__setitem__("depends_on", {"kafka": {"condition": "healthy"}}),
     "services/graphsentry/depends_on"),
    (lambda d: d.__setitem__("name", "GraphSentry"), "name='GraphSentry'"),
])
def test_the_compose_check_catches_a_broken_file(breakage, expect):
    doc = _compose()
    breakage(doc)
    errors = _compose_schema_errors(doc)
    assert any(expect in e for e in errors), errors


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy():
    services = _compose()["services"]
    assert set(services) - ONE_SHOT
    for name, svc in services.items():
        if name in ONE_SHOT:
            continue
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"
        hc = svc.get("healthcheck") or {}
        assert not hc.get("disable") and hc.get("test") and hc["test"] != ["NONE"], f"{name}: no healthcheck"
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), name
    # a service waited on for health has one
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else []):
            if cond.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no healthcheck"


def _daemon_services(doc: dict) -> dict[str, dict]:
    """Services running the graphsentry image (built from deploy/Dockerfile)."""
    return {n: s for n, s in doc["services"].items()
            if "Dockerfile" in str((s.get("build") or {}).get("dockerfile", "")) or "graphsentry" in str(s.get("image", ""))}


def _effective_daemon_config(svc: dict) -> dict:
    """The config a compose daemon service runs with: the file mounted at the Dockerfile's --config
    path (or the service's own --config), then the service's GRAPHSENTRY_* environment."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = svc.get("command") or json.loads(re.search(r"^CMD\s+(\[.*\])", dockerfile, re.M)[1])
    cmd = cmd.split() if isinstance(cmd, str) else list(cmd)
    target = cmd[cmd.index("--config") + 1]
    sources = [v.split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str) and v.split(":")[1] == target]
    assert sources, f"nothing mounted at {target}"
    env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
    return load_config(DEPLOY / sources[0], env=env)


def _shared_file_paths(svc: dict, cfg: dict, workdir: str) -> list[str]:
    """Alert/dead-letter files of a service that lie on a bind mount or a named volume (shared by
    every replica of the service); files in the container's own filesystem are per replica."""
    mounts = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            mounts.append((v.get("type", "volume"), v["target"]))
        else:
            parts = v.split(":")
            if len(parts) == 1:
                mounts.append(("anonymous", parts[0]))   # one per container
            else:
                mounts.append(("bind" if parts[0].startswith((".", "/", "~")) else "volume", parts[1]))
    files = [s["path"] for s in cfg["alerts"]["sinks"] if s["type"] in ("sqlite", "jsonl")]
    if cfg["pipeline"]["dead_letter_path"]:
        files.append(cfg["pipeline"]["dead_letter_path"])
    shared = []
    for f in files:
        f = posixpath.normpath(posixpath.join(svc.get("working_dir") or workdir, f))
        for kind, target in mounts:
            if (f == target or f.startswith(target.rstrip("/") + "/")) and kind in ("bind", "volume"):
                shared.append(f"{f} (on {kind} {target})")
    return shared


def _workdir() -> str:
    return re.findall(r"^WORKDIR\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)[-1]


def test_replicas_share_no_alert_file():
    doc = _compose()
    daemons = _daemon_services(doc)
    assert daemons, "no graphsentry service in docker-compose.yml"
    for name, svc in daemons.items():
        replicas = (svc.get("deploy") or {}).get("replicas", svc.get("scale", 1))
        cfg = _effective_daemon_config(svc)
        if replicas > 1:
            assert _shared_file_paths(svc, cfg, _workdir()) == [], f"{name}: replicas would share these files"
            # the alerts still land somewhere every replica writes to durably
            assert any(s["type"] == "kafka" and s["required"] for s in cfg["alerts"]["sinks"]), cfg["alerts"]
    assert max((s.get("deploy") or {}).get("replicas", 1) for s in daemons.values()) >= 2


def test_the_shared_file_check_catches_sqlite_on_a_shared_volume():
    """The layout this file had before: two replicas, SQLite alerts on one named volume."""
    svc = {"build": {"context": "..", "dockerfile": "deploy/Dockerfile"}, "deploy": {"replicas": 2},
           "environment": {"GRAPHSENTRY_KAFKA_BOOTSTRAP": "kafka:9092"},
           "volumes": ["./graphsentry.yaml:/etc/graphsentry/graphsentry.yaml:ro", "graphsentry-data:/var/lib/graphsentry"]}
    cfg = _effective_daemon_config(svc)
    assert _shared_file_paths(svc, cfg, _workdir()) == ["/var/lib/graphsentry/alerts.db (on volume /var/lib/graphsentry)"]
    svc["volumes"][1] = "../out:/app/out"
    cfg["alerts"]["sinks"] = [{"type": "jsonl", "path": "out/alerts.jsonl", "required": True}]
    assert _shared_file_paths(svc, cfg, _workdir()) == ["/app/out/alerts.jsonl (on bind /app/out)"]


def test_prometheus_scrapes_every_replica_on_the_metrics_port():
    doc = _compose()
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for name, svc in _daemon_services(doc).items():
        cfg = _effective_daemon_config(svc)
        assert cfg["metrics"]["enabled"] and cfg["metrics"]["host"] == "0.0.0.0", "replicas must be reachable"
        port = cfg["metrics"]["port"]
        assert str(port) in [str(p) for p in svc.get("expose", [])]
        jobs = [j for j in prom["scrape_configs"]
                if any(name in sd.get("names", []) for sd in j.get("dns_sd_configs", []))]
        assert jobs, f"no dns_sd_configs job resolves the compose service {name!r}"
        sd = next(sd for sd in jobs[0]["dns_sd_configs"] if name in sd["names"])
        assert sd["type"] == "A" and sd["port"] == port and jobs[0].get("metrics_path", "/metrics") == "/metrics"
    # Grafana reads this Prometheus; the rules Prometheus loads are the ones mounted next to its config
    prom_svc = doc["services"]["prometheus"]
    mounted = {v.split(":")[1] for v in prom_svc["volumes"]}
    for rf in prom["rule_files"]:
        assert posixpath.join("/etc/prometheus", rf) in mounted


def _serve(ready: bool) -> MetricsServer:
    return MetricsServer(Metrics(), "127.0.0.1", 0, ready=lambda: ready).start()


def test_daemon_healthcheck_command_works_against_the_real_metrics_server():
    """Runs the compose healthcheck's own command against detector.metrics.MetricsServer: exit 0 when
    ready, non-zero when not (503), and it asks the port the effective config serves on."""
    for name, svc in _daemon_services(_compose()).items():
        cfg = _effective_daemon_config(svc)
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python", "the image has python, not curl/wget"
        m = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(test))
        assert m and int(m[1]) == cfg["metrics"]["port"] and m[2] in ("/readyz", "/healthz"), test
        for ready, ok in ((True, True), (False, m[2] == "/healthz")):
            server = _serve(ready)
            try:
                argv = [sys.executable] + [a.replace(f":{m[1]}/", f":{server.port}/") for a in test[2:]]
                r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
                assert (r.returncode == 0) is ok, (ready, r.stderr)
            finally:
                server.stop()


# --- kubernetes, systemd, docs ----------------------------------------------------------------------

def test_k8s_replicas_keep_alert_files_per_pod(tmp_path):
    cm = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    inner = tmp_path / "cm.yaml"
    inner.write_text(cm["data"]["graphsentry.yaml"])
    cfg = load_config(inner, env={})
    dep = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = pod["containers"][0]["volumeMounts"]
    files = [s["path"] for s in cfg["alerts"]["sinks"] if s["type"] in ("sqlite", "jsonl")]
    for f in files:
        under = [mt for mt in mounts if f.startswith(mt["mountPath"].rstrip("/") + "/")]
        assert under, f"{f} is on no volume (lost with the container)"
        vol = volumes[under[-1]["name"]]
        assert "persistentVolumeClaim" not in vol, f"{f} is on a claim every replica would share"
    assert any(s["type"] == "kafka" for s in cfg["alerts"]["sinks"])
    # the probes ask the port the config serves metrics on
    port = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}["metrics"]
    assert port == cfg["metrics"]["port"] and cfg["metrics"]["host"] == "0.0.0.0"
    svc = yaml.safe_load((DEPLOY / "k8s" / "service.yaml").read_text())
    assert svc["spec"]["clusterIP"] == "None"   # headless: one endpoint per pod


def test_deployment_doc_covers_every_deploy_file():
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for p in sorted(DEPLOY.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(ROOT))
            assert rel in doc or p.name in doc, f"docs/deployment.md does not mention {rel}"

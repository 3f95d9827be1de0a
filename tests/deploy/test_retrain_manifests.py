"""deploy/ manifests for (re)training: the Kubernetes Job running torchrun (with its headless Service), the
PyTorchJob variant, the retraining CronJob, and the systemd service + timer. Each parses as one YAML document
(the other deploy tests read every deploy/k8s/*.yaml with ``yaml.safe_load``) of the right apiVersion/kind with a
spec, the Job's torchrun settings agree with each other, and the commands they run parse with graphsentry's own
argument parser (so a renamed or removed option fails here, not at 03:00 on a Sunday)."""
from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest
import yaml

from training.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SYSTEMD = ROOT / "deploy" / "systemd"
MANIFESTS = {
    "train-job.yaml": ("batch/v1", "Job"),
    "train-service.yaml": ("v1", "Service"),
    "train-pytorchjob.yaml": ("kubeflow.org/v1", "PyTorchJob"),
    "retrain-cronjob.yaml": ("batch/v1", "CronJob"),
}
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label (Kubernetes object names)


def _load(name: str) -> dict:
    docs = list(yaml.safe_load_all((K8S / name).read_text()))
    assert len(docs) == 1, f"{name}: one document per file ({len(docs)} found)"
    return docs[0]


def _pod_spec(doc: dict) -> dict:
    kind = doc["kind"]
    if kind == "Job":
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    raise AssertionError(kind)


def _command(container: dict) -> list[str]:
    """The container's argv; ``sh -c SCRIPT`` is split as the shell would (quotes removed, globs kept)."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2])
        if argv[0] == "exec":
            argv = argv[1:]
    return argv


def _after_module(argv: list[str]) -> list[str]:
    """The `graphsentry train ...` part of ``torchrun ... -m training.distributed train ...``."""
    i = argv.index("-m")
    assert argv[i + 1] == "training.distributed"
    return argv[i + 2:]


def _torchrun_opts(argv: list[str]) -> dict[str, str]:
    assert argv[0] == "torchrun"
    out = {}
    for a in argv[1:argv.index("-m")]:
        k, _, v = a.partition("=")
        out[k] = v
    return out


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_shape(name):
    doc = _load(name)
    api, kind = MANIFESTS[name]
    assert doc["apiVersion"] == api and doc["kind"] == kind
    assert NAME.match(doc["metadata"]["name"]), doc["metadata"]["name"]
    assert isinstance(doc.get("spec"), dict) and doc["spec"]


def test_job_runs_torchrun_with_consistent_rendezvous():
    job, svc = _load("train-job.yaml"), _load("train-service.yaml")
    spec, pod = job["spec"], _pod_spec(job)
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] == 0
    # headless Service: the subdomain that gives pod i the name <job>-<i>.<service>
    assert svc["spec"]["clusterIP"] == "None" and pod["subdomain"] == svc["metadata"]["name"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    (c,) = pod["containers"]
    argv = _command(c)
    opts = _torchrun_opts(argv)
    assert int(opts["--nnodes"]) == spec["completions"]
    assert opts["--node-rank"] == "$JOB_COMPLETION_INDEX" and opts["--rdzv-backend"] == "c10d"
    host, port = opts["--rdzv-endpoint"].rsplit(":", 1)
    assert host == f"{job['metadata']['name']}-0.{svc['metadata']['name']}"
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["GRAPHSENTRY_TORCH_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    # one core requested per rank
    assert float(c["resources"]["requests"]["cpu"]) >= int(opts["--nproc-per-node"])
    args = build_parser().parse_args(_after_module(argv))
    assert args.command == "train" and args.out and args.nproc == 0


def test_pytorchjob_replicas_and_command():
    doc = _load("train-pytorchjob.yaml")
    specs = doc["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] >= 1
    assert int(doc["spec"]["nprocPerNode"]) >= 1
    cmds = []
    for role in ("Master", "Worker"):
        assert specs[role]["restartPolicy"] in ("Never", "OnFailure")
        (c,) = specs[role]["template"]["spec"]["containers"]
        assert c["name"] == "pytorch"  # the operator's default container name
        argv = _command(c)
        assert argv[0] == "torchrun"
        assert build_parser().parse_args(_after_module(argv)).command == "train"
        cmds.append(argv)
    assert cmds[0] == cmds[1], "master and workers must run the same command"


def test_cronjob_runs_graphsentry_retrain():
    doc = _load("retrain-cronjob.yaml")
    fields = doc["spec"]["schedule"].split()
    assert len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields), doc["spec"]["schedule"]
    assert doc["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _pod_spec(doc)
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (c,) = pod["containers"]
    argv = _command(c)
    assert argv[:2] == ["graphsentry", "retrain"]
    args = build_parser().parse_args(argv[1:])
    assert args.archive and args.registry
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(args.archive.startswith(m) for m in mounts) and any(args.registry.startswith(m) for m in mounts)


def _unit(name: str) -> configparser.ConfigParser:
    u = configparser.ConfigParser(strict=False, interpolation=None)
    u.optionxform = str  # systemd keys are case-sensitive
    assert u.read(SYSTEMD / name), name
    return u


def test_systemd_service_and_timer():
    svc, timer = _unit("graphsentry-retrain.service"), _unit("graphsentry-retrain.timer")
    assert svc["Service"]["Type"] == "oneshot"
    argv = shlex.split(svc["Service"]["ExecStart"])
    assert Path(argv[0]).name == "graphsentry" and argv[1] == "retrain"
    args = build_parser().parse_args(argv[1:])
    assert args.archive and args.registry
    assert "Install" not in svc  # started by the timer only
    assert timer["Timer"]["Unit"] == "graphsentry-retrain.service"
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"

"""The file-based model registry (training.registry) and `graphsentry models`, on real files and symlinks.

A tiny real model is trained once per session (the ``tiny_model`` fixture of tests/conftest.py: random
encoder + kNN on the bundled Zeek sample); a second one is the same model with another threshold, saved
with a fresh manifest. The last test runs the daemon on ``REGISTRY/champion`` and checks that it
follows a promotion and a rollback.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli
from detector.model_files import ModelDirError, write_manifest
from training.registry import Registry, RegistryError, RegistryLocked, export_model_info

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"


def _retuned(model: Path, dst: Path, threshold: float) -> Path:
    """A copy of ``model`` with another threshold, saved with a fresh manifest (a valid model directory)."""
    shutil.copytree(model, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["threshold"] = threshold
    cfg["calibration"]["threshold"] = threshold
    (dst / "config.json").write_text(json.dumps(cfg))
    write_manifest(dst)
    return dst


@pytest.fixture(scope="module")
def other_model(tiny_model, tmp_path_factory) -> Path:
    return _retuned(tiny_model, tmp_path_factory.mktemp("model2") / "m2", 123.5)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "error" in lines[0], err
    return lines[0]


# -- versions ----------------------------------------------------------------------------------------


def test_register_twice_records_versions_and_metadata(tiny_model, other_model, tmp_path):
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(tiny_model)
    assert reg.promote(v1) == "v0001"
    v2 = reg.register(other_model, {"gate": {"decision": "pass", "auprc_margin": 0.01},
                                    "metrics": {"holdout_auprc": 0.5}, "data": {"archive": "out/archive"}},
                      reason="retrained")
    assert (v1, v2) == ("v0001", "v0002") and reg.versions() == ["v0001", "v0002"]
    meta = reg.metadata(v2)
    cfg = json.loads((other_model / "config.json").read_text())
    assert meta["parent"] == "v0001"                                   # the champion when it was registered
    assert meta["data"]["fingerprint"] == cfg["fingerprint"] and meta["data"]["archive"] == "out/archive"
    assert meta["data"]["from"].startswith("2022-06-12T") and meta["data"]["to"].startswith("2022-06-13T")
    assert meta["knowledge"]["hash"] == cfg["kg"]["hash"]
    assert meta["code"]["package"] and (meta["code"]["git_commit"] is None
                                        or re.fullmatch(r"[0-9a-f]{40}", meta["code"]["git_commit"]))
    assert meta["metrics"]["holdout_auprc"] == 0.5 and meta["metrics"]["records_in"] == cfg["metrics"]["records_in"]
    assert meta["gate"]["decision"] == "pass" and meta["model"]["threshold"] == 123.5
    rows = reg.list()
    assert [(r["version"], r["aliases"], r["gate"]) for r in rows] == [("v0001", ["champion"], None),
                                                                      ("v0002", [], "pass")]
    # a registered version is still a loadable model directory: its manifest lists registry.json too
    from detector.bundle import load_bundle

    assert load_bundle(reg.resolve("v0002")).threshold == 123.5
    assert "registry.json" in reg.verify("v0002")


def test_versions_are_immutable_and_a_changed_dir_gets_a_new_version(tiny_model, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model, src)
    (src / "checkpoint.pt").write_bytes(b"training state")         # not part of the model: not copied
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(src)
    d = reg.resolve(v1)
    assert not (d / "checkpoint.pt").exists()
    for p in [d, *d.iterdir()]:
        assert not os.stat(p).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), f"{p} is writable"
    assert not list(reg.versions_dir.glob(".staging-*"))
    before = reg.metadata(v1)["content_sha256"]
    _retuned(tiny_model, tmp_path / "changed", 50.0)
    v2 = reg.register(tmp_path / "changed")
    assert v2 == "v0002" and reg.metadata(v2)["content_sha256"] != before
    assert reg.metadata(v1)["content_sha256"] == before
    assert json.loads((d / "config.json").read_text())["threshold"] != 50.0
    assert reg.metadata(reg.register(src))["content_sha256"] == before   # same files: same content hash, v0003


def test_a_broken_model_directory_is_refused(tiny_model, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model, src)
    w = src / "weights.pt"
    w.write_bytes(w.read_bytes()[:100])
    reg = Registry(tmp_path / "reg")
    with pytest.raises(ModelDirError, match="weights.pt"):
        reg.register(src)
    with pytest.raises(RegistryError, match="not a model directory"):
        reg.register(tmp_path)
    assert reg.versions() == [] and not list(reg.versions_dir.glob(".staging-*"))


# -- aliases and history -----------------------------------------------------------------------------


def test_promote_rollback_and_history(tiny_model, other_model, tmp_path):
    reg = Registry(tmp_path / "reg")
    v1, v2, v3 = (reg.register(m) for m in (tiny_model, other_model, tiny_model))
    with pytest.raises(RegistryError, match="no champion"):
        reg.rollback()
    reg.promote(v1)
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback()
    reg.promote(v2, reason="gate passed")
    reg.set_alias("challenger", v3)
    reg.promote("challenger")
    assert reg.aliases() == {"champion": v3, "previous": v2}          # the promoted challenger is no challenger
    assert os.readlink(tmp_path / "reg" / "champion") == os.path.join("versions", v3)   # relative: the tree moves
    with pytest.raises(RegistryError, match="already the champion"):
        reg.promote(v3)
    assert reg.rollback(reason="too many alerts") == v2 and reg.aliases() == {"champion": v2, "previous": v1}
    assert reg.rollback() == v1 and reg.aliases() == {"champion": v1}
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback()
    assert reg.resolve("champion") == reg.versions_dir / v1
    events = [json.loads(line) for line in (tmp_path / "reg" / "history.jsonl").read_text().splitlines()]
    assert [(e["event"], e["version"]) for e in events] == [
        ("register", v1), ("register", v2), ("register", v3), ("promote", v1), ("promote", v2),
        ("set-alias", v3), ("promote", v3), ("rollback", v2), ("rollback", v1)]
    assert all(e["time"].endswith("Z") and e["user"] for e in events)
    assert events[4]["reason"] == "gate passed" and events[4]["previous"] == v1
    assert events[7] == {**events[7], "was": v3, "champion": v2, "previous": v1, "reason": "too many alerts"}


def test_verify_detects_tampering_and_promotion_refuses_it(tiny_model, tmp_path):
    reg = Registry(tmp_path / "reg")
    v1, v2 = reg.register(tiny_model), reg.register(tiny_model)
    reg.promote(v1)
    assert set(reg.verify(v2)) >= {"config.json", "weights.pt", "detector.npz", "registry.json"}
    target = reg.resolve(v2) / "detector.npz"
    os.chmod(target, 0o644)
    with open(target, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ModelDirError, match="detector.npz differs"):
        reg.verify(v2)
    with pytest.raises(ModelDirError, match="detector.npz"):
        reg.promote(v2)
    assert reg.aliases() == {"champion": v1}
    meta = reg.resolve(v1) / "registry.json"                         # the metadata is covered as well
    os.chmod(meta, 0o644)
    meta.write_text(meta.read_text().replace('"parent": null', '"parent": "v0042"'))
    with pytest.raises(ModelDirError, match="registry.json"):
        reg.verify("champion")


def test_promotion_refuses_a_version_the_daemon_could_not_load(tiny_model, tmp_path):
    """Checksums fine, but trained for another knowledge artifact: the daemon would refuse it, so does promote."""
    other = tmp_path / "other-kg"
    shutil.copytree(tiny_model, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["kg"]["width"] += 1
    (other / "config.json").write_text(json.dumps(cfg))
    write_manifest(other)
    reg = Registry(tmp_path / "reg")
    v1, v2 = reg.register(tiny_model), reg.register(other)
    reg.promote(v1)
    assert set(reg.verify(v2)) >= {"config.json"}
    with pytest.raises(RegistryError, match=f"{v2} cannot be loaded here"):
        reg.promote(v2)
    assert reg.aliases() == {"champion": v1}
    assert reg.promote(v2, check_load=False) == v2                  # an operator who knows better
    assert reg.rollback() == v1


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_gets_a_clear_lock_error(tiny_model, tmp_path, capsys):
    reg = Registry(tmp_path / "reg", lock_timeout=0.3)
    reg.register(tiny_model)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "reg" / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(RegistryLocked, match=r"another registry writer holds .*reg/\.lock"):
            reg.promote("v0001")
        assert 0.25 <= time.monotonic() - t0 < 5
        rc, _, err = run_cli(["models", "register", str(tiny_model), "--registry", str(tmp_path / "reg"),
                              "--lock-timeout", "0.2"], capsys)
        assert rc == 2 and "another registry writer holds" in _one_error_line(err)
        assert reg.list()[0]["aliases"] == [] and reg.versions() == ["v0001"]   # readers take no lock
    finally:
        holder.communicate("\n", timeout=10)
    assert reg.promote("v0001") == "v0001"                            # released with its holder


_READER = """
import os, sys
root, stop = sys.argv[1], sys.argv[2]
checks = bad = 0
while not os.path.exists(stop):
    checks += 1
    if not os.path.isfile(os.path.join(root, "champion", "config.json")):
        bad += 1
print(checks, bad, flush=True)
"""


def test_promotion_swaps_the_alias_atomically(tiny_model, other_model, tmp_path):
    """A reader in another process never finds ``champion`` missing or dangling while promotions run."""
    reg = Registry(tmp_path / "reg")
    v1, v2 = reg.register(tiny_model), reg.register(other_model)
    reg.promote(v1)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(tmp_path / "reg"), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        for i in range(100):
            reg.promote(v2 if i % 2 == 0 else v1, check_load=False)
    finally:
        stop.touch()
        out = reader.communicate(timeout=30)[0]
    checks, bad = map(int, out.split())
    assert checks > 100 and bad == 0, f"{bad} of {checks} reads found no champion"
    assert not list((tmp_path / "reg").glob(".champion.tmp-*"))


# -- the command line --------------------------------------------------------------------------------


def test_models_cli(tiny_model, other_model, tmp_path, capsys):
    r = str(tmp_path / "reg")
    rc, out, _ = run_cli(["models", "register", str(tiny_model), "--registry", r, "--promote"], capsys)
    assert rc == 0 and "registered v0001" in out and "champion" in out
    rc, out, _ = run_cli(["models", "register", str(other_model), "--registry", r, "--challenger", "--json",
                          "--metadata", '{"gate": {"decision": "pass"}}'], capsys)
    assert rc == 0 and json.loads(out) == {**json.loads(out), "version": "v0002", "aliases": ["challenger"]}
    rc, out, _ = run_cli(["models", "list", "--registry", r], capsys)
    assert rc == 0 and out.splitlines()[0].split()[:3] == ["VERSION", "CREATED", "ALIASES"]
    assert re.search(r"^v0001 .* champion ", out, re.M) and re.search(r"^v0002 .* challenger .* pass$", out, re.M)
    rc, out, _ = run_cli(["models", "list", "--registry", r, "--json"], capsys)
    assert json.loads(out)["aliases"] == {"champion": "v0001", "challenger": "v0002"}
    rc, out, _ = run_cli(["models", "show", "challenger", "--registry", r, "--verify"], capsys)
    assert rc == 0 and "version     v0002  (challenger)" in out and "every file matches" in out
    assert re.search(r"^weights\.pt +\d+ +[0-9a-f]{64}$", out, re.M)
    rc, out, _ = run_cli(["models", "promote", "v0002", "--registry", r, "--reason", "gate passed"], capsys)
    assert rc == 0 and "champion: v0002 (was v0001)" in out
    rc, out, _ = run_cli(["models", "diff", "previous", "champion", "--registry", r], capsys)
    assert rc == 0 and out.startswith("v0001 -> v0002")
    assert re.search(r"^threshold +\d+\.\d+ +123\.5$", out, re.M)  # the trained value, then the edited one
    assert re.search(r"^config\.json +[0-9a-f]{16} +[0-9a-f]{16}$", out, re.M) and "weights.pt" not in out
    rc, out, _ = run_cli(["models", "diff", "1", "2", "--registry", r, "--json"], capsys)
    d = json.loads(out)
    assert [x["file"] for x in d["files"]] == ["config.json"]  # registry.json differs always: left out
    assert any(x["key"] == "calibration.threshold" and x["b"] == 123.5 for x in d["config"])
    assert d["metrics"] and all({"key", "a", "b", "differs"} <= set(m) for m in d["metrics"])
    rc, out, _ = run_cli(["models", "rollback", "--registry", r], capsys)
    assert rc == 0 and "champion: v0001 (was v0002)" in out
    rc, out, _ = run_cli(["models", "verify", "champion", "--registry", r], capsys)
    assert rc == 0 and "files match manifest.json" in out


@pytest.mark.parametrize("argv, says", [
    (["models", "show", "v0099"], "no version 'v0099'"),
    (["models", "promote", "v0099"], "no version 'v0099'"),
    (["models", "diff", "v0001", "nope"], "no version 'nope'"),
    (["models", "show", "challenger"], "alias 'challenger' is not set"),
    (["models", "rollback"], "no previous champion"),
    (["models", "register", "/nonexistent-model"], "not a model directory"),
])
def test_models_cli_user_errors_are_one_line_exit_2(tiny_model, tmp_path, capsys, argv, says):
    r = tmp_path / "reg"
    Registry(r).promote(Registry(r).register(tiny_model))
    rc, _, err = run_cli([*argv, "--registry", str(r)], capsys)
    assert rc == 2 and says in _one_error_line(err)


def test_models_cli_without_a_registry(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GRAPHSENTRY_REGISTRY", raising=False)
    rc, _, err = run_cli(["models", "list"], capsys)
    assert rc == 2 and "--registry DIR" in _one_error_line(err)
    rc, _, err = run_cli(["models", "list", "--registry", str(tmp_path / "none")], capsys)
    assert rc == 2 and "not a model registry" in _one_error_line(err)
    assert not (tmp_path / "none").exists()
    rc, _, err = run_cli(["models", "register", str(tmp_path), "--registry", "/nonexistent-root-dir/reg"], capsys)
    assert rc == 2 and not Path("/nonexistent-root-dir").exists()


# -- metrics -----------------------------------------------------------------------------------------


def test_model_info_metric_follows_the_aliases(tiny_model, other_model, tmp_path):
    from prometheus_client import generate_latest

    reg = Registry(tmp_path / "reg")
    v1, v2 = reg.register(tiny_model), reg.register(other_model)
    prom = export_model_info(reg)
    assert "graphsentry_registry_alias_info{" not in generate_latest(prom).decode()   # no alias set yet
    reg.promote(v1)
    reg.promote(v2)
    text = generate_latest(prom).decode()
    assert 'graphsentry_registry_alias_info{alias="champion",version="v0002"} 1.0' in text
    assert 'graphsentry_registry_alias_info{alias="previous",version="v0001"} 1.0' in text
    reg.rollback()
    assert 'graphsentry_registry_alias_info{alias="champion",version="v0001"} 1.0' in generate_latest(prom).decode()
    # no clash with the daemon's graphsentry_model_info{version,path,alias}: both go in one registry
    from detector.daemon.pipeline import registry_alias
    from detector.metrics import Metrics

    m = Metrics()
    export_model_info(reg, m.registry)
    m.set_model("v0001-abc", str(reg.resolve("champion")), alias=registry_alias(tmp_path / "reg" / "champion"))
    text = m.render().decode()
    assert 'graphsentry_registry_alias_info{alias="champion",version="v0001"} 1.0' in text
    assert re.search(r'graphsentry_model_info\{alias="champion",path="[^"]*v0001",version="v0001-abc"\} 1.0', text)
    assert registry_alias(reg.resolve("champion")) == ""       # a version folder itself: no alias
    assert registry_alias(tmp_path / "elsewhere") == ""


# -- the daemon follows the champion -----------------------------------------------------------------


def _wait(cond, timeout: float, feed=None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        if feed is not None:
            feed()
        time.sleep(0.3)


@pytest.mark.slow
def test_daemon_on_champion_follows_promotion_and_rollback(tiny_model, other_model, tmp_path):
    from detector.daemon import Daemon, load_config

    reg = Registry(tmp_path / "reg")
    v1, v2 = reg.register(tiny_model), reg.register(other_model)
    reg.promote(v1)
    lines = SAMPLE.read_text().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.startswith("#")]
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "conn.log"
    log.write_text("".join(header) + "".join(body[:100]))
    fed = [100]

    def feed() -> None:
        n = fed[0]
        assert n < len(body), "ran out of sample records before the daemon swapped"
        with open(log, "a") as f:
            f.write("".join(body[n:n + 20]))
        fed[0] = n + 20

    cfg = load_config(overrides={
        "source": {"paths": [str(tmp_path / "logs")], "follow": True, "poll_interval": 0.1},
        "window": {"size": 600.0, "lateness": 0.0, "idle_timeout": 0.5},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"port": 0},
        "model": {"path": str(tmp_path / "reg" / "champion"), "watch": True, "watch_interval": 0.1}}, env={})
    d = Daemon(cfg, install_signals=False)

    def scoring() -> str:
        m = re.search(r'graphsentry_model_info\{[^}]*version="(v\d{4})-', d.metrics.render().decode())
        return m.group(1) if m else ""

    th = threading.Thread(target=d.run)
    th.start()
    try:
        _wait(lambda: d.summary.records_scored + d.summary.late >= 50 and scoring() == v1, 60)
        reg.promote(v2)
        _wait(lambda: scoring() == v2, 90, feed)
        reg.rollback()
        _wait(lambda: scoring() == v1, 90, feed)
    finally:
        d.stop("test")
        th.join(60)
    assert not th.is_alive()
    assert d.summary.model_reloads == 2 and d.metrics.value("graphsentry_model_reloads_total", {"result": "ok"}) == 2
    assert d.summary.model_version.startswith(v1)


def test_daemon_picks_up_a_promotion_made_while_it_starts(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "detector"))
    from daemon_helpers import load_fanout, write_fanout_model
    from detector.daemon import Daemon, load_config

    reg = Registry(tmp_path / "reg")
    for name in ("a", "b"):
        write_manifest(write_fanout_model(tmp_path / name, threshold=3, version=name))
    v1, v2 = reg.register(tmp_path / "a"), reg.register(tmp_path / "b")
    reg.promote(v1, check_load=False)
    loaded = []

    def loader(path):
        m = load_fanout(path)
        loaded.append(m.version)
        if len(loaded) == 1:
            reg.promote(v2, check_load=False)      # lands while the daemon loads its first model
        return m

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "conn.log").write_text(SAMPLE.read_text())
    cfg = load_config(overrides={
        "source": {"paths": [str(tmp_path / "logs")], "follow": True, "poll_interval": 0.1},
        "window": {"size": 600.0, "lateness": 0.0, "idle_timeout": 0.3},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]}, "metrics": {"port": 0},
        "model": {"path": str(tmp_path / "reg" / "champion"), "watch": True, "watch_interval": 0.1}}, env={})
    d = Daemon(cfg, loader=loader, install_signals=False)
    th = threading.Thread(target=d.run)
    th.start()
    try:
        _wait(lambda: len(loaded) >= 2, 3)
    finally:
        d.stop("test")
        th.join(30)
    assert loaded == ["a", "b"]


def test_a_writer_killed_while_registering_leaves_no_lock_and_its_staging_is_cleaned(tiny_model, tmp_path):
    import signal

    big = tmp_path / "big-model"
    shutil.copytree(tiny_model, big)
    (big / "extra.bin").write_bytes(os.urandom(64 << 20))   # copying and hashing it takes a while
    write_manifest(big)
    reg = Registry(tmp_path / "reg", lock_timeout=1.0)
    reg.promote(reg.register(tiny_model))
    history = (reg.root / "history.jsonl").read_text()
    code = ("import sys; from training.registry import Registry; "
            f"Registry({str(reg.root)!r}).register({str(big)!r})")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not list(reg.versions_dir.glob(".staging-*")) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(30)
    assert p.returncode == -signal.SIGKILL
    left = list(reg.versions_dir.glob(".staging-*"))
    assert left, "the writer finished before it could be killed"
    assert reg.versions() == ["v0001"] and (reg.root / "history.jsonl").read_text() == history
    assert reg.register(tiny_model) == "v0002"     # the flock went with the process (else RegistryLocked after 1 s)
    assert reg.stale_cleaned == [str(left[0].relative_to(reg.root))] and not left[0].exists()
    assert reg.aliases() == {"champion": "v0001"} and reg.verify("v0002")

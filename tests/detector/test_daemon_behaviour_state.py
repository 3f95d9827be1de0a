"""The daemon's long-horizon behaviour state across restarts (issue 17 s3): checkpointed with the positions
it covers, offsets committed only up to a saved state, resumed after kill -9 so that every flow gets the
behaviour features of one uninterrupted run; a mismatched or damaged checkpoint gives a fresh state and a
warning; the state's memory stays bounded under a flood of spoofed sources.

Real components throughout: a small trained bundle (its StreamScorer keeps the behaviour state), a real
Kafka broker (tests/kafka_fixtures.py), `graphsentry serve` in a subprocess killed with SIGKILL.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from daemon_helpers import BEACON_SRC, read_behaviour_log, read_flows, write_beacon_zeek
from detector.daemon import LoadedModel, load_config, run_daemon
from detector.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "detector"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A small real bundle (the same recipe as tests/detector/test_scoring_behaviour.py), saved."""
    from training.pretrain import TrainConfig, train_bundle
    from training.synthetic import synthetic_flows

    d = tmp_path_factory.mktemp("bundle") / "model"
    train = synthetic_flows(n_benign=800, n_attack=60, duration=900, seed=3)
    train_bundle([train], TrainConfig(epochs=1, hidden=16, seed=0, objective="contrastive"), out_dir=d,
                 progress=False)
    return d


@pytest.fixture(scope="module")
def zeek(tmp_path_factory) -> Path:
    return write_beacon_zeek(tmp_path_factory.mktemp("zeek") / "conn.log")


def _checkpoints(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("behaviour-*") if (p / "checkpoint.json").exists()) if d.exists() else []


def _state_of(d: Path):
    from ingest.behaviour import BehaviourState

    return BehaviourState.load(_checkpoints(d)[-1])


def _assert_same_state(a, b) -> None:
    ma, aa = a.state()
    mb, ab = b.state()
    assert ma == mb
    assert aa.keys() == ab.keys()
    for k in aa:
        np.testing.assert_array_equal(aa[k], ab[k], err_msg=k)


# ------------------------------------------------------------------------------------------ kill -9 (Kafka)


def _serve(cfg: Path, log: Path, env: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]),
           "GRAPHSENTRY_BEHAVIOUR": "on", **env}
    return subprocess.Popen([sys.executable, "-m", "training.cli", "-v", "serve", "--config", str(cfg)], cwd=REPO,
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def _kafka_cfg(tmp: Path, name: str, bootstrap: str, topic: str, model: Path) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(json.dumps({
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": f"g-{name}", "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "commit_interval": 0.2, "max_poll_records": 50,
                  "dead_letter_topic": None},
        "window": {"size": 60.0, "lateness": 5.0, "idle_timeout": None},
        "model": {"path": str(model), "loader": "daemon_helpers:load_recording_bundle", "watch": False},
        "alerts": {"sinks": [{"type": "jsonl", "path": str(tmp / f"{name}-alerts.jsonl")}]},
        "metrics": {"port": 0}, "pipeline": {"queue_size": 4, "window_queue_size": 2, "progress_interval": 0,
                                             "behaviour_state_dir": str(tmp / f"{name}-state"),
                                             "behaviour_checkpoint_interval": 1.0},
    }))
    return cfg


def _run_to_end(cfg: Path, log: Path, env: dict, timeout: float = 180) -> None:
    p = _serve(cfg, log, {**env, "GRAPHSENTRY_KAFKA_STOP_AT_END": "true"})
    try:
        assert p.wait(timeout) == 0, _tail(log)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.kafka
@pytest.mark.slow
def test_kill9_and_restart_give_every_flow_the_behaviour_features_of_one_run(kafka_bootstrap, bundle_dir, zeek,
                                                                            tmp_path):
    from ingest.kafka_io import make_producer, replay
    from kafka_fixtures import new_topic
    from knowledge.behaviour_predicates import FIRE_THRESHOLD, TECHNIQUES

    t = read_flows(zeek)                                            # 2 h: a 60 s beacon among Poisson pairs
    uids = t.column("uid").to_pylist()
    topic = new_topic(kafka_bootstrap, 1)
    p = make_producer({"bootstrap": kafka_bootstrap})
    replay([t], p, topic, 1, fmt="json")
    p.close()

    # one uninterrupted run
    ref_log = tmp_path / "ref-behaviour.jsonl"
    _run_to_end(_kafka_cfg(tmp_path, "ref", kafka_bootstrap, topic, bundle_dir), tmp_path / "ref.log",
                {"GRAPHSENTRY_TEST_BEHAVIOUR_LOG": str(ref_log)})
    ref: dict = {}
    for w in read_behaviour_log(ref_log):
        ref.update(w)
    assert sorted(ref) == sorted(uids)                              # every flow once, with its features
    beacon = [u for u, s in zip(uids, t.column("src_ip").to_pylist()) if s == BEACON_SRC]
    t1071 = TECHNIQUES.index("T1071")
    fired = [u for u in beacon if ref[u][t1071] >= FIRE_THRESHOLD]
    assert len(fired) > len(beacon) // 2                            # the features are not trivial

    # the same input, killed mid-stream after a checkpoint, then restarted
    cfg = _kafka_cfg(tmp_path, "crash", kafka_bootstrap, topic, bundle_dir)
    state = tmp_path / "crash-state"
    log1, log2 = tmp_path / "crash-1.jsonl", tmp_path / "crash-2.jsonl"
    first = _serve(cfg, tmp_path / "first.log", {"GRAPHSENTRY_TEST_BEHAVIOUR_LOG": str(log1),
                                                  "GRAPHSENTRY_TEST_WINDOW_DELAY": "0.1"})
    try:
        deadline = time.monotonic() + 120
        while len(read_behaviour_log(log1)) < 40 or not any(
                json.loads((c / "checkpoint.json").read_text())["flows_seen"] > 500 for c in _checkpoints(state)):
            assert first.poll() is None, "daemon exited early\n" + _tail(tmp_path / "first.log")
            assert time.monotonic() < deadline, "daemon scored nothing\n" + _tail(tmp_path / "first.log")
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = read_behaviour_log(log1)
    assert 40 <= len(before) < 115, "the kill must land mid-stream"
    _run_to_end(cfg, tmp_path / "second.log", {"GRAPHSENTRY_TEST_BEHAVIOUR_LOG": str(log2)})
    second_log = (tmp_path / "second.log").read_text()
    assert "behaviour state resumed from" in second_log, _tail(tmp_path / "second.log")
    assert "starts fresh" not in second_log
    after = read_behaviour_log(log2)
    resumed = {u for w in after for u in w}
    assert resumed and len(resumed) < len(uids)                    # only what the checkpoint did not cover
    # every flow scored, and every time it was scored (before the kill or after) with the features of one run
    got = [(u, s) for w in before + after for u, s in w.items()]
    assert {u for u, _ in got} == set(uids)
    wrong = [(u, s, ref[u]) for u, s in got if s != ref[u]]
    assert not wrong, f"{len(wrong)} flows with other behaviour features than one run, e.g. {wrong[:3]}"
    # the beacon's flows read again after the restart fire on the history from before the kill
    assert any(ref[u][t1071] >= FIRE_THRESHOLD for u in resumed if u in set(beacon))
    # and the state at the end is the uninterrupted run's, bit for bit (nothing counted twice or missed)
    _assert_same_state(_state_of(state), _state_of(tmp_path / "ref-state"))
    assert _state_of(state).flows_seen == len(uids)


# ------------------------------------------------------------------ mismatched / damaged checkpoints (files)


def _file_cfg(tmp: Path, path: Path, model: Path, state: Path, **over) -> dict:
    base = {"source": {"paths": [str(path)]}, "window": {"size": 60.0, "lateness": 5.0, "idle_timeout": None},
            "alerts": {"sinks": [{"type": "jsonl", "path": str(tmp / "alerts.jsonl")}]},
            "metrics": {"enabled": False}, "model": {"path": str(model), "watch": False},
            "pipeline": {"progress_interval": 0, "behaviour_state_dir": str(state),
                         "behaviour_checkpoint_interval": 0.5}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(overrides=base, env={})


def _run(cfg: dict, metrics: Metrics | None = None, model: LoadedModel | None = None):
    return run_daemon(cfg, model=model, metrics=metrics or Metrics(), install_signals=False)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "behaviour" in r.getMessage()]


def test_checkpoints_metrics_and_a_mismatched_checkpoint(bundle_dir, zeek, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "on")
    state = tmp_path / "state"
    n = read_flows(zeek).num_rows
    m = Metrics()
    s = _run(_file_cfg(tmp_path, zeek, bundle_dir, state), m)
    assert s.records_scored == n
    cps = _checkpoints(state)
    assert 1 <= len(cps) <= 3                                       # pipeline.behaviour_checkpoints_kept
    assert not list(state.glob(".behaviour-*"))                      # no half-written checkpoint left
    meta = json.loads((cps[-1] / "checkpoint.json").read_text())
    assert meta["positions"] == {"file": n} and meta["flows_seen"] == n   # the shutdown one covers everything
    one = _state_of(state)
    for kind, keys in one.sizes().items():
        assert m.value("graphsentry_behaviour_keys", {"kind": kind}) == keys > 0
        assert m.value("graphsentry_behaviour_evictions_total", {"kind": kind}) == 0
    assert m.value("graphsentry_behaviour_checkpoints_total", {"result": "ok"}) >= 1
    assert 'graphsentry_behaviour_evictions_total{kind="src"} 0.0' in m.render().decode()

    # A file source reads its files from the start again: the checkpoint (covering all of them) does not
    # match, so the state starts fresh (a warning says why) instead of counting every flow twice.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detector.daemon.pipeline"):
        s = _run(_file_cfg(tmp_path, zeek, bundle_dir, state))
    assert s.records_scored == n
    warn = _warnings(caplog)
    assert any("starts fresh" in w and f"covers file up to {n}, but the source resumed at 0" in w for w in warn), warn
    _assert_same_state(_state_of(state), one)                        # fresh, not doubled

    # a checkpoint of another source never loads either
    caplog.clear()
    other = tmp_path / "other" / "conn.log"
    other.parent.mkdir(parents=True)
    shutil.copy(zeek, other)
    with caplog.at_level(logging.INFO, logger="detector.daemon.pipeline"):
        _run(_file_cfg(tmp_path, other, bundle_dir, state))
    assert any("written for source" in w for w in _warnings(caplog)), _warnings(caplog)


def _matching(state: Path) -> Path:
    """Make the newest checkpoint claim the position a file source resumes from (0), so that it loads."""
    cp = _checkpoints(state)[-1]
    meta = json.loads((cp / "checkpoint.json").read_text())
    meta["positions"] = {"file": 0}
    (cp / "checkpoint.json").write_text(json.dumps(meta))
    return cp


@pytest.mark.parametrize("damage", ["npz", "json", "checkpoint", "flows_seen"])
def test_damaged_checkpoint_gives_a_fresh_state_and_a_warning(bundle_dir, zeek, tmp_path, caplog, monkeypatch,
                                                              damage):
    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "on")
    state = tmp_path / "state"
    n = read_flows(zeek).num_rows
    _run(_file_cfg(tmp_path, zeek, bundle_dir, state, pipeline={"behaviour_checkpoints_kept": 1}))
    one = _state_of(state)
    cp = _matching(state)
    if damage == "npz":
        (cp / "behaviour.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    elif damage == "json":
        (cp / "behaviour.json").write_text('{"version": 2, "params": ')
    elif damage == "checkpoint":
        (cp / "checkpoint.json").write_text("\x00\x01garbage")
    else:  # behaviour.npz from another checkpoint than checkpoint.json says
        meta = json.loads((cp / "checkpoint.json").read_text())
        meta["flows_seen"] += 1
        (cp / "checkpoint.json").write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detector.daemon.pipeline"):
        s = _run(_file_cfg(tmp_path, zeek, bundle_dir, state))
    assert s.records_scored == n                                     # no crash
    warn = _warnings(caplog)
    assert any("starts fresh" in w and "unreadable" in w for w in warn), warn
    _assert_same_state(_state_of(state), one)                        # a fresh state fed once


def test_matching_checkpoint_resumes_and_other_params_do_not(bundle_dir, zeek, tmp_path, caplog, monkeypatch):
    """The control for the two tests above: the same (undamaged) checkpoint, at the position the source
    resumes from, is loaded and continued; a scorer with other behaviour parameters does not take it."""
    from detector.daemon import default_loader
    from ingest.behaviour import BehaviourParams

    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "on")
    state = tmp_path / "state"
    n = read_flows(zeek).num_rows
    _run(_file_cfg(tmp_path, zeek, bundle_dir, state, pipeline={"behaviour_checkpoints_kept": 1}))
    _matching(state)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detector.daemon.pipeline"):
        _run(_file_cfg(tmp_path, zeek, bundle_dir, state))
    assert any("behaviour state resumed from" in r.getMessage() for r in caplog.records)
    assert _state_of(state).flows_seen == 2 * n                      # continued: every flow a second time

    _matching(state)
    m = default_loader(bundle_dir)
    m.scorer.behaviour_params = BehaviourParams(capacity=1000)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detector.daemon.pipeline"):
        _run(_file_cfg(tmp_path, zeek, bundle_dir, state), model=m)
    assert any("other behaviour parameters" in w for w in _warnings(caplog)), _warnings(caplog)
    assert _state_of(state).flows_seen == n and _state_of(state).params.capacity == 1000


def test_hot_reload_keeps_the_behaviour_state(bundle_dir, zeek, tmp_path, monkeypatch):
    """A model swap between windows carries the state over (same parameters): the run ends with the state of
    one model scoring everything."""
    from detector.daemon import Daemon, default_loader

    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "on")
    n = read_flows(zeek).num_rows
    _run(_file_cfg(tmp_path, zeek, bundle_dir, tmp_path / "one"))
    one = _state_of(tmp_path / "one")

    class Swap:  # a watcher that offers a freshly loaded model once, after some windows
        def __init__(self):
            self.calls = 0

        def take(self):
            self.calls += 1
            return default_loader(bundle_dir) if self.calls == 3 else None

    d = Daemon(_file_cfg(tmp_path, zeek, bundle_dir, tmp_path / "two"), metrics=Metrics(), install_signals=False)
    orig = d._score_stage
    monkeypatch.setattr(d, "_score_stage", lambda q, sinks, _w: orig(q, sinks, Swap()))
    s = d.run()
    assert s.model_reloads == 1 and s.records_scored == n
    _assert_same_state(_state_of(tmp_path / "two"), one)


# ------------------------------------------------------------------------------------------ memory bound

FLOOD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, pyarrow as pa
    from detector.bundle import load_bundle
    from ingest.schema import FLOW_SCHEMA, conform
    from ingest.windows import Window

    bundle_dir, total, per_window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    scorer = load_bundle(bundle_dir).stream_scorer()
    assert scorer.behaviour_enabled
    t0, rng, done, k = 1.7e9, np.random.default_rng(0), 0, 0
    start = time.time()
    while done < total:
        n = min(per_window, total - done)
        src = (np.arange(done, done + n, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(12345)) \
            % np.uint64(2**32)                                          # spoofed: every source new (a bijection)
        ips = [f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}" for a in src.tolist()]
        ts = (t0 + 60 * k + np.sort(rng.uniform(0, 60, n))) * 1e6
        t = conform(pa.table({
            "row": pa.array(np.arange(done, done + n), pa.int64()), "uid": pa.nulls(n, pa.string()),
            "ts": pa.array(ts.astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
            "src_ip": ips, "src_port": pa.array(rng.integers(1024, 65535, n), pa.int32()),
            "dst_ip": ["192.0.2.10"] * n, "dst_port": pa.array(np.full(n, 80), pa.int32()), "proto": ["tcp"] * n,
            "conn_state": ["S0"] * n, "src_bytes": pa.array(np.zeros(n, np.int64)),
            "dst_bytes": pa.array(np.zeros(n, np.int64)), "source": ["flood"] * n}), FLOW_SCHEMA)
        ws = scorer.score_windows([Window(t0 + 60 * k, t0 + 60 * (k + 1), t)])[0]
        assert ws.behaviour_scores is not None and len(ws.behaviour_scores) == n
        done, k = done + n, k + 1
    st = scorer.behaviour
    print(json.dumps({"flows": done, "seconds": time.time() - start, "sizes": st.sizes(),
                      "evicted": {kk: s.evicted for kk, s in st.stores.items()},
                      "capacity": st.params.capacity, "state_bytes_full": st.memory_bytes(),
                      "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""")


def _flood(bundle: Path, total: int, per_window: int = 20_000) -> dict:
    env = {**os.environ, "GRAPHSENTRY_BEHAVIOUR": "on"}
    out = subprocess.run([sys.executable, "-c", FLOOD, str(bundle), str(total), str(per_window)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_flood_of_spoofed_sources_through_the_scorer_keeps_rss_bounded(bundle_dir):
    """Distinct spoofed sources, 20k a window, through a real StreamScorer with the behaviour state on (the
    daemon's scorer). Once the stores are full (capacity keys per kind, the production default 200k), more
    sources only evict: the state's memory is ``BehaviourState.memory_bytes()`` whatever the flood's size.
    1M flows (GRAPHSENTRY_FLOOD_FLOWS), 5x capacity: ~35 s on two cores; measured peak RSS 1.15 GB (the
    same flood with the behaviour state off: 1.05 GB)."""
    total = int(os.environ.get("GRAPHSENTRY_FLOOD_FLOWS", "1000000"))
    r = _flood(bundle_dir, total)
    cap = r["capacity"]
    assert r["flows"] == total
    assert r["sizes"]["src"] <= cap and r["sizes"]["pair"] <= cap           # bounded by capacity ...
    assert r["evicted"]["src"] == total - cap                               # ... by evicting
    assert sum(r["state_bytes_full"].values()) < 512 * 2**20                # the state itself at capacity
    assert r["maxrss_bytes"] < 2 * 2**30, r                                 # the whole process


# ------------------------------------------------------------------ the positions a checkpoint covers (unit)


def test_done_frontier_positions_and_clean_instants():
    from detector.daemon.pipeline import DoneFrontier, GatedOffsets

    f = DoneFrontier()
    f.add("t/0", 0, 5, 100, 104)          # exact: 5 records at offsets 100..104
    f.add("t/1", 5, 3, 10, 19)            # not exact (gaps, bad messages): one unit
    assert f.snapshot() == ({"t/0": 100, "t/1": 10}, True)
    f.done(np.array([0, 1]))              # a prefix of t/0
    assert f.snapshot() == ({"t/0": 102, "t/1": 10}, True)
    f.done(np.array([3]))                 # beyond the first not-done record: not clean
    assert f.snapshot() == ({"t/0": 102, "t/1": 10}, False)
    f.done(np.array([2, 4]))
    assert f.snapshot() == ({"t/0": 105, "t/1": 10}, True)
    f.done(np.array([5, 6]))              # part of an inexact chunk: its position stays, not clean
    assert f.snapshot() == ({"t/0": 105, "t/1": 10}, False)
    f.done(np.array([7]))
    assert f.snapshot() == ({"t/0": 105, "t/1": 20}, True)
    f.add("t/0", 8, 2, 105, 106)
    f.add("t/0", 10, 2, 107, 108)
    f.done(np.array([10]))                # a later chunk done before an earlier one: not clean
    assert f.snapshot() == ({"t/0": 105, "t/1": 20}, False)
    assert f.firsts() == {"t/0": 100, "t/1": 10} and f.pending() == 3

    g = GatedOffsets(DoneFrontier())
    g.add("t", 0, 100, 101, 0, 2)
    g.frontier.done(np.array([0, 1]))
    assert g.committable() == {}                       # nothing checkpointed yet: nothing committed
    g.gate = {"t/0": 101}
    assert g.committable() == {("t", 0): 101}          # only what the newest checkpoint covers
    g.gate = None
    assert g.committable() == {("t", 0): 102}          # fallback: what is done
    g.forget({("t", 0)})
    assert g.committable() == {}


def test_unwritable_state_dir_logs_an_error_and_scoring_goes_on(bundle_dir, zeek, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "on")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    m = Metrics()
    with caplog.at_level(logging.INFO, logger="detector.daemon.pipeline"):
        s = _run(_file_cfg(tmp_path, zeek, bundle_dir, blocker / "state"), m)
    assert s.records_scored == read_flows(zeek).num_rows
    assert any(r.levelno == logging.ERROR and "behaviour checkpoint" in r.getMessage() for r in caplog.records)
    assert m.value("graphsentry_behaviour_checkpoints_total", {"result": "failed"}) >= 1

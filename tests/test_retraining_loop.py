"""The retraining loop end to end with real parts (issue 18, "Must show").

* A tiny champion (random encoder + kNN, benign-only, 10-minute windows; as tests/training/test_retrain.py
  trains it) is registered and promoted in a ``training.registry.Registry``.
* A real daemon (``detector.daemon.Daemon``, in a thread, file source following a folder) with
  ``model: {path: REGISTRY/champion, watch: true}`` and the archive on scores the first part of the bundled
  Stratosphere day (``008-zeek-mixed``) into the archive.
* ``graphsentry retrain --archive ARCHIVE --registry REGISTRY`` trains a challenger on that archive; the
  decision is reported; promoted, the champion link moves and the running daemon swaps to it while more
  records are fed.
* ``graphsentry models rollback``: the daemon follows back to the first version.
* Every record fed is archived exactly once across both swaps (by archive positions, and by uid).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_helpers import run_cli
from training.cli import main
from training.registry import Registry

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
DAY = REPO / "samples" / "stratosphere" / "full" / "008-zeek-mixed.conn.log.labeled.gz"
SINCE = "2022-06-12T00:00:00Z"
WINDOW = 600.0   # the champion's training window (10 minutes)

# The same test-only gate as tests/training/test_retrain.py (see TEST_GATE there for the full reasoning): the
# default gate needs a benign FPR <= 1.5 x 1 % on the held-out slice, which a tiny model calibrated on a few
# dozen benign flows cannot resolve (its conformal threshold alone is ~1/56 ~ 1.8 % expected FPR). To
# exercise the promotion path the gate targets a 5 % FPR with 2x headroom. This is what the sample data can
# resolve, not a deployment setting. One difference from test_retrain.py: the speed rule's ratio is 0.5,
# not 0.9. Here the daemon runs in the same process while the job times both models (its threads poll
# the inbox and the model pointer, on a busy 2-core machine), and the two models are the same kind
# (kNN, same size), so their true ratio is ~1 and a 0.9 bar fails on timing noise alone (seen here: 0.89).
# The speed check still runs and is asserted passed; its 0.9 default is tested in tests/training.
# The score-drift check is switched off, as in test_retrain.py: the tiny champion's kNN bank and the
# challenger's differ in size, and so does the lower tail of their benign scores (the refusal it gives is
# tested on its own in tests/training/test_gate_refusals.py). Every other rule keeps its default.
TEST_GATE = ("speed_repeats: 20\ngate:\n  target_fpr: 0.05\n  fpr_factor: 2.0\n  speed_ratio: 0.5\n"
             "  drift_max_psi: null\n")


def model_info(d) -> dict:
    """The labels of the daemon's current ``graphsentry_model_info`` sample ({} before the first)."""
    for fam in d.metrics.registry.collect():
        for s in fam.samples:
            if s.name == "graphsentry_model_info" and s.value == 1:
                return dict(s.labels)
    return {}


def read_archived(root: Path) -> pa.Table:
    from ingest.archive import archive_schema, read_archive

    batches = list(read_archive(root))
    return pa.Table.from_batches(batches) if batches else archive_schema().empty_table()


@pytest.mark.slow
def test_daemon_archive_retrain_promote_swap_rollback(tmp_path, capsys):
    from detector.daemon import Daemon, load_config
    from training.commands import read_table

    # -- the champion, registered and promoted ---------------------------------------------------------
    champ = tmp_path / "champion-model"
    assert main(["train", "--data", str(SAMPLE), "--out", str(champ), "--epochs", "1", "--objective", "none",
                 "--window", "10m", "--detector", "knn", "--benign-only", "--no-progress"]) == 0
    capsys.readouterr()
    reg = Registry(tmp_path / "registry")
    v1 = reg.promote(reg.register(champ, reason="first model"))
    assert reg.alias("champion") == v1

    # -- the stream: the day in time order, cut at window boundaries -------------------------------------
    day, _ = read_table([str(DAY)])
    day = day.take(pa.array(np.argsort(day.column("ts").cast(pa.int64()).to_numpy(), kind="stable")))
    ts = day.column("ts").cast(pa.int64()).to_numpy() / 1e6
    uids = day.column("uid").to_pylist()
    assert len(set(uids)) == len(uids)

    def cut(q: float) -> int:               # the first row of the window holding the q-quantile
        b = np.floor(np.quantile(ts, q) / WINDOW) * WINDOW
        return int(np.searchsorted(ts, b))

    n1 = cut(0.7)                            # phase 1: scored by v1, archived, retrained on
    bounds = sorted({cut(q) for q in np.linspace(0.7, 1.0, 13)[1:-1]} | {n1, day.num_rows})
    chunks = [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]   # later parts: fed one by one
    assert len(chunks) >= 6

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    fed: list[str] = []
    files = [0]

    def feed(a: int, b: int) -> None:
        part = day.slice(a, b - a)
        tmp = inbox / f".p{files[0]:03d}.parquet"          # hidden while written, renamed in whole
        pq.write_table(part, tmp)
        os.replace(tmp, inbox / f"p{files[0]:03d}.parquet")
        files[0] += 1
        fed.extend(part.column("uid").to_pylist())

    archive = tmp_path / "archive"
    cfg = load_config(overrides={
        "source": {"type": "file", "paths": [str(inbox)], "follow": True, "poll_interval": 0.2},
        "window": {"size": WINDOW, "lateness": 0.0, "idle_timeout": 3.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"enabled": False},
        "model": {"path": str(reg.root / "champion"), "watch": True, "watch_interval": 0.3},
        "archive": {"enabled": True, "path": str(archive), "max_bytes": "1GB", "max_age": "36500d"},
    }, env={})
    d = Daemon(cfg, install_signals=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("summary", d.run()), daemon=True)
    th.start()

    def wait_archived(n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while d.summary.archived < n:
            assert th.is_alive() and not d._errors, f"the daemon stopped: {d._errors}"
            assert time.monotonic() < deadline, f"archived {d.summary.archived} of {n}"
            time.sleep(0.1)

    def feed_until_version(version: str, pending: list) -> None:
        """Feed the next chunks one at a time until the daemon reports ``version`` (its swap happens between
        windows, so it needs records to score); every chunk fed is waited for in the archive."""
        deadline = time.monotonic() + 60
        while Path(model_info(d).get("path", "")).name != version:
            assert pending, f"the daemon never swapped to {version}: {model_info(d)}"
            assert time.monotonic() < deadline
            feed(*pending.pop(0))
            wait_archived(len(fed))

    try:
        feed(0, n1)
        wait_archived(n1, timeout=90)
        info = model_info(d)
        assert Path(info["path"]).name == v1 and info.get("alias") == "champion"
        v1_reported = info["version"]

        # -- retrain on what the daemon archived -------------------------------------------------------
        a = read_archived(archive)
        assert a.num_rows == n1 and set(a.column("model_version").to_pylist()) == {v1_reported}
        # the analysts' verdicts on the daemon's alerts (from the capture's labels)
        verdicts = tmp_path / "verdicts.csv"
        lines = ["alert_id,verdict"] + [f"{i},{'malicious' if lab == 1 else 'false_positive'}"
                                        for i, lab in zip(a.column("alert_id").to_pylist(), a.column("label").to_pylist())
                                        if i is not None and lab in (0, 1)]
        verdicts.write_text("\n".join(lines) + "\n")
        gate = tmp_path / "retrain.yaml"
        gate.write_text(TEST_GATE)
        rc, so, err = run_cli(["retrain", "--archive", str(archive), "--registry", str(reg.root), "--since", SINCE,
                               "--verdicts", str(verdicts), "--config", str(gate), "--no-progress"], capsys)
        assert rc == 0, err
        s = json.loads(so.strip().splitlines()[-1])
        assert s["champion"] == v1 and s["decision"] in ("promote", "refuse") and s["version"] != v1
        rep = json.loads((Path(s["report_dir"]) / "report.json").read_text())
        assert rep["data"]["records_read"] == n1
        checks = {c["name"] + ("/" + c["data"] if c["data"] else ""): c["status"] for c in rep["gate"]["checks"]}
        assert checks.get("speed") == "passed", checks
        v2 = s["version"]
        assert s["decision"] == "promote", f"the gate refused the challenger: {s['reasons']}"
        assert s["promoted"] and reg.aliases()["champion"] == v2 and reg.aliases()["previous"] == v1

        # -- the daemon swaps to the new champion while records keep coming --------------------------------
        pending = list(chunks)
        feed_until_version(v2, pending)
        assert model_info(d).get("alias") == "champion" and model_info(d)["version"] != v1_reported
        assert len(pending) >= 2, "no chunks left for the rollback"
        feed(*pending.pop(0))                                  # one more under v2
        wait_archived(len(fed))

        # -- rollback: the daemon follows back ------------------------------------------------------------
        rc, so, err = run_cli(["models", "rollback", "--registry", str(reg.root), "--reason", "test"], capsys)
        assert rc == 0, err
        assert reg.alias("champion") == v1
        feed_until_version(v1, pending)
        assert model_info(d)["version"] == v1_reported
        while pending:
            feed(*pending.pop(0))
        wait_archived(len(fed))
    finally:
        d.stop("test")
        th.join(60)
    assert not th.is_alive()
    summary = out["summary"]
    assert summary.model_reloads == 2 and summary.late == 0
    assert summary.records_scored == len(fed) == summary.archived

    # -- every record fed archived exactly once, across both swaps -------------------------------------------
    a = read_archived(archive)
    pos = list(zip(*(a.column(c).to_pylist() for c in ("kafka_topic", "kafka_partition", "kafka_offset",
                                                        "kafka_index"))))
    assert len(pos) == len(set(pos)) == len(fed), "a record archived twice or lost"
    assert sorted(pos) == [(f"file:{inbox.resolve()}", 0, r, 0) for r in range(len(fed))]
    assert sorted(a.column("uid").to_pylist()) == sorted(fed)
    by_pos = dict(zip(a.column("kafka_offset").to_pylist(), a.column("uid").to_pylist()))
    assert [by_pos[r] for r in range(len(fed))] == fed          # each at its own position
    versions = a.column("model_version").to_pylist()
    v2_reported = {v for v in versions if v != v1_reported}
    assert len(v2_reported) == 1, set(versions)
    # in feed order: v1, then v2, then v1 again (each window scored by exactly one model)
    seq = [versions[i] for i in np.argsort(a.column("kafka_offset").to_numpy())]
    runs = [seq[0]] + [v for p, v in zip(seq, seq[1:]) if v != p]
    assert runs == [v1_reported, v2_reported.pop(), v1_reported]
    assert a.column("score").null_count == 0

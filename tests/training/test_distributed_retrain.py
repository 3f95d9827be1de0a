"""`graphsentry retrain --nproc 2`: the challenger's pretraining runs on 2 ranks under torchrun (gloo, 127.0.0.1),
rank 0 runs the rest of the job (archive, gate, registry); the result is registered like a 1-process run's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import main
from training.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
DAY = ROOT / "samples" / "stratosphere" / "full" / "008-zeek-mixed.conn.log.labeled.gz"
SINCE = "2022-06-12T00:00:00Z"
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Registry, Path]:
    """A champion with a pretraining epoch (so that the ranks have work to share), promoted; the day archived."""
    from ingest.archive import ArchiveWriter
    from training.commands import read_table

    d = tmp_path_factory.mktemp("ddp-retrain")
    champion = d / "champion"
    assert main(["train", "--data", str(SAMPLE), "--out", str(champion), "--epochs", "1", "--objective",
                 "contrastive", "--hidden", "16", "--window", "10m", "--detector", "knn", "--benign-only",
                 "--no-progress"]) == 0
    reg = Registry(d / "registry")
    reg.promote(reg.register(champion))
    t, _ = read_table([str(DAY)])
    with ArchiveWriter(d / "archive") as w:
        w.write(t, model_version="v0001", positions={"topic": f"file:{DAY}", "partition": 0, "offset": t.column("row")})
    return reg, d / "archive"


def test_retrain_nproc_2_pretrains_on_two_ranks_and_registers(setup):
    reg, archive = setup
    cmd = [sys.executable, "-m", "training.cli", "retrain", "--archive", str(archive), "--registry", str(reg.root),
           "--since", SINCE, "--nproc", "2", "--no-promote", "--no-progress"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"retrain --nproc 2 hung for more than {TIMEOUT_S} s")
    assert p.returncode == 0, err[-3000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert s["version"] == "v0002" and s["champion_after"] == "v0001" and s["promoted"] is False
    rep = json.loads((Path(s["report_dir"]) / "report.json").read_text())
    assert rep["status"] == "done"
    assert rep["challenger"]["distributed"]["world_size"] == 2 and rep["challenger"]["distributed"]["shards"] == 2
    assert rep["challenger"]["distributed"]["backend"] == "gloo"
    hist = json.loads((reg.resolve("v0002") / "config.json").read_text())["metrics"]["history"]
    assert [h["distributed"]["world_size"] for h in hist if "distributed" in h] == [2]   # the one epoch, 2 ranks
    assert reg.aliases() == {"champion": "v0001", "challenger": "v0002"}
    assert not any((reg.root / ".retrain-tmp").iterdir())


def test_retrain_nproc_user_error_is_one_line(setup, tmp_path):
    reg, archive = setup
    p = subprocess.run([sys.executable, "-m", "training.cli", "retrain", "--archive", str(tmp_path / "none"),
                        "--registry", str(reg.root), "--nproc", "2", "--no-progress"], cwd=ROOT,
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "no such directory" in p.stderr and "graphsentry retrain" in p.stderr

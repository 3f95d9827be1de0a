"""Reproducible training (issue 17, section 6): the same `graphsentry train` command on the same data gives
the same model -- the same objective, detector input, detector and threshold, and the same scores -- in the
same process, in a fresh one, and under another PYTHONHASHSEED (set/dict iteration order of strings)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from training.pretrain import TIE_REL, pick_best

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
TEST = ROOT / "samples" / "stratosphere" / "010-zeek-mixed.conn.log.labeled"
# small but complete: benign-only training, the sample's 1175 labelled attacks pick objective x input x detector
ARGS = ["--benign-only", "--epochs", "1", "--window", "5m", "--node-mode", "ipport", "--hidden", "16",
        "--objective", "auto", "--detector", "auto", "--no-progress"]


def _train(out: Path) -> None:
    from training.cli import main

    assert main(["train", str(TRAIN), "--out", str(out), *ARGS]) == 0


def _score(model: Path, out: Path) -> np.ndarray:
    from training.cli import main

    assert main(["score", str(TEST), "--model", str(model), "--out", str(out)]) == 0
    t = pq.read_table(out)
    return t.column("score").to_numpy(zero_copy_only=False).astype(np.float64)


def _summary(model: Path) -> dict:
    cfg = json.loads((model / "config.json").read_text())
    m = cfg["metrics"]
    return {"objective": m["objective"]["chosen"], "objective_scores": m["objective"]["candidates"],
            "detector": m["detector_selection"]["chosen"], "flow_parts": m["detector_selection"]["flow_parts"],
            "candidates": {k: v["val_score"] for k, v in m["detector_selection"]["candidates"].items()},
            "threshold": cfg["threshold"]}


def _assert_same(a: Path, b: Path, sa: np.ndarray, sb: np.ndarray) -> None:
    x, y = _summary(a), _summary(b)
    for k in ("objective", "detector", "flow_parts", "objective_scores", "candidates"):
        assert x[k] == y[k], k
    assert math.isclose(x["threshold"], y["threshold"], rel_tol=1e-9, abs_tol=1e-12), (x["threshold"], y["threshold"])
    wa = torch.load(a / "weights.pt", weights_only=True)
    wb = torch.load(b / "weights.pt", weights_only=True)
    flat_a = {k: v for k, v in (wa.items() if isinstance(wa, dict) else [])}
    flat_b = {k: v for k, v in (wb.items() if isinstance(wb, dict) else [])}
    assert flat_a.keys() == flat_b.keys()
    for k, v in flat_a.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, flat_b[k]), k
    assert sa.shape == sb.shape and len(sa) > 0
    np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    d = tmp_path_factory.mktemp("repro")
    _train(d / "a")
    return d, _score(d / "a", d / "a.parquet")


@pytest.mark.slow
def test_two_in_process_runs_give_the_same_model(first):
    d, sa = first
    _train(d / "b")
    sb = _score(d / "b", d / "b.parquet")
    _assert_same(d / "a", d / "b", sa, sb)
    rep = json.loads((d / "a" / "config.json").read_text())["metrics"]["reproducibility"]
    assert rep["torch_threads"] >= 1 and rep["torch"] == torch.__version__


@pytest.mark.slow
def test_a_fresh_process_with_another_hash_seed_gives_the_same_model(first):
    d, sa = first
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    # the in-process runs use the default thread count; so does the subprocess
    env.pop("GRAPHSENTRY_TORCH_THREADS", None)
    if os.environ.get("GRAPHSENTRY_TORCH_THREADS"):
        env["GRAPHSENTRY_TORCH_THREADS"] = os.environ["GRAPHSENTRY_TORCH_THREADS"]
    code = ("import sys; from training.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "train", str(TRAIN), "--out", str(d / "c"), *ARGS],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    sc = _score(d / "c", d / "c.parquet")
    _assert_same(d / "a", d / "c", sa, sc)


# -- the validation rule's comparisons (fast) -------------------------------------------------------------

def test_pick_best_ties_within_tolerance_go_to_the_preference_order():
    scores = {"a": 0.90, "b": 0.9049, "c": 0.80}
    drift = {"a": 0.01, "b": 0.01, "c": 0.0}
    assert pick_best(scores, drift, 0.005) == "a"         # b within tol of the best, same drift: order
    assert pick_best(dict(reversed(scores.items())), drift, 0.005) == "b"  # the order is the caller's


def test_pick_best_is_not_moved_by_float_noise():
    base = {"x": 0.99990701, "y": 0.99990701, "z": 0.97}
    drift = {"x": 0.01, "y": 0.01, "z": 0.01}
    for eps in (1e-12, -1e-12, 3e-11):
        noisy = {**base, "y": base["y"] + eps}
        assert pick_best(noisy, {**drift, "y": 0.01 + eps}, 0.0) == "x"


def test_pick_best_relative_floor_and_missing_scores():
    # tol 0 still ties candidates within TIE_REL of the best; None/NaN never win
    scores = {"p": 1.0, "q": 1.0 + 0.5 * TIE_REL, "r": float("nan"), "s": None}
    assert pick_best(scores, {"p": 0.0, "q": 0.0}, 0.0) == "p"
    assert pick_best({"r": float("nan"), "p": 0.5}, {}, 0.0) == "p"
    assert pick_best({"r": float("nan"), "s": None}, {}, 0.0) == "r"  # nothing scored: first in order
    # a clearly better score is not a tie
    assert pick_best({"p": 0.5, "q": 0.9}, {"p": 0.0, "q": 0.5}, 0.005) == "q"
    # the smallest drift breaks a tie before the order does
    assert pick_best({"p": 0.9, "q": 0.9}, {"p": 0.05, "q": 0.01}, 0.005) == "q"

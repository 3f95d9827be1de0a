"""Technique channel (detector.technique_detector): benign bounds, threshold, state, bundle and fusion."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from detector.technique_detector import LIFT_MIN, TechniqueDetector, fuse

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "stratosphere" / "full"
TRAIN = SAMPLES / "008-zeek-mixed.conn.log.labeled.gz"
TEST = SAMPLES / "010-zeek-mixed.conn.log.labeled.gz"


def _benign(n: int, seed: int) -> np.ndarray:
    """Synthetic benign activations: column 0 often active (a benign habit), 1-2 weak, 3 never active."""
    rng = np.random.default_rng(seed)
    A = np.zeros((n, 4))
    A[:, 0] = np.clip(rng.normal(0.5, 0.1, n), 0, 1)
    A[:, 1] = rng.uniform(0, 0.3, n)
    A[:, 2] = rng.beta(1, 8, n)
    return A


def test_bounds_threshold_and_benign_fpr():
    det = TechniqueDetector(target_fpr=0.01, share=0.25).fit(_benign(20000, 0), ["k:A", "k:B", "k:C", "behaviour:D"],
                                                               calibration=_benign(8000, 1))
    # a technique never active in benign traffic gets the floor; a benign habit its own (higher) bound
    assert det.bound_[3] == pytest.approx(0.35) and det.bound_[1] == pytest.approx(0.35)
    assert det.bound_[0] > 0.7
    assert det.threshold_ >= 0.0
    held_out = det.decision_function(_benign(20000, 2))
    fpr = float((held_out > det.threshold_).mean())
    assert fpr <= 2 * 0.01 * 0.25 + 0.001, fpr  # its share of the target, with sampling slack
    # a never-benign technique at high activation fires and is named; benign-level activations do not
    A = np.zeros((3, 4))
    A[0, 3] = 0.9
    A[1, 0] = 0.6
    A[2, 1] = 0.95
    s = det.decision_function(A)
    assert s[0] > det.threshold_ and s[2] > det.threshold_ and s[1] <= det.threshold_
    assert det.explain(A).tolist() == ["D", None, "B"]
    assert det.predict(A).tolist() == [1, 0, 1]
    assert np.all((s >= -1) & (s <= 1))


def test_partial_ranges_combine_by_maximum():
    det = TechniqueDetector().fit(_benign(5000, 0))
    A = _benign(100, 3)
    A[::7, 3] = 0.8
    s0, j0 = det.partial(A[:, :2], 0)
    s1, j1 = det.partial(A[:, 2:], 2)
    s, j = det.partial(A, 0)
    assert np.array_equal(np.maximum(s0, s1), s)
    better = s1 > s0
    assert np.array_equal(np.where(better, j1, j0), j)


@pytest.mark.parametrize("block", [1, 7, 1024])
def test_partial_in_row_blocks_equals_the_whole_matrix_formula(block, monkeypatch):
    """partial() works a block of rows at a time; its scores and columns are the one-shot formula's bit for bit
    (float32 input, NaN rows, ties between columns, a ragged last block)."""
    det = TechniqueDetector().fit(_benign(5000, 0))
    A = _benign(1000, 4).astype(np.float32)
    A[::11, 1] = A[::11, 2] = 0.9  # ties: the first column wins
    A[5, 3] = np.nan
    monkeypatch.setattr(TechniqueDetector, "BLOCK", block)
    for start, cols in ((0, slice(None)), (2, slice(2, None))):
        b = det.bound_[start:start + A[:, cols].shape[1]]
        e = (A[:, cols] - b) / np.maximum(1.0 - b, 1e-3) - det.column_threshold_[start:start + len(b)]
        j = np.argmax(e, axis=1)
        s, col = det.partial(A[:, cols], start)
        assert np.array_equal(s, np.maximum(e[np.arange(len(A)), j], -1.0), equal_nan=True)
        assert np.array_equal(col, j + start)
    assert np.isnan(det.partial(A, 0)[0][5])


@pytest.mark.parametrize("kwargs, match", [({"target_fpr": 0}, "target_fpr"), ({"share": 1.5}, "share"),
                                           ({"quantile": 0}, "quantile"), ({"min_activation": 1.0}, "min_activation")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TechniqueDetector(**kwargs)


def test_unfitted_and_wrong_width():
    with pytest.raises(ValueError, match="not fitted"):
        TechniqueDetector().decision_function(np.zeros((2, 3)))
    det = TechniqueDetector().fit(_benign(500, 0))
    with pytest.raises(ValueError, match="columns"):
        det.decision_function(np.zeros((2, 3)))


def test_repr():
    assert repr(TechniqueDetector()) == "TechniqueDetector(target_fpr=0.01, share=0.25, quantile=0.999, min_activation=0.35)"


def test_state_round_trip_is_json_and_arrays():
    det = TechniqueDetector(share=0.5).fit(_benign(3000, 0), ["knowledge:T1", "knowledge:T2", "behaviour:T3",
                                                              "behaviour:T4"]).fit_lift(np.linspace(0, 1, 101), 0.9)
    obj = json.loads(json.dumps(det.to_json()))  # plain JSON, no pickle
    back = TechniqueDetector.from_json(obj)
    A = _benign(500, 4)
    A[::5, 2] = 0.99
    assert np.array_equal(back.decision_function(A), det.decision_function(A))
    assert back.threshold_ == det.threshold_ and back.lift_gap_ == pytest.approx(0.4)
    assert back.explain(A).tolist() == det.explain(A).tolist()
    params, arrays = det.state()
    again = TechniqueDetector.from_state(params, arrays)
    assert again.columns_ == det.columns_
    with pytest.raises(ValueError):
        TechniqueDetector.from_state({**params, "columns": ["a"]}, arrays)
    with pytest.raises(ValueError):
        TechniqueDetector.from_json({"format": 99})


def test_fuse_never_lowers_and_lifts_over_threshold():
    rng = np.random.default_rng(0)
    e = rng.normal(0.5, 0.1, 1000)
    tech = rng.uniform(-1, 1, 1000)
    thr, tthr, gap = 0.6, 0.3, 0.1
    f, raised = fuse(e, tech, tthr, thr, gap)
    assert np.all(f >= e)
    fired = tech > tthr
    assert np.all(f[fired] > thr) and np.array_equal(f[~fired], e[~fired])
    assert np.array_equal(raised, fired & (e <= thr))
    # the lift grows with the exceedance
    lifted = fired & (e <= thr)
    assert np.allclose(f[lifted], thr + gap * (LIFT_MIN + tech[lifted] - tthr))
    # no gap left by float rounding: still strictly above
    f2, _ = fuse(np.array([1e9]), np.array([0.5]), 0.4999999999999, 1e9, 1e-12)
    assert f2[0] > 1e9


# -- with a trained bundle ----------------------------------------------------------------------------

def _read(path: Path) -> pa.Table:
    from ingest.readers import open_inputs

    return pa.Table.from_batches(list(open_inputs([str(path)])))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    if not (TRAIN.is_file() and TEST.is_file()):
        pytest.skip("stratosphere samples not present")
    from detector.runtime import torch_threads
    from training.pretrain import TrainConfig, train_bundle

    d = tmp_path_factory.mktemp("model")
    with torch_threads(1):
        b = train_bundle([_read(TRAIN)], TrainConfig(epochs=1, hidden=16, seed=0, benign_only=True,
                                                     objective="contrastive", detector="iforest"),
                         out_dir=d, progress=False)
    return b, d, _read(TEST)


def _windows(bundle, table):
    from training.pretrain import make_windows

    return make_windows(table, float(bundle.window.get("size", 60.0)))


def test_bundle_saves_and_loads_the_channel(real, one_torch_thread):
    from detector.bundle import ModelBundle
    from detector.scoring import score_table

    b, d, test = real
    assert b.technique is not None and b.metrics["technique"]["columns"] == len(b.technique.columns_)
    listed = json.loads((d / "manifest.json").read_text())["files"]
    assert "technique.json" in listed
    back = ModelBundle.load(d)
    assert back.technique is not None
    assert back.technique.columns_ == b.technique.columns_
    assert np.array_equal(back.technique.bound_, b.technique.bound_)
    small = test.slice(0, 1500)
    x, y = score_table(b, small), score_table(back, small)
    assert np.array_equal(x.column("score").to_numpy(zero_copy_only=False),
                          y.column("score").to_numpy(zero_copy_only=False))
    assert x.column("top_technique").to_pylist() == y.column("top_technique").to_pylist()


def test_old_bundle_without_technique_json_loads_channel_off(real, tmp_path, one_torch_thread):
    import shutil

    from detector.bundle import ModelBundle
    from detector.model_files import write_manifest

    b, d, test = real
    old = tmp_path / "old"
    shutil.copytree(d, old)
    (old / "technique.json").unlink()
    write_manifest(old)  # an older graphsentry's directory: no technique.json listed
    back = ModelBundle.load(old)
    assert back.technique is None
    ws = back.stream_scorer().score_windows(_windows(back, test.slice(0, 800)))
    assert all(w.technique_scores is None and w.technique_raised is None for w in ws)
    # saving a bundle without the channel over one with it leaves no stale technique.json
    back.save(old)
    assert not (old / "technique.json").exists()
    assert ModelBundle.load(old).technique is None


def test_fused_scores_never_below_embedding_and_name_the_technique(real, one_torch_thread):
    import copy

    b, _d, test = real
    windows = _windows(b, test)
    plain = copy.copy(b)
    plain.technique = None
    ref = plain.stream_scorer().score_windows(windows)
    got = b.stream_scorer().score_windows(windows)
    thr = b.threshold
    det = b.technique
    n_raised = 0
    for r, g in zip(ref, got):
        assert np.array_equal(r.rows, g.rows)
        assert np.all(g.scores >= r.scores)
        fired = g.technique_scores > det.threshold_
        assert np.array_equal(g.scores[~fired], r.scores[~fired])
        assert np.all(g.alerts[fired])
        # an alert raised only by the channel: its embedding score was not an alert, and it names a technique
        assert np.array_equal(g.technique_raised, fired & ~r.alerts)
        tops = np.asarray(g.top_technique, dtype=object)
        assert all(t is not None for t in tops[g.technique_raised])
        ids = set(det.technique_ids_.tolist())
        assert set(tops[fired].tolist()) <= ids
        n_raised += int(g.technique_raised.sum())
    assert n_raised > 0  # the sample holds flows whose embedding score is normal but whose technique fires


def test_per_window_and_batched_paths_agree(real, one_torch_thread):
    from detector.scoring import score_table

    b, _d, test = real
    windows = _windows(b, test)
    sc = b.stream_scorer()
    one = [sc.score_window(w) for w in windows]
    many = b.stream_scorer().score_windows(windows)
    for x, y in zip(one, many):
        assert np.array_equal(x.rows, y.rows)
        assert np.array_equal(x.technique_scores, y.technique_scores)  # same evidence, bit for bit
        assert x.top_technique == y.top_technique
        fired = x.technique_scores > b.technique.threshold_
        assert np.array_equal(x.alerts[fired], y.alerts[fired])
    # the offline path (FlowScores) too
    out = score_table(b, test)
    pos = {r: i for i, r in enumerate(out.column("row").to_pylist())}
    rows = np.concatenate([w.rows for w in one])
    idx = [pos[r] for r in rows.tolist()]
    fired = np.concatenate([w.technique_scores for w in one]) > b.technique.threshold_
    got_top = np.asarray(out.column("top_technique").to_pylist(), dtype=object)[idx]
    want_top = np.concatenate([np.asarray(w.top_technique, dtype=object) for w in one])
    assert np.array_equal(got_top[fired], want_top[fired])
    assert out.column("alert").to_numpy(zero_copy_only=False)[idx][fired].all()


def test_channel_off_by_flag(tmp_path, one_torch_thread):
    from training.pretrain import TrainConfig, train_bundle
    from training.synthetic import synthetic_flows

    table = synthetic_flows(n_benign=500, n_attack=0, duration=600, seed=1)
    b = train_bundle([table], TrainConfig(epochs=0, hidden=8, seed=0, objective="contrastive", detector="iforest",
                                          flow_parts="src,dst,edge", technique=False), out_dir=tmp_path, progress=False)
    assert b.technique is None and "technique" not in b.metrics
    assert not (tmp_path / "technique.json").exists()


def test_a_noisy_technique_in_the_held_back_period_mutes_only_itself():
    train = _benign(5000, 0)
    held = _benign(3000, 1)
    held[::50, 3] = 0.9  # benign traffic of the held-back period shows technique 3 (2% of flows)
    det = TechniqueDetector(target_fpr=0.01, share=0.25).fit(train, calibration=held)
    assert det.column_threshold_[3] > 0.5 and det.column_threshold_[1] == 0.0
    assert det.calibration_fpr_ <= 0.0025
    A = np.zeros((2, 4))
    A[0, 3] = 0.9   # as the held-back benign flows: no alert
    A[1, 1] = 0.8   # a technique benign traffic never showed: still fires
    assert det.explain(A).tolist() == [None, "c1"]

import numpy as np
import pyarrow as pa
import pytest
import torch

from training.pretrain import TrainConfig, make_windows, split_windows, train_bundle
from training.synthetic import synthetic_flows


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def table():
    return synthetic_flows(n_benign=300, n_attack=40, duration=480, seed=2)


def _cfg(**kw):
    return TrainConfig(**{**dict(epochs=1, hidden=16, knowledge=False, seed=0, objective="contrastive"), **kw})


def test_seeded_runs_are_identical(table):
    a = train_bundle([table], _cfg(), progress=False)
    b = train_bundle([table], _cfg(), progress=False)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k
    assert a.threshold == b.threshold


def test_resume_continues_from_checkpoint(table, tmp_path):
    one = train_bundle([table], _cfg(epochs=1), out_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").is_file()
    two = train_bundle([table], _cfg(epochs=2), out_dir=tmp_path, progress=False, resume=True)
    assert two.metrics["epochs"] == 2 and len(two.metrics["epoch_seconds"]) == 1  # only epoch 2 ran
    assert two.metrics["history"][0] == one.metrics["history"][0]
    straight = train_bundle([table], _cfg(epochs=2), progress=False)
    for (k, va), (_, vb) in zip(two.model.state_dict().items(), straight.model.state_dict().items()):
        assert torch.allclose(va, vb, atol=1e-6), k  # resuming == training straight through


def test_benign_only_removes_malicious_and_split_is_time_ordered(table):
    b = train_bundle([table], _cfg(benign_only=True, epochs=0), progress=False)
    assert b.metrics["removed_malicious"] == 40
    w = make_windows(table, 60.0)
    tr, va = split_windows(w, 0.2)
    assert max(x.end for x in tr) <= min(x.start for x in va)
    assert sum(x.table.num_rows for x in tr + va) == table.num_rows


@pytest.mark.parametrize("kw", [dict(objective="dgi"), dict(weighting="fixed"), dict(temporal=False, use_time=False)])
def test_variants_train(table, kw):
    b = train_bundle([table], _cfg(**kw), progress=False)
    assert np.isfinite(b.threshold)
    assert b.metrics["history"][0]


@pytest.mark.parametrize("bank,size", [("coreset", 64), ("random", 32)])
def test_knn_bank_settings_reach_the_detector(table, bank, size):
    b = train_bundle([table], _cfg(detector="knn", knn_bank=bank, knn_bank_size=size), progress=False)
    det = b.detector
    assert type(det).__name__ == "KNNDetector" and det.bank == bank and det.max_bank == size
    assert len(det.bank_) == size  # fewer fitting flows than that would keep them all
    assert b.metrics["train_flows"] > size


def test_config_validation():
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="mae")
    with pytest.raises(ValueError, match="window"):
        TrainConfig(window=0)
    with pytest.raises(ValueError, match="flow_parts"):
        TrainConfig(flow_parts="src,src")
    with pytest.raises(ValueError, match="validation"):
        TrainConfig(validation="test")
    with pytest.raises(ValueError, match="knn_bank"):
        TrainConfig(knn_bank="kmeans")
    with pytest.raises(ValueError, match="knn_bank_size >= 2"):
        TrainConfig(knn_bank_size=1)
    with pytest.raises(ValueError, match="detector must be auto, knn, iforest or fusion"):
        TrainConfig(detector="lof")
    with pytest.raises(ValueError, match="fusion needs flow_parts ending in raw"):
        TrainConfig(detector="fusion", flow_parts="dst,edge")
    with pytest.raises(ValueError, match="at least 2 windows"):
        split_windows(make_windows(synthetic_flows(n_benign=20, n_attack=0, duration=10), 60.0), 0.2)


def test_validation_rule_uses_training_attacks_and_calibrates_on_held_back_benign(table):
    """benign_only training; the training inputs' attacks (scored with their windows' context) and the held-back
    benign flows choose the detector input; the threshold is the quantile of the held-back benign flows only."""
    from training.pretrain import DETECTOR_CANDIDATES, FLOW_CANDIDATES

    b = train_bundle([table], _cfg(benign_only=True, flow_parts="auto", detector="auto"), progress=False)
    m = b.metrics
    sel = m["detector_selection"]
    lab = table.column("label").to_numpy()
    tr, va = split_windows(make_windows(table.filter(pa.array(lab == 0)), 60.0), 0.2)
    assert m["val_attacks"] == int((lab == 1).sum()) == 40
    assert m["val_flows"] == sum(w.table.num_rows for w in va)
    assert sel["rule"].startswith("max per-class partial AUROC")
    # kNN and forest on every input; the fusion only where the raw block comes last (its forest's input)
    expected = {f"{p}|{d}" for p in FLOW_CANDIDATES for d in DETECTOR_CANDIDATES
                if d != "fusion" or p.endswith(",raw")}
    assert set(sel["candidates"]) == expected and len(expected) == 2 * len(FLOW_CANDIDATES) + 2
    best = max(c["val_score"] for c in sel["candidates"].values())
    chosen = sel["candidates"][f"{sel['flow_parts']}|{sel['chosen']}"]
    assert chosen["val_score"] >= best - TrainConfig().val_tol          # best, or tied with it ...
    tied = [c for c in sel["candidates"].values() if c["val_score"] >= best - TrainConfig().val_tol]
    assert chosen["drift"] == min(c["drift"] for c in tied)           # ... and the most stable threshold
    assert b.model.config.flow_parts == sel["flow_parts"]
    assert b.calibration.n_calibration == m["val_flows"]


def test_validation_attacks_are_capped(table):
    b = train_bundle([table], _cfg(benign_only=True, max_val_attacks=15, flow_parts="auto", detector="auto"),
                     progress=False)
    assert b.metrics["val_attacks"] == 15
    assert b.metrics["detector_selection"]["rule"].startswith("max per-class partial AUROC")


def test_benign_rule_when_asked_or_without_held_back_attacks(table):
    auto = dict(flow_parts="auto", detector="auto")
    b = train_bundle([table], _cfg(benign_only=True, validation="benign", **auto), progress=False)
    assert b.metrics["detector_selection"]["rule"].startswith("min |FPR")
    assert b.model.config.flow_parts == "src,dst,edge"
    ben = table.filter(pa.array(table.column("label").to_numpy() == 0))
    c = train_bundle([ben], _cfg(benign_only=True, **auto), progress=False)  # nothing labelled malicious anywhere
    assert c.metrics["val_attacks"] == 0 and c.metrics["detector_selection"]["rule"].startswith("min |FPR")


def test_fusion_without_labelled_attacks_reads_the_raw_block(table):
    """The benign rule compares detectors on one input: with detector=fusion it is src,dst,edge,raw."""
    b = train_bundle([table], _cfg(benign_only=True, validation="benign", detector="fusion", flow_parts="auto"),
                     progress=False)
    assert b.model.config.flow_parts == "src,dst,edge,raw" and b.detector_name == "fusion"
    assert b.detector.raw_dim == b.model.config.edge_in


def test_objective_auto_picks_on_the_validation_score(table):
    b = train_bundle([table], _cfg(benign_only=True, objective="auto"), progress=False)
    obj = b.metrics["objective"]
    assert set(obj["candidates"]) == {"contrastive/gradnorm", "contrastive/fixed", "dgi/gradnorm"}
    tol = TrainConfig().val_tol
    top = max(obj["candidates"].values())
    tied = [k for k, v in obj["candidates"].items() if v >= top - tol]
    assert obj["chosen"] in tied and obj["drift"][obj["chosen"]] == min(obj["drift"][k] for k in tied)


def test_val_score_is_per_class_and_does_not_depend_on_the_attack_share():
    from training.pretrain import class_groups, val_score

    rng = np.random.default_rng(0)
    ben = rng.normal(0, 1, 2000)
    easy = rng.normal(10, 1, 50)            # a huge, trivially separated class (a port scan) ...
    hard = rng.normal(0, 1, 50)             # ... and one the detector cannot see
    y = np.r_[np.zeros(2000), np.ones(100)].astype(int)
    cls = np.array([None] * 2000 + ["scan"] * 50 + ["c2"] * 50, dtype=object)
    s = np.r_[ben, easy, hard]
    score, per = val_score(y, s, class_groups(y, cls), max_fpr=0.01)
    assert per["scan"] == pytest.approx(1.0) and per["c2"] < 0.6 and score == pytest.approx(np.mean(list(per.values())))
    # ten times more of the easy class: the macro score does not move, AUPRC would
    y2 = np.r_[np.zeros(2000), np.ones(550)].astype(int)
    cls2 = np.array([None] * 2000 + ["scan"] * 500 + ["c2"] * 50, dtype=object)
    s2 = np.r_[ben, np.tile(easy, 10), hard]
    assert val_score(y2, s2, class_groups(y2, cls2), 0.01)[0] == pytest.approx(score)
    # classes under 5 flows are pooled; unnamed attacks are one class
    g = class_groups(np.array([1, 1, 1, 0]), np.array(["a", "b", None, None], dtype=object))
    assert list(g) == ["(rare classes)", "(rare classes)", "(rare classes)", ""]


def test_stratified_keep_spreads_the_budget_over_classes():
    from training.pretrain import stratified_keep

    groups = np.array(["a"] * 1000 + ["b"] * 10 + ["c"] * 3)
    k = stratified_keep(groups, 100, np.random.default_rng(0))
    assert k.sum() == 100 and k[1000:].all() and k[:1000].sum() == 87
    assert (k == stratified_keep(groups, 100, np.random.default_rng(0))).all()       # seeded
    k2 = stratified_keep(np.array(["a"] * 50 + ["b"] * 50), 11, np.random.default_rng(1))
    assert k2.sum() == 11 and sorted([k2[:50].sum(), k2[50:].sum()]) == [5, 6]
    assert stratified_keep(groups, 5000, np.random.default_rng(0)).all()


def test_pick_best_breaks_near_ties_by_threshold_drift():
    from training.pretrain import pick_best

    scores = {"a": 0.990, "b": 0.988, "c": 0.950}
    drift = {"a": 0.05, "b": 0.001, "c": 0.0}
    assert pick_best(scores, drift, tol=0.005) == "b"      # within the tolerance: the stabler threshold
    assert pick_best(scores, drift, tol=0.0) == "a"
    assert pick_best({"a": 0.9, "b": 0.9}, {"a": 0.1, "b": 0.1}, 0.0) == "a"   # full tie: candidate order


def test_warm_start_loads_matching_tensors_only(table):
    """A retraining job starts from the champion's weights: every tensor of the same name and shape."""
    from detector.models import STGNN, ModelConfig
    from training.pretrain import warm_start

    champ = train_bundle([table], _cfg(epochs=0), progress=False)
    state = champ.model.state_dict()
    b = train_bundle([table], _cfg(epochs=0), progress=False, init_state=state)
    w = b.metrics["warm_start"]
    assert w["loaded"] == w["of"] == len(state)
    for k, v in b.model.state_dict().items():   # no epoch ran: the weights are the champion's
        assert torch.equal(v, state[k]), k
    assert train_bundle([table], _cfg(epochs=0), progress=False).metrics["warm_start"] is None
    wide = STGNN(ModelConfig(node_in=champ.model.config.node_in, edge_in=champ.model.config.edge_in, hidden=32))
    got = warm_start(wide, state)   # another width: only the shape-free tensors (if any) load
    assert got["of"] == len(wide.state_dict()) and got["loaded"] < got["of"]

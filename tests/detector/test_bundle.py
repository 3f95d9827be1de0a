import json

import numpy as np
import pytest
import torch

from detector.bundle import ModelBundle, load_bundle
from detector.model_files import write_manifest
from training.pretrain import TrainConfig, make_windows, train_bundle
from training.synthetic import synthetic_flows



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    table = synthetic_flows(n_benign=800, n_attack=60, duration=900, seed=3)
    b = train_bundle([table], TrainConfig(epochs=1, hidden=16, seed=0, objective="contrastive"), out_dir=d, progress=False)
    return b, d, table


def test_directory_contents(trained):
    b, d, table = trained
    names = {p.name for p in d.iterdir()}
    assert names == {"config.json", "weights.pt", "preprocessor.json", "detector.npz", "technique.json", "manifest.json",
                     "checkpoint.pt"}
    # the manifest lists the bundle's files; checkpoint.pt (training state, read by train --resume only) is not
    listed = json.loads((d / "manifest.json").read_text())["files"]
    assert sorted(listed) == ["config.json", "detector.npz", "preprocessor.json", "technique.json", "weights.pt"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["kind"] == "flows" and cfg["threshold"] == pytest.approx(b.threshold)
    assert cfg["calibration"]["target_fpr"] == 0.01
    assert cfg["fingerprint"]["records"] == table.num_rows and len(cfg["fingerprint"]["sha256"]) == 64
    assert "kg" in cfg and "metrics" in cfg and cfg["detector"] in ("knn", "iforest", "fusion")
    assert cfg["metrics"]["train_windows"] > cfg["metrics"]["val_windows"] > 0


def test_save_load_identical_scores(trained, tmp_path):
    b, d, table = trained
    loaded = ModelBundle.load(d)
    assert isinstance(load_bundle(d), ModelBundle)
    windows = make_windows(table, 60.0)
    s1, s2 = b.stream_scorer(), loaded.stream_scorer()
    for w in windows:
        a, c = s1.score_window(w), s2.score_window(w)
        np.testing.assert_array_equal(a.rows, c.rows)
        np.testing.assert_allclose(a.scores, c.scores, rtol=0, atol=0)
        np.testing.assert_array_equal(a.alerts, c.alerts)
    # saving the loaded bundle again gives the same scores too
    loaded.save(tmp_path / "again")
    s3 = ModelBundle.load(tmp_path / "again").stream_scorer()
    np.testing.assert_array_equal(s3.score_window(windows[0]).scores, b.stream_scorer().score_window(windows[0]).scores)


def test_scorers_do_not_share_state(trained):
    b, _, table = trained
    w = make_windows(table, 60.0)
    a = b.stream_scorer()
    for x in w[:5]:
        a.score_window(x)
    fresh = b.stream_scorer().score_window(w[0]).scores
    again = b.stream_scorer().score_window(w[0]).scores
    np.testing.assert_array_equal(fresh, again)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ModelBundle.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path)



def test_load_refuses_a_knowledge_block_of_another_width(trained, tmp_path):
    """A model trained with one knowledge artifact fails at load, clearly, under an artifact of another width."""
    import shutil

    _, d, _ = trained
    copy = tmp_path / "m"
    shutil.copytree(d, copy)
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["pipeline"]["knowledge"] and cfg["kg"]["width"] > 0
    ModelBundle.load(copy)  # the same artifact: loads
    cfg["kg"]["width"] += 7
    (copy / "config.json").write_text(json.dumps(cfg))
    write_manifest(copy)  # an edited config.json is refused by the manifest first
    with pytest.raises(ValueError, match="knowledge feature columns"):
        ModelBundle.load(copy)


@pytest.mark.parametrize("detector", ["knn", "fusion"])
def test_hybrid_flow_parts_round_trip(tmp_path, detector):
    """A bundle whose detector input is not the default ([z_v || e_uv || raw]) loads with identical scores,
    also with the fusion detector (kNN on z_v || e_uv, forest on the raw block)."""
    table = synthetic_flows(n_benign=400, n_attack=40, duration=600, seed=4)
    b = train_bundle([table], TrainConfig(epochs=1, hidden=16, seed=0, knowledge=False, flow_parts="dst,edge,raw",
                                          objective="contrastive", detector=detector),
                     out_dir=tmp_path, progress=False)
    loaded = ModelBundle.load(tmp_path)
    assert loaded.model.config.flow_parts == "dst,edge,raw" and loaded.model.edge_emb_dim == 32 + b.model.config.edge_in
    assert loaded.detector_name == detector and type(loaded.detector) is type(b.detector)
    if detector == "fusion":
        assert loaded.detector.raw_dim == b.model.config.edge_in
    w = make_windows(table, 60.0)[3]
    np.testing.assert_array_equal(b.stream_scorer().score_window(w).scores, loaded.stream_scorer().score_window(w).scores)


def test_warm_up_prepares_the_detector_and_never_raises(trained, tmp_path):
    b, d, table = trained
    loaded = ModelBundle.load(d)
    loaded.warm_up()
    if loaded.detector_name == "iforest":
        assert "_forest_cache" in loaded.detector.__dict__  # the layout is built before the first window
    w = make_windows(table, 60.0)[0]
    np.testing.assert_array_equal(loaded.stream_scorer().score_window(w).scores,
                                  b.stream_scorer().score_window(w).scores)

    class Broken:
        mean_ = np.zeros(3)

        def decision_function(self, X):
            raise RuntimeError("boom")

    loaded.detector = Broken()
    loaded.warm_up()  # logged, not raised: scoring reports real errors
    loaded.detector = object()  # no fitted width: nothing to do
    loaded.warm_up()

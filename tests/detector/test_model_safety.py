"""A model directory never runs code, and one that cannot score fails at load with one line naming the file.

Real bundles (trained small on synthetic flows), real files damaged on disk, the real CLI in a subprocess.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.bundle import ModelBundle, load_bundle
from detector.model_files import ModelDirError, verify_manifest, write_manifest
from training.pretrain import TrainConfig, make_windows, train_bundle
from training.synthetic import synthetic_flows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling it creates ``marker`` (what a crafted detector.pkl could do with any command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


@pytest.fixture(scope="module")
def table():
    return synthetic_flows(n_benign=400, n_attack=40, duration=600, seed=4)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, table):
    """A saved bundle per detector kind: ``{name: (bundle, directory)}``."""
    out = {}
    for name in ("knn", "iforest", "fusion"):
        d = tmp_path_factory.mktemp(name)
        parts = "dst,edge,raw" if name == "fusion" else "auto"
        b = train_bundle([table], TrainConfig(epochs=1, hidden=16, seed=0, knowledge=False, objective="contrastive",
                                              detector=name, flow_parts=parts), out_dir=d, progress=False)
        out[name] = (b, d)
    return out


@pytest.fixture
def model(bundles, tmp_path):
    """A fresh copy of the saved kNN bundle, free to damage."""
    d = tmp_path / "model"
    shutil.copytree(bundles["knn"][1], d)
    return d


def test_the_payload_does_run_when_unpickled(tmp_path):
    """The crafted pickle below is live: unpickling it creates its marker (so the tests below can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(_payload(marker))
    assert marker.exists()


def test_a_dropped_in_pickle_is_refused_and_never_unpickled(model, tmp_path):
    marker = tmp_path / "pwned"
    (model / "detector.pkl").write_bytes(_payload(marker))
    with pytest.raises(ModelDirError, match=r"detector\.pkl is not part of the saved model"):
        load_bundle(model)
    with pytest.raises(ModelDirError, match=r"detector\.pkl"):
        ModelBundle.load(model)
    assert not marker.exists()


def test_an_older_pickled_model_dir_is_refused_with_retrain(model, tmp_path):
    marker = tmp_path / "pwned"
    (model / "manifest.json").unlink()
    (model / "detector.npz").unlink()
    (model / "detector.pkl").write_bytes(_payload(marker))
    with pytest.raises(ModelDirError, match=r"pickled detector \(detector\.pkl\).*never loaded: retrain"):
        load_bundle(model)
    assert not marker.exists()
    (model / "detector.pkl").unlink()
    with pytest.raises(ModelDirError, match="no manifest.json .*retrain"):
        load_bundle(model)


def test_cli_score_refuses_a_pickle_in_one_line_exit_2(model, tmp_path):
    marker = tmp_path / "pwned"
    (model / "detector.pkl").write_bytes(_payload(marker))
    inp = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    exe = Path(sys.executable).parent / "graphsentry"
    r = subprocess.run([str(exe), "score", str(inp), "--model", str(model), "--out", str(tmp_path / "s.parquet")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "detector.pkl" in lines[0] and "error:" in lines[0]
    assert not marker.exists() and not (tmp_path / "s.parquet").exists()


def test_manifest_lists_the_bundle_and_allows_only_training_leftovers(model):
    files = verify_manifest(model)
    assert sorted(files) == ["config.json", "detector.npz", "preprocessor.json", "technique.json", "weights.pt"]
    assert (model / "checkpoint.pt").is_file()  # training state: not listed, allowed, never read by a loader
    (model / "NOTES.md").write_text("retrained after the March incident\n")
    load_bundle(model)
    (model / "notes.txt").write_text("x")
    with pytest.raises(ModelDirError, match=r"notes\.txt is not part of the saved model"):
        load_bundle(model)


def _flip_byte(p: Path, at: int) -> None:
    b = bytearray(p.read_bytes())
    b[at] ^= 0x01
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("name", ["weights.pt", "detector.npz", "preprocessor.json", "config.json"])
def test_a_changed_byte_is_refused_naming_the_file(model, name):
    p = model / name
    _flip_byte(p, p.stat().st_size // 2)
    with pytest.raises(ModelDirError, match=re.escape(name) + " differs from the file that was saved"):
        load_bundle(model)


def test_a_missing_file_is_refused_naming_it(model):
    (model / "preprocessor.json").unlink()
    with pytest.raises(ModelDirError, match=r"preprocessor\.json is missing"):
        load_bundle(model)


# Damage the manifest agrees with (the manifest rewritten after it): the load itself must refuse, by name.

@pytest.mark.parametrize("text,match", [
    ("{}", r"config\.json has format_version None"),
    ("not json", r"config\.json is not JSON"),
    ("[1, 2]", r"config\.json is not a JSON object"),
])
def test_a_config_that_is_not_a_model_config_is_refused(model, text, match):
    (model / "config.json").write_text(text)
    with pytest.raises(ModelDirError, match="config.json"):  # the manifest first
        load_bundle(model)
    write_manifest(model)
    with pytest.raises(ModelDirError, match=match):
        load_bundle(model)


def test_a_config_missing_its_sections_is_refused(model):
    cfg = json.loads((model / "config.json").read_text())
    del cfg["pipeline"]
    (model / "config.json").write_text(json.dumps(cfg))
    write_manifest(model)
    with pytest.raises(ModelDirError, match=r"config\.json is not a flow model's config \(KeyError: 'pipeline'\)"):
        load_bundle(model)


def test_truncated_weights_are_refused(model):
    p = model / "weights.pt"
    p.write_bytes(p.read_bytes()[:1000])
    write_manifest(model)
    with pytest.raises(ModelDirError, match=r"weights\.pt is not a readable weights file"):
        load_bundle(model)


def test_weights_that_do_not_fit_the_config_are_refused(model):
    cfg = json.loads((model / "config.json").read_text())
    cfg["model"]["hidden"] = 24
    (model / "config.json").write_text(json.dumps(cfg))
    write_manifest(model)
    with pytest.raises(ModelDirError, match=r"weights\.pt does not fit the model in config\.json \(.*size mismatch"):
        load_bundle(model)


def _rewrite_npz(d: Path, change) -> None:
    with np.load(d / "detector.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(d / "detector.npz", "wb") as f:
        np.savez(f, **arrays)
    write_manifest(d)


def test_a_truncated_detector_is_refused(model):
    p = model / "detector.npz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ModelDirError, match=r"detector\.npz differs"):
        load_bundle(model)
    write_manifest(model)
    with pytest.raises(ModelDirError, match=r"detector\.npz is not a readable array file"):
        load_bundle(model)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.pop("bank_"), "array 'bank_' is missing"),
    (lambda a: a.update(bank_=a["bank_"][:, :-1]), "'bank_' .* must hold"),
    # a consistent detector of another width: it cannot score this model's output
    (lambda a: a.update(mean_=a["mean_"][:-1], scale_=a["scale_"][:-1], bank_=a["bank_"][:, :-1]),
     "fitted on"),
    (lambda a: a.update(bank_=np.array(["a", "b"])), "'bank_' must be 2-D float32"),
])
def test_detector_arrays_that_cannot_score_are_refused(model, change, match):
    _rewrite_npz(model, change)
    with pytest.raises(ModelDirError, match=r"detector\.npz .*is not a knn detector for this model: .*" + match):
        load_bundle(model)


def test_an_object_array_in_the_detector_is_refused_without_unpickling(model, tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    with np.load(model / "detector.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["bank_"] = evil
    with open(model / "detector.npz", "wb") as f:
        np.savez(f, **arrays)  # np.savez pickles the object array
    write_manifest(model)
    with pytest.raises(ModelDirError, match=r"detector\.npz is not a readable array file"):
        load_bundle(model)
    assert not marker.exists()


def test_the_daemon_loader_refuses_before_any_swap(model):
    """The daemon loads (first load and hot reload) through load_bundle: the same refusal."""
    from detector.daemon.pipeline import default_loader

    assert default_loader(model).threshold is not None
    _flip_byte(model / "weights.pt", 100)
    with pytest.raises(ModelDirError, match=r"weights\.pt differs"):
        default_loader(model)


@pytest.mark.parametrize("name", ["knn", "iforest", "fusion"])
def test_round_trip_gives_identical_scores(bundles, table, tmp_path, name):
    b, d = bundles[name]
    loaded = load_bundle(d)
    assert type(loaded.detector) is type(b.detector) and loaded.detector_name == name
    assert loaded.detector.threshold_ == b.detector.threshold_ == b.threshold
    windows = make_windows(table, 60.0)
    s1, s2 = b.stream_scorer(), loaded.stream_scorer()
    for w in windows:
        np.testing.assert_array_equal(s1.score_window(w).scores, s2.score_window(w).scores)
    again = loaded.save(tmp_path / "again")
    np.testing.assert_array_equal(load_bundle(again).stream_scorer().score_window(windows[2]).scores,
                                  b.stream_scorer().score_window(windows[2]).scores)
    assert not (again / "checkpoint.pt").exists() and (again / "manifest.json").is_file()


def test_saving_over_an_older_model_dir_replaces_its_pickle(bundles, tmp_path):
    b, _ = bundles["knn"]
    d = tmp_path / "m"
    d.mkdir()
    (d / "detector.pkl").write_bytes(_payload(tmp_path / "pwned"))
    b.save(d)
    assert not (d / "detector.pkl").exists()
    load_bundle(d)
    assert not (tmp_path / "pwned").exists()


def test_training_checkpoint_loads_with_weights_only(bundles):
    import torch

    from training.pretrain import load_checkpoint

    ck = bundles["knn"][1] / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["history"], list)
    assert load_checkpoint(ck)["epoch"] == 1


def test_a_broken_checkpoint_is_refused_in_one_line(tmp_path):
    from training.pretrain import load_checkpoint

    ck = tmp_path / "checkpoint.pt"
    ck.write_bytes(_payload(tmp_path / "pwned"))
    with pytest.raises(ValueError, match="not a readable training checkpoint .*without --resume"):
        load_checkpoint(ck)
    assert not (tmp_path / "pwned").exists()


def test_no_code_path_unpickles_or_loads_torch_files_unsafely():
    """``grep -rn "pickle.load\\|weights_only=False" detector ingest knowledge training`` finds nothing."""
    pattern = re.compile(r"pickle\.load|weights_only=False")
    hits = [f"{p.relative_to(REPO)}:{i}" for top in ("detector", "ingest", "knowledge", "training")
            for p in sorted((REPO / top).rglob("*.py"))
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert hits == []
    probe = REPO / "detector" / "bundle.py"  # the search itself works: it sees what it looks for
    assert pattern.search("x = " + "pickle.load(f)") and probe.is_file()

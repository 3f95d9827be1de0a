"""`graphsentry calibrate`: a model's threshold refitted on later traffic, nothing else changed."""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from detector.bundle import load_bundle
from detector.calibration import calibrate_threshold
from detector.scoring import score_table
from tests.conftest import SAMPLES
from training.cli import main as cli
from training.eval_suites import read
from training.pretrain import TrainConfig, train_bundle
from training.recalibrate import recalibrate

TRAIN = SAMPLES / "stratosphere" / "full" / "008-zeek-mixed.conn.log.labeled.gz"
LATER = SAMPLES / "stratosphere" / "full" / "010-zeek-mixed.conn.log.labeled.gz"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _read(path: Path) -> pa.Table:
    return read([path])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if not (TRAIN.is_file() and LATER.is_file()):
        pytest.skip("stratosphere samples not present")
    d = tmp_path_factory.mktemp("m") / "model"
    train_bundle([_read(TRAIN)], TrainConfig(epochs=1, hidden=16, seed=0, benign_only=True, objective="contrastive",
                                             detector="iforest"), out_dir=d, progress=False)
    return d


def _benign(table: pa.Table) -> np.ndarray:
    return ~pc.fill_null(pc.equal(table.column("label"), 1), False).to_numpy(zero_copy_only=False)


def test_threshold_is_the_quantile_of_the_later_benign_scores(model, tmp_path):
    later = _read(LATER)
    before = (model / "config.json").read_bytes()
    old = load_bundle(model)
    plain = copy.copy(old)
    plain.technique = None   # the threshold is the embedding detector's (the technique channel lifts above it)
    old_scores = score_table(plain, later)
    s = old_scores.column("score").to_numpy(zero_copy_only=False).astype(float)
    benign = _benign(later) & np.isfinite(s)
    assert benign.sum() >= 1000 and (~_benign(later)).any()  # labels present: attacks are left out
    want = calibrate_threshold(s[benign], old.calibration.target_fpr)

    res = recalibrate(model, later, tmp_path / "new")
    assert res["threshold"] == pytest.approx(want.threshold, abs=0) and res["used"] == int(benign.sum())
    assert res["excluded_malicious"] == int((~_benign(later) & np.isfinite(s)).sum())
    assert res["previous_threshold"] == old.threshold
    assert res["flagged_share_before"] == pytest.approx(float((s[benign] > old.threshold).mean()))

    new = load_bundle(tmp_path / "new")
    assert new.threshold == want.threshold and new.detector.threshold_ == want.threshold
    new_plain = copy.copy(new)
    new_plain.technique = None
    new_scores = score_table(new_plain, later)
    # same encoder, detector and pipeline: the embedding scores do not move, only the alert line does
    assert np.array_equal(new_scores.column("score").to_numpy(zero_copy_only=False).astype(float), s, equal_nan=True)
    alerts = new_scores.column("alert").to_numpy(zero_copy_only=False)
    assert alerts[benign].mean() == pytest.approx(res["flagged_share_after"])
    assert alerts[benign].mean() <= new.calibration.target_fpr
    # with the technique channel, alerts are a superset (the channel only lifts scores above the line)
    fused = score_table(new, later).column("alert").to_numpy(zero_copy_only=False)
    assert (fused | ~alerts).all()
    cfg = json.loads((tmp_path / "new" / "config.json").read_text())
    assert cfg["recalibrations"][-1]["previous_threshold"] == old.threshold
    assert cfg["recalibrations"][-1]["data_fingerprint"]["records"] == later.num_rows
    assert (model / "config.json").read_bytes() == before  # the old model stays for rollback


def test_all_records_and_chained_recalibrations(model, tmp_path):
    later = _read(LATER)
    a = recalibrate(model, later, tmp_path / "a", benign_only=False)
    plain = copy.copy(load_bundle(model))
    plain.technique = None
    s = score_table(plain, later).column("score").to_numpy(zero_copy_only=False).astype(float)
    assert a["used"] == int(np.isfinite(s).sum()) and a["excluded_malicious"] == 0
    b = recalibrate(tmp_path / "a", later, tmp_path / "b", target_fpr=0.05)
    assert b["previous_threshold"] == a["threshold"] and b["target_fpr"] == 0.05
    hist = json.loads((tmp_path / "b" / "config.json").read_text())["recalibrations"]
    assert [h["threshold"] for h in hist] == [a["threshold"], b["threshold"]]
    assert b["threshold"] < a["threshold"]  # a looser target, a lower line


def test_refuses_too_little_data_and_the_same_directory(model, tmp_path):
    later = _read(LATER)
    with pytest.raises(ValueError, match="at least 1000"):
        recalibrate(model, later.slice(0, 300), tmp_path / "x")
    with pytest.raises(ValueError, match="new model directory"):
        recalibrate(model, later, model)
    assert not (tmp_path / "x").exists()


def test_cli(model, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["calibrate", "--model", str(model), "--data", str(LATER), "--out", str(out)]) == 0
    assert "threshold" in capsys.readouterr().out  # the summary is on stdout
    assert load_bundle(out).threshold != load_bundle(model).threshold
    # and the recalibrated model scores like any other
    assert cli(["score", "--model", str(out), str(LATER), "--out", str(tmp_path / "s.parquet")]) == 0
    assert pq.read_table(tmp_path / "s.parquet").num_rows == _read(LATER).num_rows
    assert cli(["calibrate", "--model", str(model), "--data", str(LATER), "--out", str(model)]) == 2
    fake = tmp_path / "notamodel"
    fake.mkdir()
    assert cli(["calibrate", "--model", str(fake), "--data", str(LATER), "--out", str(tmp_path / "y")]) == 2
    shutil.rmtree(out)


def test_time_split_keeps_time_order_and_the_minimum():
    from training.recalibration_eval import time_split

    later = _read(LATER)
    a, b = time_split(later, 0.1, 1000)
    assert a.num_rows == 1000 and a.num_rows + b.num_rows == later.num_rows
    ts_a, ts_b = (t.column("ts").cast(pa.int64()).to_numpy() for t in (a, b))
    assert ts_a.max() <= ts_b.min() and (np.diff(ts_a) >= 0).all()
    assert time_split(later, 0.5)[0].num_rows == round(0.5 * later.num_rows)


def test_time_split_counts_benign_records_when_asked():
    from training.recalibration_eval import time_split

    later = _read(LATER)
    a, _ = time_split(later, 0.0, 1000, benign_only=True)
    benign = int(_benign(a).sum())
    assert benign == 1000 and _benign(a)[-1]  # stops at the 1000th benign record

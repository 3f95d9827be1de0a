import json

import numpy as np
import pytest
import torch

from training.evaluate import evaluate_split, metrics, write_report
from training.pretrain import TrainConfig
from training.synthetic import synthetic_flows


def test_metrics_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    attacks = [None] * 4 + ["scan", "dos", None, None]
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, np.nan, 5.0, 5.0])
    m = metrics(labels, attacks, scores, threshold=0.5)
    assert m["n_eval"] == 6 and m["n_excluded_background_or_unlabelled"] == 2 and m["n_unscored"] == 1
    assert m["recall"] == 0.5 and m["fpr"] == 0.25 and m["precision"] == 0.5
    assert m["per_class_recall"] == {"dos": {"n": 1, "recall": 0.0}, "scan": {"n": 1, "recall": 1.0}}
    # the unscored malicious record ranks last: AUROC = mean over malicious of P(mal > benign) = (3/4 + 0/4) / 2
    assert m["auroc"] == pytest.approx(0.375)
    from sklearn.metrics import f1_score

    assert m["macro_f1"] == pytest.approx(f1_score([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0], average="macro"))


def test_evaluate_split_writes_report(tmp_path):
    old = torch.get_num_threads()
    try:
        train = synthetic_flows(n_benign=500, n_attack=40, duration=600, seed=1)
        test = synthetic_flows(n_benign=300, n_attack=40, duration=300, seed=2, t0=1.7e9 + 3600)
        cfg = TrainConfig(epochs=1, hidden=16, knowledge=False, benign_only=True, objective="contrastive")
        rep = evaluate_split(train, test, cfg, variants=("no_pretrain", "iforest_raw"), name="synthetic")
        assert rep["protocol"]["removed_malicious_from_training"] == 40
        for v in ("no_pretrain", "iforest_raw"):
            r = rep["results"][v]
            assert r["n_eval"] == test.num_rows and r["n_unscored"] == 0
            assert r["auroc"] >= 0.8  # the synthetic port scan is easy
        d = write_report(rep, tmp_path / "rep")
        assert {"report.json", "report.md", "roc.png", "pr.png"} <= {p.name for p in d.iterdir()}
        j = json.loads((d / "report.json").read_text())
        assert "_scores" not in j and j["results"]["iforest_raw"]["detector"] == "iforest"
        assert "| no_pretrain |" in (d / "report.md").read_text()
    finally:
        torch.set_num_threads(old)

"""Fraud training/evaluation: handbook metrics, label latency in training, train -> score -> CLI, protocol."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ingest.fraud.graph import DAY
from training.fraud.loop import calibrate_threshold, known_labels, WindowFeat
from training.fraud.metrics import card_precision_top_k
from training.fraud.simulate import simulate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_card_precision_top_k_by_hand():
    # day 0: customers a (fraud), b, c; top-2 by max score = a (0.9), c (0.8) -> 1/2
    # day 1: a was detected on day 0 and is removed; top-2 = b (fraud, 0.7), c -> 1/2
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    cust = np.array(["a", "b", "c", "a", "a", "b", "c"])
    y = np.array([1, 0, 0, 0, 1, 1, 0])
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.99, 0.7, 0.3])
    mean, per_day = card_precision_top_k(day, cust, y, s, k=2)
    assert per_day == [0.5, 0.5] and mean == 0.5
    _, kept = card_precision_top_k(day, cust, y, s, k=2, remove_detected=False)
    assert kept == [0.5, 1.0]          # without removal a tops day 1 again
    _, per1 = card_precision_top_k(day, cust, y, s, k=1)
    assert per1 == [1.0, 1.0]          # a on day 0; a removed so b (fraud) tops day 1


def test_training_sees_only_labels_known_at_training_time():
    from ingest.fraud.graph import TxFeatures

    ts = np.array([0.0, 5 * DAY, 8 * DAY, 9.5 * DAY])
    f = TxFeatures(edge=np.zeros((4, 1)), handbook=np.zeros((4, 1)), cust=np.zeros(4, np.int64),
                   term=np.zeros(4, np.int64), ts=ts, cust_x=np.zeros((1, 1)), term_x=np.zeros((1, 1)),
                   cust_ids=np.zeros(1, np.int64), term_ids=np.zeros(1, np.int64))
    w = WindowFeat(0, 10 * DAY, f, np.arange(4), np.array([1, 0, 1, 1]), (ts // DAY).astype(np.int64))
    # now = day 15, delay 7 d: known iff ts <= day 8
    assert known_labels(w, 15 * DAY, 7 * DAY).tolist() == [1, 0, 1, -1]


def test_threshold_rule_gives_target_alert_rate():
    s = np.random.default_rng(0).random(100_000)
    thr = calibrate_threshold(s, 0.01)
    assert abs((s >= thr).mean() - 0.01) < 1e-3
    with pytest.raises(ValueError, match="alert_rate"):
        calibrate_threshold(s, 1.5)


@pytest.fixture(scope="module")
def sim_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("fraud")
    tbl = simulate(n_customers=200, n_terminals=400, n_days=60, seed=2)
    early = tbl.filter(pc.less(tbl["TX_TIME_DAYS"], 45))
    pq.write_table(tbl, d / "all.parquet")
    pq.write_table(early, d / "early.parquet")
    return d


@pytest.mark.slow
def test_train_then_score_out_of_sample_and_cli(sim_paths, tmp_path):
    from detector.fraud import score
    from training.fraud import train
    from training.fraud.cli import main

    res = train([str(sim_paths / "early.parquet")], tmp_path / "model", epochs=3, seed=0)
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert cfg["kind"] == "transactions" and cfg["threshold"] == res["threshold"]
    out = tmp_path / "scores.parquet"
    summary = score(str(tmp_path / "model"), [str(sim_paths / "all.parquet")], str(out))
    sc = pq.read_table(out)
    src = pq.read_table(sim_paths / "all.parquet")
    assert sc.column_names == ["row", "tx_id", "ts", "score", "alert", "reason"]
    assert sc.num_rows == src.num_rows == summary["rows"]
    assert sc["row"].to_pylist() == list(range(src.num_rows))
    assert sc["tx_id"].to_pylist() == [str(i) for i in src["TRANSACTION_ID"].to_pylist()]
    assert sc["score"].null_count == 0 and sc["reason"].null_count == sc.num_rows
    # quality floor on days never used for training (labels of days >= 38 were unknown at training)
    later = np.asarray(src["TX_TIME_DAYS"]) >= 45
    y = np.asarray(src["TX_FRAUD"])[later]
    assert roc_auc_score(y, np.asarray(sc["score"])[later]) >= 0.8
    # the same through the CLI
    rc = main(["fraud", "score", "--model", str(tmp_path / "model"), str(sim_paths / "all.parquet"),
               "--out", str(tmp_path / "cli.parquet")])
    assert rc == 0
    np.testing.assert_array_equal(np.asarray(pq.read_table(tmp_path / "cli.parquet")["score"]), np.asarray(sc["score"]))


@pytest.mark.slow
def test_evaluate_protocol_is_time_ordered(sim_paths, tmp_path):
    from training.fraud import evaluate

    rep = evaluate([str(sim_paths / "all.parquet")], str(tmp_path / "rep"), folds=1, train_days=7, delay_days=7,
                   test_days=7, val_days=2, epochs=1, ablations=(), baselines=("logistic_regression",),
                   extras=("rf_edge21",), progress=False)
    fold = rep["folds"][0]
    tr, dl, te = fold["train_days"], fold["delay_days"], fold["test_days"]
    assert tr[1] < dl[0] and dl[1] < te[0] and dl[1] - dl[0] + 1 == 7
    assert set(fold["models"]) == {"ours", "logistic_regression", "rf_edge21"}
    for m in fold["models"].values():
        assert 0.0 <= m["average_precision"] <= 1.0 and "card_precision@100" in m
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Fraud detection evaluation")
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["protocol"]["delay_days"] == 7


def test_cli_help_and_bad_duration(capsys):
    from training.fraud.cli import main

    with pytest.raises(SystemExit):
        main(["fraud", "train", "--help"])
    assert "--label-delay-days" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fraud", "train", "--data", "x", "--out", "y", "--window", "soon"])

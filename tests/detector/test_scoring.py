import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score

from detector.scoring import score_table
from training.pretrain import TrainConfig, make_windows, train_bundle
from training.synthetic import synthetic_flows



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle():
    table = synthetic_flows(n_benign=1500, n_attack=150, duration=1200, seed=5)
    return train_bundle([table], TrainConfig(epochs=1, hidden=32, seed=0, benign_only=True, objective="contrastive"), progress=False)


def test_window_scores_fields(bundle):
    table = synthetic_flows(n_benign=300, n_attack=30, duration=300, seed=9)
    w = make_windows(table, 60.0)[-1]
    ws = bundle.stream_scorer().score_window(w)
    E = w.table.num_rows
    assert ws.rows.tolist() == w.table.column("row").to_pylist()
    assert ws.scores.shape == (E,) and ws.alerts.dtype == bool and len(ws.top_technique) == E
    assert len(ws.node_scores) == len(ws.node_key) > 0
    assert ws.alerts.tolist() == (ws.scores > bundle.threshold).tolist()


def test_empty_window(bundle):
    from ingest.schema import FLOW_SCHEMA
    from ingest.windows import Window

    ws = bundle.stream_scorer().score_window(Window(0.0, 60.0, FLOW_SCHEMA.empty_table()))
    assert len(ws.scores) == 0 and ws.num_alerts == 0


def test_score_table_contract_one_row_per_input_in_order(bundle):
    table = synthetic_flows(n_benign=600, n_attack=60, duration=600, seed=11, t0=1.7e9 + 5000)
    # shuffle the input order: output must follow input order, not time order
    perm = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = table.take(pa.array(perm))
    shuffled = shuffled.set_column(0, "row", pa.array(np.arange(table.num_rows), pa.int64()))
    out = score_table(bundle, shuffled)
    assert out.column_names == ["row", "uid", "ts", "score", "alert", "top_technique", "reason"]
    assert out.num_rows == shuffled.num_rows
    assert out.column("row").to_pylist() == list(range(table.num_rows))
    assert out.column("uid").to_pylist() == shuffled.column("uid").to_pylist()
    assert out.column("score").null_count == 0 and out.column("reason").null_count == out.num_rows
    y = shuffled.column("label").to_numpy()
    # sanity floor (scores carry signal, not inverted); detector quality floors live in test_detectors.py
    assert roc_auc_score(y, out.column("score").to_numpy()) >= 0.7


def test_stream_order_reports_late_records(bundle):
    table = synthetic_flows(n_benign=400, n_attack=0, duration=600, seed=12)
    perm = np.random.default_rng(1).permutation(table.num_rows)
    shuffled = table.take(pa.array(perm)).set_column(0, "row", pa.array(np.arange(table.num_rows), pa.int64()))
    out = score_table(bundle, shuffled, stream_order=True, lateness=5.0)
    reasons = out.column("reason").to_pylist()
    scores = out.column("score").to_pylist()
    assert out.num_rows == table.num_rows and out.column("row").to_pylist() == list(range(table.num_rows))
    n_late = reasons.count("late")
    assert n_late > 0
    assert all((s is None) == (r is not None) for s, r in zip(scores, reasons))
    assert not any(a for a, r in zip(out.column("alert").to_pylist(), reasons) if r is not None)

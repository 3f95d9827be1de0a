"""`graphsentry train|score` take transaction inputs too (sniffed or --kind transactions)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.cli import main
from training.commands import input_kind

REPO = Path(__file__).resolve().parents[2]
TX_TRAIN = REPO / "samples" / "fraud" / "fdh-style-sim-300c-60d.parquet"
TX_TEST = REPO / "samples" / "fdh" / "fdh-transactions-2018-04-01-to-21-customers-mod20.parquet"
FLOWS = REPO / "samples" / "iot23" / "CTU-Honeypot-Capture-4-1-labeled.csv"


def test_kind_is_sniffed_from_the_input():
    assert input_kind([str(TX_TRAIN)]) == "transactions"
    assert input_kind([str(FLOWS)]) == "flows"
    assert input_kind([str(FLOWS)], kind="transactions") == "transactions"


@pytest.mark.slow
def test_train_and_score_transactions_through_the_main_commands(tmp_path):
    model = tmp_path / "model"
    assert main(["train", "--data", str(TX_TRAIN), "--out", str(model), "--epochs", "1", "--no-progress"]) == 0
    assert json.loads((model / "config.json").read_text())["kind"] == "transactions"
    out = tmp_path / "scores.parquet"
    assert main(["score", "--model", str(model), str(TX_TEST), "--out", str(out)]) == 0
    t = pq.read_table(out)
    assert t.num_rows == pq.read_metadata(TX_TEST).num_rows
    assert t.column("row").to_pylist() == list(range(t.num_rows))


def test_flow_trainer_refuses_transactions_with_a_clear_error(tmp_path, capsys):
    rc = main(["train", "--data", str(TX_TRAIN), "--out", str(tmp_path / "m"), "--kind", "flows", "--no-progress"])
    assert rc == 2
    assert "--kind transactions" in capsys.readouterr().err

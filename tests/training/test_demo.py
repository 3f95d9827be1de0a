"""`make run` = `graphsentry demo`: the whole chain on the bundled captures, end to end."""
from __future__ import annotations

import json

import pytest

from training.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--metrics-port", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_in"] == 5347 and summary["stopped_by"] == "end of input"
    assert summary["records_scored"] + summary["late"] == summary["records_in"]
    assert summary["alerts"] > 0 and (out / "alerts.db").stat().st_size > 0
    text = capsys.readouterr().out
    assert "attack recall" in text and "benign false-positive rate" in text

"""The model-fit rule (flagged share vs the calibrated rate) and its warning in `graphsentry score`."""
from __future__ import annotations

from pathlib import Path

import pytest

from detector.fit_check import FitWindow, check_fit

REPO = Path(__file__).resolve().parents[2]
IOT = REPO / "samples" / "iot23" / "CTU-Honeypot-Capture-4-1-labeled.csv"
STRATO = [REPO / "samples" / "stratosphere" / f"{n}-zeek-mixed.conn.log.labeled" for n in ("008", "010")]


def test_rule_needs_enough_records_and_a_share_far_above_the_target():
    assert check_fit(1990, 1999, 0.01).fits                       # too few records to judge
    assert not check_fit(1990, 1999, 0.01).enough
    v = check_fit(1800, 2000, 0.01)                               # 90% vs 1%
    assert not v.fits and v.share == pytest.approx(0.9)
    msg = v.message("models/m")
    assert "90.0%" in msg and "1.0%" in msg and "graphsentry calibrate BENIGN_DATA --model models/m" in msg
    assert "does not fit this network" in msg and "\n" not in msg
    assert check_fit(40, 2000, 0.01).fits                         # 2%: above target, not 5x
    assert check_fit(110, 2000, 0.01).fits is False               # 5.5% > 5x1% and > 5%
    assert check_fit(90, 2000, 0.001).fits                        # 4.5% is > 5x0.1% but under the 5% floor
    assert check_fit(1000, 2000, 0.2).fits                        # 50% vs a 20% target: not > 5x
    assert not check_fit(300, 2000, None).fits                    # no target: `calibrate`'s default 1%
    assert check_fit(0, 0, 0.01).message() == ""


def test_window_keeps_the_recent_records_only():
    w = FitWindow(size=3000, min_records=2000)
    for _ in range(3):
        w.add(0, 1000)                                            # 3000 clean records
    assert w.verdict(0.01).fits and w.records == 3000
    for _ in range(3):
        w.add(900, 1000)                                          # then 3000 at 90%: the clean ones age out
    assert w.records == 3000 and w.flagged == 2700
    assert not w.verdict(0.01).fits
    w.reset()
    assert w.records == 0 and w.verdict(0.01).fits


@pytest.mark.slow
def test_graphsentry_score_warns_when_the_model_flags_far_too_much(tmp_path, capsys):
    from training.cli import main

    if not IOT.exists() or not all(p.exists() for p in STRATO):
        pytest.skip("bundled samples missing")
    model = tmp_path / "iot-model"
    assert main(["train", "--data", str(IOT), "--out", str(model), "--epochs", "1", "--objective", "none",
                 "--window", "10m", "--detector", "knn", "--no-progress"]) == 0
    capsys.readouterr()
    # A model of one honeypot's traffic on two other captures (3,000 records): it does not fit.
    assert main(["score", *map(str, STRATO), "--model", str(model), "--out", str(tmp_path / "s.parquet")]) == 0
    err = capsys.readouterr().err
    warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1, err
    assert "of 3000 scored records flagged" in warn[0] and "target of 1.0%" in warn[0]
    assert f"graphsentry calibrate BENIGN_DATA --model {model}" in warn[0]
    # On its own traffic (453 records, under the 2,000 needed to judge) it stays quiet.
    assert main(["score", str(IOT), "--model", str(model), "--out", str(tmp_path / "s2.parquet")]) == 0
    assert "warning:" not in capsys.readouterr().err

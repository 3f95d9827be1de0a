"""The daemon on a transaction stream: a real fraud model, per-transaction findings that match `score`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from detector.alerts.sinks import read_alert_store
from detector.daemon import load_config, run_daemon

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "samples" / "fraud" / "fdh-style-sim-300c-60d.parquet"
TEST = REPO / "samples" / "fdh" / "fdh-transactions-2018-04-01-to-21-customers-mod20.parquet"


@pytest.fixture(scope="module")
def fraud_model(tmp_path_factory) -> Path:
    from training.fraud import train

    out = tmp_path_factory.mktemp("fraud") / "model"
    # A high alert rate so that the short real sample certainly produces findings.
    train([str(TRAIN)], str(out), epochs=2, window_s=86400.0, seed=0, alert_rate=0.05, progress=False)
    return out


@pytest.mark.slow
def test_transaction_stream_alerts_match_score(fraud_model, tmp_path):
    from detector.fraud import score

    cfg = load_config(overrides={
        "source": {"paths": [str(TEST)], "kind": "transactions"},
        "window": {"size": 86400.0, "lateness": 60.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"enabled": False}, "model": {"path": str(fraud_model), "watch": False},
    }, env={})
    s = run_daemon(cfg, install_signals=False)
    n = pq.read_metadata(TEST).num_rows
    assert s.records_in == n and s.records_scored == n and s.late == 0

    score(str(fraud_model), [str(TEST)], str(tmp_path / "scores.parquet"))
    ref = pq.read_table(tmp_path / "scores.parquet").to_pandas()
    flagged_ref = set(ref.loc[ref["alert"], "row"].astype(int))
    assert flagged_ref, "a 5% alert rate must flag transactions"

    alerts = read_alert_store(tmp_path / "alerts.db")
    flagged = {r for a in alerts for r in a["unmapped"]["rows"]}
    assert flagged == flagged_ref
    a = alerts[0]
    assert a["class_uid"] == 2004 and a["finding_info"]["title"].startswith("Suspected card fraud: customer ")
    ev = a["evidences"][0]
    row = ev["data"]["row"]
    tx = pq.read_table(TEST).slice(row, 1).to_pylist()[0]
    assert ev["src_endpoint"]["uid"] == str(tx["CUSTOMER_ID"]) and ev["dst_endpoint"]["uid"] == str(tx["TERMINAL_ID"])
    assert np.isclose(ev["data"]["amount"], tx["TX_AMOUNT"])

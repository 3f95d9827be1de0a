"""`graphsentry score --findings`: the findings of a scored input, grouped and folded as the daemon does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from daemon_helpers import read_flows
from detector.alerts.offline import write_findings
from training.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "stratosphere"


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_write_findings_folds_the_scored_records(tmp_path):
    records = read_flows(SAMPLES / "010-zeek-mixed.conn.log.labeled")
    n = records.num_rows
    dst = np.asarray(records.column("dst_ip").to_pylist(), dtype=object)
    flagged = dst == "147.32.83.234"                         # the flows into the monitored host
    scores = pa.table({"row": np.arange(n), "score": np.where(flagged, 2.5, 0.5), "alert": flagged,
                       "top_technique": pa.nulls(n, pa.string())})
    f = write_findings(records, scores, tmp_path / "f.jsonl", 300.0, 1.0, model_version="m", incident_gap=600.0,
                       internal_networks=("147.32.0.0/16",))
    lines = _lines(tmp_path / "f.jsonl")
    assert f["flagged"] == int(flagged.sum()) and f["writes"] == len(lines)
    last = {a["finding_info"]["uid"]: a for a in lines}
    assert len(last) == f["findings"] < 0.05 * f["flagged"]
    assert sum(a["unmapped"]["count"] for a in last.values()) == f["flagged"]
    big = max(last.values(), key=lambda a: a["unmapped"]["count"])
    assert big["unmapped"]["group_by"] == "dst" and big["unmapped"]["direction"] == "inbound"
    assert set(big["unmapped"]["rows"]) <= set(np.flatnonzero(flagged).tolist())
    with pytest.raises(ValueError, match="must be > 0"):
        write_findings(records, scores, tmp_path / "g.jsonl", 0.0, 1.0)


@pytest.mark.slow
def test_score_cli_writes_findings(tmp_path):
    model = tmp_path / "model"
    assert main(["train", "--data", str(SAMPLES / "008-zeek-mixed.conn.log.labeled"), "--out", str(model),
                 "--epochs", "1", "--window", "5m", "--no-progress", "--hidden", "16",
                 "--objective", "contrastive"]) == 0
    out = tmp_path / "scores.parquet"
    assert main(["score", "--model", str(model), str(SAMPLES / "010-zeek-mixed.conn.log.labeled"), "--out", str(out),
                 "--findings", str(tmp_path / "findings.jsonl")]) == 0
    import pyarrow.parquet as pq

    flagged = int(pa.compute.sum(pq.read_table(out).column("alert")).as_py() or 0)
    lines = _lines(tmp_path / "findings.jsonl")
    last = {a["finding_info"]["uid"]: a for a in lines}
    assert sum(a["unmapped"]["count"] for a in last.values()) == flagged
    assert (len(last) < flagged) if flagged > 1 else (len(last) == flagged)

"""`graphsentry train` + `graphsentry score` end to end on the bundled samples (output contract)."""
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.readers import open_inputs
from training.cli import main


def _samples(samples):
    found = sorted(p for p in (samples / "stratosphere").glob("*") if p.is_file() and "conn" in p.name) \
        if (samples / "stratosphere").is_dir() else []
    found += sorted((samples / "iot23").glob("*.csv")) if (samples / "iot23").is_dir() else []
    return found


def _run(*args):
    # in-process through the real entry point (a subprocess per call would re-import torch each time)
    assert main(list(args)) == 0


@pytest.mark.slow
def test_train_then_score_one_row_per_input_in_order(samples, tmp_path):
    inputs = _samples(samples)
    if not inputs:
        pytest.skip("no bundled flow samples")
    train_in = inputs[-1]
    model = tmp_path / "model"
    _run("train", "--data", str(train_in), "--out", str(model), "--epochs", "1", "--window", "30m",
         "--no-progress", "--hidden", "16", "--objective", "contrastive")
    assert (model / "config.json").is_file()
    # score every sample, plus a copy with a malformed line appended: it must not crash
    bad = tmp_path / "with-bad-line.csv"
    shutil.copy(train_in, bad)
    with open(bad, "a") as f:
        f.write("this,is,not,a,flow\n")
    for inp in [*inputs, bad]:
        out_path = tmp_path / f"{inp.name}.parquet"
        _run("score", "--model", str(model), str(inp), "--out", str(out_path),
             "--dead-letter", str(tmp_path / "dead.jsonl"))
        out = pq.read_table(out_path)
        ref = pa.Table.from_batches(list(open_inputs([str(inp)])))
        assert out.column_names == ["row", "uid", "ts", "score", "alert", "top_technique", "reason"]
        assert out.num_rows == ref.num_rows > 0
        assert out.column("row").to_pylist() == ref.column("row").to_pylist()
        assert out.column("uid").to_pylist() == ref.column("uid").to_pylist()
        scores = out.column("score").to_numpy(zero_copy_only=False)
        reasons = out.column("reason").to_pylist()
        assert all(np.isnan(s) == (r is not None) for s, r in zip(scores, reasons))
        assert np.isfinite(scores).mean() > 0.99

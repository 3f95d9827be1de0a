"""Model benchmark: pretraining seconds per epoch and offline scoring throughput (records/s).

    .venv/bin/python benchmarks/model_bench.py [--records 20000] [--window 60] [--epochs 1]

Uses one LUFlow day from ../shared/data when present (uniform subsample of --records flows),
otherwise seeded synthetic flows. Prints one JSON line. Single torch thread (detector/runtime.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--no-knowledge", action="store_true")
    a = ap.parse_args()
    import pyarrow as pa

    from detector.scoring import score_table
    from training.evaluate import subsample
    from training.pretrain import TrainConfig, train_bundle

    day = Path(__file__).resolve().parents[2] / "shared" / "data" / "flows" / "luflow" / "2020.07.08.zip"
    if day.is_file():
        from ingest.readers import open_inputs

        table = subsample(pa.Table.from_batches(list(open_inputs([str(day)]))), a.records, 0)
        source = f"LUFlow {day.name} subsample"
    else:
        from training.synthetic import synthetic_flows

        table = synthetic_flows(n_benign=a.records, n_attack=a.records // 20, duration=3600.0)
        source = "synthetic"
    table = table.set_column(0, "row", pa.array(range(table.num_rows), pa.int64()))
    t0 = time.perf_counter()
    b = train_bundle([table], TrainConfig(window=a.window, epochs=a.epochs, knowledge=not a.no_knowledge, objective="contrastive"),
                     progress=False)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = score_table(b, table)
    score_s = time.perf_counter() - t1
    print(json.dumps({
        "source": source, "records": table.num_rows, "window_s": a.window,
        "knowledge": b.pipeline.cfg.knowledge, "train_windows": b.metrics["train_windows"],
        "train_total_s": round(train_s, 1), "epoch_s": b.metrics["epoch_seconds"],
        "score_s": round(score_s, 1), "score_records_per_s": round(table.num_rows / score_s, 1),
        "unscored": out.num_rows - out.column("reason").null_count,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

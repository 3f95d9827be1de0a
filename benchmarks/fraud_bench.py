"""Transaction scoring throughput (tx/s): file -> TX_SCHEMA -> windows -> HeteroData -> model scores.

Usage:
    .venv/bin/python benchmarks/fraud_bench.py [--data FILE] [--model MODEL_DIR] [--days N]
                                               [--windows 86400,3600] [--threads 1]

Without ``--model`` a freshly initialised model of the default size is used (the
speed of a forward pass does not depend on the weights). Prints one JSON object:
read rate, and per window length the rate of features+graphs alone and of full
scoring, plus host load (the 2-core box is shared, so say how busy it was).
Goal (issue 6): >= 50k transactions/s scoring on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "fraud" / "fdh-transactions-2018-04-to-07.parquet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--model", default=None)
    ap.add_argument("--days", type=int, default=0, help="only the first N days (0 = all)")
    ap.add_argument("--windows", default="86400,3600")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from detector.fraud.bundle import FraudBundle
    from detector.fraud.model import FraudModel, FraudModelConfig
    from ingest.fraud.data import read_transactions, tumbling
    from ingest.fraud.graph import HeteroGraphBuilder

    t0 = time.perf_counter()
    table = read_transactions([args.data])
    read_s = time.perf_counter() - t0
    if args.days:
        t_end = table["ts"][0].as_py().timestamp() + args.days * 86400
        table = table.filter(pc.less(table["ts"].cast("int64"), int(t_end * 1e6)))
    n = table.num_rows
    if args.model:
        bundle = FraudBundle.load(args.model)
    else:
        bundle = FraudBundle(model=FraudModel(FraudModelConfig()).eval(),
                             config={"threshold": 0.5, "label_delay_s": 7 * 86400.0, "window_s": 86400.0})
    out = {"data": args.data, "transactions": n, "read_seconds": read_s, "read_tx_per_s": table.num_rows / read_s,
           "threads": args.threads, "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "windows": {}}
    for ws in [float(x) for x in args.windows.split(",")]:
        b = HeteroGraphBuilder()
        t0 = time.perf_counter()
        k = 0
        for w in tumbling(table, ws):
            b.build(w)
            k += 1
        graph_s = time.perf_counter() - t0
        scorer = bundle.stream_scorer(resume_state=False)
        c0 = time.process_time()
        t0 = time.perf_counter()
        s = 0
        for w in tumbling(table, ws):
            s += len(scorer.score_window(w).scores)
        score_s = time.perf_counter() - t0
        score_cpu = time.process_time() - c0   # CPU seconds: a load-independent figure on a shared box
        assert s == n
        out["windows"][str(int(ws))] = {"windows": k, "graph_tx_per_s": n / graph_s, "score_tx_per_s": n / score_s,
                                        "score_seconds": score_s, "score_tx_per_cpu_s": n / score_cpu}
    out["loadavg_after"] = os.getloadavg()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, indent=2, default=lambda x: list(x) if isinstance(x, tuple) else float(x)))


if __name__ == "__main__":
    main()

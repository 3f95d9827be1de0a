"""`graphsentry score` end to end (file -> scores Parquet) and pretraining time per epoch, on LUFlow.

    .venv/bin/python benchmarks/score_bench.py [--days 11] [--train-records 0] [--window 5m] [--model DIR]

1. Pretrains a model (1 epoch, benign-only, one encoder) on the first LUFlow day (``--train-records N``:
   a seeded uniform subsample of N records instead) and reports seconds per epoch, and the same rate
   extrapolated to one epoch over 800k flows. The cost of an epoch is mostly per window, so the
   extrapolation is only fair at the data's real window density: a subsample makes every window sparse
   and overstates the time per flow (20k records: ~7.6 min per 800k flows; the whole day: ~4.5 min).
2. Runs the `graphsentry score` command in-process on the first ``--days`` later LUFlow days
   (2020-12-16 on; default all 11, 534,217 records) and reports records/s, with the bare reader rate on
   the same files measured in the same run as the reference (ratio = score rate / read rate), and the
   peak RSS. The command's fixed start-up (numba's first kernel load, ~0.6 s CPU per process, overlapped
   with reading the first files) weighs more on fewer days: ``--days 2`` (136k records) measured 72.5k
   records/s where all 11 days measured ~107k.
3. Times the scoring stage alone (``score_table`` on the input already read), with and without the
   overlap of graph building and scoring (``StreamScorer.OVERLAP``), best of two runs each; and without
   the long-horizon behaviour state and the technique channel (the scorer before them: the ratio is the
   cost of the state and the new score, measured in the same run); for a kNN
   model also with the kNN searching plain flow rows instead of ``FactoredRows``
   (``StreamScorer.FACTORED_DETECTORS``: endpoint blocks once per node), the reference for that change.
4. Times a kNN detector's ``decision_function`` alone on 8,192 queries: the default bank (coreset of 512
   rows) against an exact search of 20,000 rows (the former default), ratio printed.

``--model DIR`` scores with an existing model directory instead (step 1 skipped; the JSON's pretraining
fields are null): for comparing scoring code on one model; its window size is the model's.

``--detector`` (default ``iforest,knn``): steps 1-3 run once per detector, each with its own pretrained
model (the same encoder: same seed and data); one JSON line per run at the end.

Goals (issue 4, 2 cores): >= 100k records/s scoring; one pretraining epoch over ~800k flows < 5 min.
Skips with a message when ../shared/data is absent. Prints one JSON line per run at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
LUFLOW = Path(os.environ.get("GRAPHSENTRY_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data")) / "flows" / "luflow"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=11, help="later LUFlow days to score (default 11 = all)")
    ap.add_argument("--train-records", type=int, default=0,
                    help="pretraining subsample (default 0 = the whole first day, real window density)")
    ap.add_argument("--window", default="5m", help="window size (default 5m)")
    ap.add_argument("--model", default=None, metavar="DIR", help="score with this model directory (no pretraining)")
    ap.add_argument("--detector", default="iforest,knn",
                    help="comma-separated detectors, one pretrained model and scoring run each (iforest, knn, "
                         "auto = chosen by validation; default iforest,knn)")
    ap.add_argument("--out", default="reports/score_bench.json", help="JSON report ('' = none)")
    a = ap.parse_args()
    days = sorted(LUFLOW.glob("*.zip"))
    if not days:
        print(f"skipped: no LUFlow days under {LUFLOW}")
        return 0
    test_days = [str(p) for p in days if p.name >= "2020.12.16"][: a.days]
    names = ["model"] if a.model else [d.strip() for d in a.detector.split(",") if d.strip()]
    runs = []
    for name in names:
        res = _run(a, days, test_days, name)
        if res is None:
            return 1
        runs.append(res)
    from detector.detectors import KNNDetector

    knn, exact = _knn_rate()
    default = KNNDetector()
    print(f"kNN detector alone (8,192 queries, 192 features): {knn:,} records/s with the default bank ({default.bank} "
          f"of {default.max_bank} rows), {exact:,} with an exact search of a 20,000-row bank (x{knn / max(exact, 1):.1f})")
    for res in runs:
        res["knn_detector_records_per_s"], res["knn_exact_20000_records_per_s"] = knn, exact
        print(json.dumps(res))
    if a.out:
        import datetime as dt
        import subprocess

        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip() or None
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({
            "bench": "score", "commit": head, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "args": vars(a), "runs": runs}, indent=2))
        print(f"wrote {a.out}")
    return 0


def _run(a, days, test_days: list[str], detector: str) -> dict | None:
    """Pretrain a model with ``detector`` (or take ``--model``), run `graphsentry score`, time the stage."""
    import pyarrow as pa

    from ingest.readers import open_inputs
    from ingest.windows import parse_duration
    from training.cli import main as cli
    from training.evaluate import subsample
    from training.pretrain import TrainConfig, train_bundle

    with tempfile.TemporaryDirectory() as tmp:
        if a.model:
            from detector.bundle import load_bundle

            model, bundle, epoch_s, flows = Path(a.model), load_bundle(a.model), None, None
            print(f"pretraining skipped: scoring with {model}", flush=True)
        else:
            model = Path(tmp) / "model"
            table = subsample(pa.Table.from_batches(list(open_inputs([str(days[0])]))), a.train_records, 0)
            # one encoder (objective auto, the default, pretrains three): the per-epoch figure is one encoder's epoch
            cfg = TrainConfig(window=parse_duration(a.window), epochs=1, benign_only=True, seed=0,
                              objective="contrastive", detector=detector)
            t0 = time.perf_counter()
            bundle = train_bundle([table], cfg, out_dir=model, progress=False)
            train_s = time.perf_counter() - t0
            epoch_s = float(bundle.metrics.get("pretrain_seconds", train_s))
            flows = int(bundle.metrics.get("train_flows", table.num_rows))
            print(f"pretraining ({detector}): {flows} training flows, {epoch_s:.1f} s per epoch "
                  f"(whole train call {train_s:.1f} s) -> {epoch_s / max(flows, 1) * 800_000 / 60:.1f} min "
                  f"per epoch over 800k flows (goal < 5 min)", flush=True)

        t0, c0 = time.perf_counter(), time.process_time()
        n_read = sum(b.num_rows for b in open_inputs(test_days))
        read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
        out = Path(tmp) / "scores.parquet"
        t0, c0 = time.perf_counter(), time.process_time()
        rc = cli(["score", "--model", str(model), *test_days, "--out", str(out)])
        score_s, score_cpu = time.perf_counter() - t0, time.process_time() - c0
        detector = bundle.metrics.get("detector_selection", {}).get("chosen")
        stage = _stage(model, test_days) if rc == 0 else {}
    if rc != 0:
        print(f"graphsentry score failed with exit code {rc}")
        return None
    res = {
        "bench": "score", "days": [Path(d).name for d in test_days], "records": n_read,
        "read_records_per_s": round(n_read / read_s), "score_records_per_s": round(n_read / score_s),
        "ratio_score_vs_read": round(read_s / score_s, 4), "score_seconds": round(score_s, 1),
        "score_cpu_seconds": round(score_cpu, 1), "read_cpu_seconds": round(read_cpu, 2),
        "score_records_per_cpu_s": round(n_read / max(score_cpu, 1e-9)), "detector": detector,
        "detector_repr": repr(bundle.detector),
        "pretrain_flows": flows, "pretrain_seconds_per_epoch": None if epoch_s is None else round(epoch_s, 1),
        "pretrain_minutes_per_800k_epoch": None if epoch_s is None else round(epoch_s / max(flows, 1) * 800_000 / 60, 1),
        "peak_rss_mb": round(_peak_rss_mb()), "window": a.window if not a.model else (bundle.window or {}).get("size"),
        **stage,
    }
    print(f"score: {n_read} records in {score_s:.1f} s ({score_cpu:.1f} CPU-s) = {res['score_records_per_s']:,} "
          f"records/s, detector {detector} (reader alone {res['read_records_per_s']:,}/s; "
          f"ratio {res['ratio_score_vs_read']}); "
          f"peak RSS {res['peak_rss_mb']} MB (goal >= 100k records/s)")
    print(f"scoring stage alone (score_table on the read table, best of 2): {res['stage_records_per_s']:,} records/s "
          f"with the build/score overlap, {res['stage_serial_records_per_s']:,} without (x{res['stage_overlap_ratio']})",
          flush=True)
    print(f"  without the behaviour state and the technique channel (the scorer before them): "
          f"{res['stage_without_state_and_channel_records_per_s']:,} records/s (with them: "
          f"x{res['stage_ratio_vs_without_state_and_channel']} of that rate)", flush=True)
    if "stage_factored_ratio" in res:
        print(f"  kNN on plain flow rows instead of FactoredRows (endpoint blocks once per node): "
              f"{res['stage_plain_rows_records_per_s']:,} records/s (factored x{res['stage_factored_ratio']})", flush=True)
    return res


def _knn_rate(n: int = 8192) -> tuple[int, int]:
    """Records/s of ``KNNDetector.decision_function`` alone: the default bank, and an exact search of
    20,000 rows (the reference), 192 features (the LUFlow embedding width; the search costs the same
    whatever the values)."""
    import numpy as np

    from detector.detectors import KNNDetector

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 192)).astype(np.float32)
    Q = rng.normal(size=(n, 192)).astype(np.float32)
    rates = []
    for det in (KNNDetector().fit(X), KNNDetector(max_bank=20000, bank="random").fit(X)):
        t0 = time.perf_counter()
        det.decision_function(Q)
        rates.append(round(n / (time.perf_counter() - t0)))
    return rates[0], rates[1]


def _stage(model: Path, days: list[str]) -> dict:
    """``score_table`` alone on the already read input, with and without the build/score overlap
    (``StreamScorer.OVERLAP``), alternated, best of two each: the part of the command that the scorer owns."""
    import pyarrow as pa

    from detector.bundle import load_bundle
    from detector.scoring import StreamScorer, score_table
    from ingest.readers import open_inputs

    FACTORED = StreamScorer.FACTORED_DETECTORS
    bundle = load_bundle(model)
    channel = bundle.technique
    table = pa.Table.from_batches(list(open_inputs(days)))
    best = {True: float("inf"), False: float("inf"), "plain": float("inf"), "bare": float("inf")}
    factored = type(bundle.detector).__name__ in StreamScorer.FACTORED_DETECTORS
    runs = (True, False, "bare", "plain") if factored else (True, False, "bare")
    env = os.environ.get("GRAPHSENTRY_BEHAVIOUR")
    try:
        for mode in runs * 2:
            StreamScorer.OVERLAP = mode is not False
            if mode == "plain":  # the kNN searched on plain flow rows instead of FactoredRows
                StreamScorer.FACTORED_DETECTORS = ()
            if mode == "bare":   # the scorer without the behaviour state and the technique channel
                os.environ["GRAPHSENTRY_BEHAVIOUR"], bundle.technique = "0", None
            t0 = time.perf_counter()
            score_table(bundle, table)
            best[mode] = min(best[mode], time.perf_counter() - t0)
            StreamScorer.FACTORED_DETECTORS, bundle.technique = FACTORED, channel
            if env is None:
                os.environ.pop("GRAPHSENTRY_BEHAVIOUR", None)
            else:
                os.environ["GRAPHSENTRY_BEHAVIOUR"] = env
    finally:
        StreamScorer.OVERLAP, StreamScorer.FACTORED_DETECTORS, bundle.technique = True, FACTORED, channel
    n = table.num_rows
    res = {"stage_records_per_s": round(n / best[True]), "stage_serial_records_per_s": round(n / best[False]),
           "stage_overlap_ratio": round(best[False] / best[True], 2),
           "stage_without_state_and_channel_records_per_s": round(n / best["bare"]),
           "stage_ratio_vs_without_state_and_channel": round(best["bare"] / best[True], 3),
           "technique_channel": channel is not None}
    if factored:
        res["stage_plain_rows_records_per_s"] = round(n / best["plain"])
        res["stage_factored_ratio"] = round(best["plain"] / best[True], 2)
    return res


if __name__ == "__main__":
    sys.exit(main())

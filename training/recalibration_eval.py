"""What `graphsentry calibrate` does for a new device: IoT-23 leave-one-capture-out, time-ordered.

    python -m training.recalibration_eval [--out reports/recalibration] [--calib-frac 0.25] [--captures 42-1,20-1]

For each IoT-23 malware capture: train the model (the `ours` defaults of :mod:`training.eval_suites`) on the
benign flows of every other capture; cut the held-out capture in time: its earliest ``calib-frac`` of the
records (at least the 1,000 that a 1% target needs) recalibrate the threshold *without labels*, attacks
included, as a deployment would see them (``recalibrate(..., benign_only=False)``; ``--vetted``: on their
benign-labelled records only, i.e. traffic an analyst cleared); the later records are the test. Both
thresholds are applied to the same test scores (the model is otherwise unchanged), so AUROC/AUPRC do not
move; FPR, recall, precision and macro-F1 at the threshold do. Writes ``report.json`` and ``report.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.bundle import load_bundle
from detector.scoring import score_table
from training.eval_data import DATA, read
from training.eval_data import renumber as _renumber
from training.evaluate import _git_head, metrics
from training.pretrain import TrainConfig, train_bundle
from training.recalibrate import MIN_PER_TARGET, malicious_mask, recalibrate


def time_split(table: pa.Table, frac: float, min_records: int = 0,
               benign_only: bool = False) -> tuple[pa.Table, pa.Table]:
    """(earliest ``frac`` of the records by time, with at least ``min_records`` of them (benign-labelled
    ones when ``benign_only``); the rest), each in time order."""
    srt = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("row", "ascending")]))
    counted = ~malicious_mask(srt) if benign_only else np.ones(srt.num_rows, bool)
    reach = int(np.searchsorted(np.cumsum(counted), min_records)) + 1 if min_records else 0
    k = min(max(int(round(frac * srt.num_rows)), reach), srt.num_rows)
    return srt.slice(0, k), srt.slice(k)


def run_capture(test_name: str, tables: dict, cfg: TrainConfig, frac: float, work: Path, vetted: bool = False) -> dict:
    tr = _renumber(pa.concat_tables([t for n, t in tables.items() if n != test_name]))
    model = work / "model"
    train_bundle([tr], cfg, out_dir=model, progress=False)
    # at least what recalibrate() asks for (10 / target FPR records)
    calib, test = time_split(tables[test_name], frac, math.ceil(MIN_PER_TARGET / cfg.target_fpr), vetted)
    rec = recalibrate(model, calib, work / "recalibrated", benign_only=vetted)
    old, new = load_bundle(model), load_bundle(work / "recalibrated")
    scores = score_table(old, test).column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    labels = test.column("label").to_numpy(zero_copy_only=False)
    attacks = test.column("attack").to_pylist() if "attack" in test.column_names else [None] * test.num_rows
    cl = calib.column("label").to_numpy(zero_copy_only=False)
    return {
        "capture": test_name, "vetted": vetted, "calib_records": calib.num_rows, "calib_used": rec["used"],
        "calib_malicious": int((cl == 1).sum()),
        "test_records": test.num_rows, "test_malicious": int((labels == 1).sum()),
        "calib_span": [str(pc.min(calib.column("ts")).as_py()), str(pc.max(calib.column("ts")).as_py())],
        "test_span": [str(pc.min(test.column("ts")).as_py()), str(pc.max(test.column("ts")).as_py())],
        "detector": old.detector_name, "flow_parts": old.model.config.flow_parts,
        "threshold_trained": old.threshold, "threshold_recalibrated": new.threshold,
        "calib_flagged_share_before": rec["flagged_share_before"],
        "trained": metrics(labels, attacks, scores, old.threshold),
        "recalibrated": metrics(labels, attacks, scores, new.threshold),
    }


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def markdown(rep: dict) -> str:
    how = ("its benign-labelled records (vetted traffic)" if rep.get("vetted")
           else "all of its records (no labels, attacks included)")
    lines = [f"# Recalibration on a new device (IoT-23, time-ordered): the first {rep['calib_frac']:.0%} of the "
             f"held-out capture (at least 1,000 records) recalibrates on {how}; the rest is the test", "",
             f"code {rep['code']}; window {rep['window']} s, epochs {rep['epochs']}, seed {rep['seed']}. "
             "Same scores under both thresholds (AUROC/AUPRC unchanged).", "",
             "| capture | calib / test records (malicious) | detector | threshold trained → recalibrated | "
             "test FPR | test recall | test precision | test macro-F1 | test AUROC | test AUPRC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["captures"]:
        a, b = r["trained"], r["recalibrated"]
        lines.append(
            f"| {r['capture'].replace('-labeled.csv', '')} | {r['calib_records']} ({r['calib_malicious']}) / "
            f"{r['test_records']} ({r['test_malicious']}) | {r['flow_parts']} · {r['detector']} | "
            f"{r['threshold_trained']:.4g} → {r['threshold_recalibrated']:.4g} | "
            f"{_f(a['fpr'], 4)} → {_f(b['fpr'], 4)} | {_f(a['recall'])} → {_f(b['recall'])} | "
            f"{_f(a['precision'])} → {_f(b['precision'])} | {_f(a['macro_f1'])} → {_f(b['macro_f1'])} | "
            f"{_f(a['auroc'])} | {_f(a['auprc'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/recalibration")
    ap.add_argument("--calib-frac", type=float, default=0.25)
    ap.add_argument("--captures", default="", help="comma list of capture ids (e.g. 42-1,20-1); default: all four")
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vetted", action="store_true",
                    help="calibrate on the calibration part's benign-labelled records only (traffic an analyst "
                         "cleared) instead of all of it")
    a = ap.parse_args(argv)
    d = DATA / "iot23"
    files = sorted(d.glob("*.csv"))
    if not files:
        print(f"skipped: no IoT-23 captures under {d}")
        return 0
    tables = {f.name: read([f]) for f in files}
    want = [c for c in a.captures.split(",") if c]
    names = [n for n in tables if "Malware" in n and (not want or any(f"-{c}-" in n for c in want))]
    cfg = TrainConfig(window=a.window, epochs=a.epochs, benign_only=True, seed=a.seed)
    rep = {"calib_frac": a.calib_frac, "vetted": a.vetted, "window": a.window, "epochs": a.epochs, "seed": a.seed,
           "code": _git_head(), "captures": []}
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            rep["captures"].append(run_capture(name, tables, cfg, a.calib_frac, Path(tmp), a.vetted))
        print(markdown(rep).splitlines()[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    (out / "report.md").write_text(markdown(rep))
    print(markdown(rep), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation harness: time-ordered train/test, our model vs baselines and ablations, one report.

Protocol (see README.md (Model)):

* training inputs are earlier captures/days than (or other captures than) the test inputs;
  with ``benign_only`` (default) records labelled malicious are removed from training;
* inside the training data the latest ``val_frac`` of the windows are held back: their non-malicious
  flows calibrate every variant's alert threshold to the target FPR; together with the training
  inputs' labelled attacks (scored in context, never trained on) they form the validation set on
  which the encoder objective, the detector input and the detector are chosen
  (:func:`training.pretrain.select_flow_detector`); no test data is involved in any choice;
* every test record is scored exactly once (tumbling windows partition the records); records
  labelled background/outlier (2) or unlabelled are scored but left out of the metrics (counted);
* baselines run on the same split in the same run: IsolationForest on the preprocessed flow features
  (``iforest_raw``) and an Anomal-E-style encoder (E-GraphSAGE, no temporal part, no knowledge,
  Deep Graph Infomax, IsolationForest on edge embeddings; ``anomal_e``); ablations of our model
  switch off one part each.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from detector.calibration import calibrate_threshold
from detector.detectors import IForestDetector
from detector.runtime import torch_threads
from training.pretrain import TrainConfig, make_windows, prepare, train_bundle

log = logging.getLogger(__name__)

# The previous model (before the validation rule): issue embedding [z_u || z_v || e_uv], benign-only
# detector rule, calibration on the benign-only held-back windows. Kept as a variant ("what the
# validation protocol brings").
V0 = dict(objective="contrastive", flow_parts="src,dst,edge", detector="auto", validation="benign", val_context=False)

VARIANTS: dict[str, dict] = {
    "ours": {},
    "ours_v0": V0,
    "no_temporal": dict(temporal=False, use_time=False),
    "no_knowledge": dict(knowledge=False),
    "no_pretrain": dict(objective="none"),
    "contrastive_only": dict(objective="contrastive"),
    "fixed_weights": dict(objective="contrastive", weighting="fixed"),
    "dgi_ours": dict(objective="dgi"),
    # one detector forced (objective and input still picked on validation)
    "knn_only": dict(detector="knn"),
    "iforest_only": dict(detector="iforest"),
    "fusion_only": dict(detector="fusion"),
    # baseline as published: nothing of our selection or calibration context
    "anomal_e": dict(V0, objective="dgi", temporal=False, use_time=False, knowledge=False, detector="iforest"),
}
BASELINES = ("iforest_raw",)
DEFAULT_VARIANTS = ("ours", "ours_v0", "no_temporal", "no_knowledge", "no_pretrain", "anomal_e", "iforest_raw")


# -- metrics -------------------------------------------------------------------------------------

def metrics(labels: np.ndarray, attacks: list, scores: np.ndarray, threshold: float) -> dict:
    """AUROC, AUPRC, and at the calibrated threshold: recall, FPR, precision, macro-F1, per-class recall."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    lab = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    scored = ~np.isnan(s)
    m = ((lab == 0) | (lab == 1))
    y = (lab[m] == 1).astype(int)
    sm = np.where(np.isnan(s[m]), -np.inf, s[m])  # an unscored record is a miss, never an alert
    pred = (sm > threshold).astype(int)
    out: dict = {"n_eval": int(m.sum()), "n_malicious": int(y.sum()), "n_benign": int((y == 0).sum()),
                 "n_excluded_background_or_unlabelled": int((~m).sum()), "n_unscored": int((~scored).sum())}
    both = 0 < y.sum() < len(y)
    finite = np.where(np.isfinite(sm), sm, np.nanmin(s) - 1 if scored.any() else 0.0)
    out["auroc"] = float(roc_auc_score(y, finite)) if both else None
    out["auprc"] = float(average_precision_score(y, finite)) if both else None
    out["attack_prevalence"] = float(y.mean()) if len(y) else None
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    out["recall"] = tp / max(1, int(y.sum())) if y.sum() else None
    out["fpr"] = fp / max(1, int((y == 0).sum())) if (y == 0).sum() else None
    out["precision"] = tp / (tp + fp) if (tp + fp) else None
    out["macro_f1"] = float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)) if len(y) else None
    per: dict = {}
    att = np.asarray([a if a is not None else "" for a in attacks], dtype=object)[m]
    for a in sorted(set(att[y == 1])):
        sel = (y == 1) & (att == a)
        per[a or "(unnamed)"] = {"n": int(sel.sum()), "recall": float(pred[sel].mean())}
    out["per_class_recall"] = per
    return out


# -- scoring a whole test table from prepared graphs (same semantics as detector.scoring) -------

class TestGraphs:
    """Test windows built once per feature pipeline (fresh stream, event-time order)."""

    def __init__(self, pipeline, table: pa.Table, window: float) -> None:
        self.rows = table.column("row").to_numpy().astype(np.int64)
        self.order = np.argsort(self.rows, kind="stable")
        self.sorted_rows = self.rows[self.order]
        stream = pipeline.stream()
        self.graphs = [stream.build(w)[0] for w in make_windows(table, window)]
        self.raw_tables = None

    def positions(self, rows: np.ndarray) -> np.ndarray:
        return self.order[np.searchsorted(self.sorted_rows, rows)]

    @torch.no_grad()
    def score(self, bundle) -> np.ndarray:
        model = copy.deepcopy(bundle.model).eval()
        model.reset_state()
        out = np.full(len(self.rows), np.nan)
        seen = 0
        for d in self.graphs:
            _, _, flow = model.embed(d, update_state=True)
            pos = self.positions(d.edge_row.numpy().astype(np.int64))
            out[pos] = bundle.detector.decision_function(flow.numpy())
            seen += len(pos)
        if seen != len(self.rows):  # each test flow counted exactly once
            raise RuntimeError(f"scored {seen} edges for {len(self.rows)} test records")
        return out


# -- the harness -----------------------------------------------------------------------------------

def _iforest_raw(prep, test: pa.Table, cfg: TrainConfig) -> tuple[np.ndarray, float, dict]:
    pre = prep.pipeline.pre
    Xtr = pre.transform(pa.concat_tables([w.table for w in prep.train_w]))
    Xva = pre.transform(pa.concat_tables([w.table for w in prep.val_w]))
    det = IForestDetector(random_state=cfg.seed).fit(Xtr)
    cal = calibrate_threshold(det.decision_function(Xva), cfg.target_fpr)
    return det.decision_function(pre.transform(test)), cal.threshold, {"detector": "iforest",
                                                                      "val_flows": int(len(Xva))}


def evaluate_split(train: pa.Table, test: pa.Table, base: TrainConfig, variants=DEFAULT_VARIANTS,
                   name: str = "split", notes: str = "") -> dict:
    """Train every variant on ``train`` and score ``test``; returns the report dict (with raw scores)."""
    with torch_threads():
        return _evaluate_split(train, test, base, variants, name, notes)


def _evaluate_split(train, test, base, variants, name, notes) -> dict:
    t0 = time.perf_counter()
    labels = test.column("label").to_numpy(zero_copy_only=False).astype(float) if "label" in test.column_names \
        else np.full(test.num_rows, np.nan)
    labels = np.nan_to_num(labels, nan=-1).astype(int)
    attacks = test.column("attack").to_pylist() if "attack" in test.column_names else [None] * test.num_rows
    preps: dict = {}
    tests: dict = {}
    res: dict = {}
    scores: dict = {}
    for v in variants:
        tv = time.perf_counter()
        cfg = base if v == "iforest_raw" else replace(base, **VARIANTS[v])
        key = bool(cfg.knowledge)
        if key not in preps:
            preps[key] = prepare([train], cfg)
        prep = preps[key]
        if v == "iforest_raw":
            s, thr, info = _iforest_raw(prep, test, cfg)
        else:
            b = train_bundle(None, cfg, progress=False, prepared=prep)
            if key not in tests:
                tests[key] = TestGraphs(prep.pipeline, test, cfg.window)
            s, thr = tests[key].score(b), b.threshold
            info = {"detector": b.detector_name, "flow_parts": b.model.config.flow_parts,
                    "val_attacks": b.metrics.get("val_attacks"), "val_flows": b.metrics["val_flows"],
                    "objective": b.metrics.get("objective"),
                    "pretrain_seconds": b.metrics["pretrain_seconds"], "epochs": b.metrics["epochs"],
                    "detector_selection": b.metrics["detector_selection"], "history": b.metrics["history"],
                    "knowledge": prep.pipeline.cfg.knowledge}
        r = metrics(labels, attacks, s, thr)
        r.update(info)
        r["threshold"] = float(thr)
        r["seconds"] = round(time.perf_counter() - tv, 1)
        res[v] = r
        scores[v] = s
        log.info("%s %s: auroc=%s auprc=%s f1=%s", name, v, r["auroc"], r["auprc"], r["macro_f1"])
        print(f"[{name}] {v}: AUROC={_f(r['auroc'])} AUPRC={_f(r['auprc'])} macroF1={_f(r['macro_f1'])} "
              f"recall={_f(r['recall'])} FPR={_f(r['fpr'])} ({r['seconds']}s)", flush=True)
    any_prep = next(iter(preps.values()))
    report = {
        "name": name, "notes": notes, "config": asdict(base),
        "protocol": {"benign_only": base.benign_only, "removed_malicious_from_training": any_prep.removed,
                     "train_records": any_prep.records_in, "train_windows": len(any_prep.train_w),
                     "calibration_windows": len(any_prep.val_w),
                     "calibration_flows": int(sum(w.table.num_rows for w in any_prep.val_w)),
                     "test_records": int(test.num_rows), "target_fpr": base.target_fpr,
                     "train_span": _span(train), "test_span": _span(test)},
        "results": res, "seconds": round(time.perf_counter() - t0, 1), "code_version": _git_head(),
        "knowledge_version": getattr(any_prep.pipeline, "kg_version", None),
        "knowledge_hash": getattr(any_prep.pipeline, "kg_hash", None),
    }
    report["_scores"] = scores
    report["_labels"] = labels
    return report


def _git_head() -> str | None:
    """Commit of the code that produced a report (None outside a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _span(t: pa.Table) -> list:
    ts = t.column("ts")
    return [str(pc.min(ts).as_py()), str(pc.max(ts).as_py())]


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


# -- report writing ----------------------------------------------------------------------------------

def write_report(report: dict, out_dir: str | Path, curves: bool = True) -> Path:
    """report.json, report.md and (optionally) roc.png / pr.png into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    scores, labels = report.pop("_scores", {}), report.pop("_labels", None)
    (d / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (d / "report.md").write_text(markdown(report))
    if curves and labels is not None and scores:
        plot_curves(labels, scores, d, report["name"])
    return d


def markdown(report: dict) -> str:
    p = report["protocol"]
    lines = [f"# Evaluation: {report['name']}", "",
             report.get("notes") or "",
             "",
             f"- training records: {p['train_records']} (span {p['train_span'][0]} .. {p['train_span'][1]}); "
             f"benign-only: {p['benign_only']} (removed {p['removed_malicious_from_training']} malicious-labelled)",
             f"- calibration (held-back latest training windows): {p['calibration_windows']} windows, "
             f"{p['calibration_flows']} flows; target FPR {p['target_fpr']}",
             f"- test records: {p['test_records']} (span {p['test_span'][0]} .. {p['test_span'][1]}), "
             "each scored once; background/unlabelled excluded from metrics",
             f"- window {report['config']['window']} s, epochs {report['config']['epochs']}, "
             f"hidden {report['config']['hidden']}, seed {report['config']['seed']}; run took {report['seconds']} s",
             f"- code {report.get('code_version')}, knowledge artifact {report.get('knowledge_version')} "
             f"({report.get('knowledge_hash')})",
             "",
             "| variant | detector | AUROC | AUPRC | macro-F1 | recall | FPR | precision |",
             "|---|---|---|---|---|---|---|---|"]
    for v, r in report["results"].items():
        lines.append(f"| {v} | {r.get('detector')} | {_f(r['auroc'])} | {_f(r['auprc'])} | {_f(r['macro_f1'])} | "
                     f"{_f(r['recall'])} | {_f(r['fpr'], 4)} | {_f(r['precision'])} |")
    first = next(iter(report["results"].values()))
    lines += ["", f"Evaluated flows: {first['n_eval']} ({first['n_malicious']} malicious, {first['n_benign']} benign; "
              f"{first['n_excluded_background_or_unlabelled']} background/unlabelled excluded).", ""]
    classes = sorted({c for r in report["results"].values() for c in r["per_class_recall"]})
    if classes:
        lines += ["Per attack class recall at the calibrated threshold:", "",
                  "| variant | " + " | ".join(f"{c} (n={first['per_class_recall'].get(c, {}).get('n', '?')})"
                                             for c in classes) + " |",
                  "|---|" + "---|" * len(classes)]
        for v, r in report["results"].items():
            lines.append(f"| {v} | " + " | ".join(_f(r["per_class_recall"].get(c, {}).get("recall")) for c in classes)
                         + " |")
    return "\n".join(lines) + "\n"


def plot_curves(labels: np.ndarray, scores: dict, d: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    m = (labels == 0) | (labels == 1)
    y = labels[m] == 1
    if y.all() or not y.any():
        return
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(4.5, 4), dpi=80)
        for v, s in scores.items():
            sv = np.nan_to_num(np.asarray(s)[m], nan=-1e9)
            if kind == "roc":
                x_, y_, _ = roc_curve(y, sv)
            else:
                y_, x_, _ = precision_recall_curve(y, sv)
            ax.plot(x_, y_, label=v, lw=1)
        ax.set_xlabel("FPR" if kind == "roc" else "recall")
        ax.set_ylabel("TPR" if kind == "roc" else "precision")
        ax.set_title(f"{title} ({kind.upper()})", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(d / f"{kind}.png")
        plt.close(fig)


def subsample(table: pa.Table, n: int, seed: int = 0) -> pa.Table:
    """Uniform random subsample of ``n`` records, kept in input order (``n <= 0``: all)."""
    if n <= 0 or table.num_rows <= n:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, n, replace=False))
    return table.take(pa.array(idx))

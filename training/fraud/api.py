"""`train` and `evaluate` for transaction streams (plain functions the CLI wires in)."""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from detector.fraud.bundle import FraudBundle
from detector.fraud.model import FraudModelConfig
from ingest.fraud.data import read_transactions
from ingest.fraud.graph import DAY
from training.fraud.loop import WindowFeat, calibrate_threshold, feature_pass, fit_select_refit, predict
from training.fraud.metrics import fraud_metrics
from training.report_meta import report_meta

log = logging.getLogger(__name__)

WARMUP_DAYS = 30  # history the 30-day features need before a day's features are complete


def _fingerprint(table) -> dict:
    ts = table.column("ts")
    return {"rows": table.num_rows, "ts_min": str(ts[0]) if table.num_rows else None,
            "ts_max": str(ts[-1]) if table.num_rows else None}


def train(inputs: list[str], out_dir: str, *, epochs: int = 15, window_s: float = 86400.0, seed: int = 0,
          hidden: int = 64, layers: int = 1, use_graph: bool = True, lam: float = 0.2,
          label_delay_days: int = 7, val_days: int = 3, warmup_days: int | None = None,
          alert_rate: float = 0.01, lr: float = 2e-3, threads: int = 1, refit: bool = True,
          progress: bool = False) -> dict:
    """Train a FraudBundle on transaction inputs and save it to ``out_dir``.

    Label latency: training happens "now" = the last timestamp of the inputs; only
    labels with ``ts + label_delay <= now`` are used. The last ``val_days`` of the
    labelled span are validation (model selection by AP; threshold = score quantile
    at ``alert_rate``, no labels). Transactions whose labels are not known yet feed
    only the contrastive objective. The first ``warmup_days`` (default: 30, or a
    third of the span when shorter) only build history.
    """
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    delay_s = label_delay_days * DAY
    table = read_transactions([str(p) for p in inputs])
    if table.num_rows == 0:
        raise ValueError(f"no transactions in {inputs}")
    wfs, builder = feature_pass(table, window_s, delay_s)
    now = max(float(w.feats.ts.max()) for w in wfs)
    first = min(float(w.feats.ts.min()) for w in wfs)
    span_days = (now - first) / DAY
    warm = warmup_days if warmup_days is not None else min(WARMUP_DAYS, span_days / 3)
    usable = [w for w in wfs if w.end > first + warm * DAY]
    label_horizon = now - delay_s
    labelled = [w for w in usable if w.end <= label_horizon]
    unlabeled = [w for w in usable if w.end > label_horizon]
    if not labelled:
        raise ValueError(f"no window has known labels: the inputs span {span_days:.1f} days, "
                         f"need more than label delay {label_delay_days} d + warm-up {warm:.1f} d")
    vcut = labelled[-1].end - val_days * DAY
    fit_w = [w for w in labelled if w.end <= vcut]
    val_w = [w for w in labelled if w.end > vcut]
    if not fit_w:  # too short for a validation split: select on training windows
        fit_w, val_w = labelled, []
    cfg = FraudModelConfig(hidden=hidden, layers=layers, use_graph=use_graph)
    model, info = fit_select_refit(fit_w, val_w, unlabeled, refit=refit, now=now, label_delay_s=delay_s, cfg=cfg,
                                   epochs=epochs, seed=seed, lam=lam, lr=lr, progress=progress)
    # Threshold on the validation period (in-sample after a refit: the alert rate there is a
    # little optimistic; the rule still uses no labels).
    cal = val_w or fit_w
    threshold = calibrate_threshold(predict(model, [w.graph() for w in cal]), alert_rate)
    config = {
        "kind": "transactions", "window_s": float(window_s), "label_delay_s": delay_s, "threshold": threshold,
        "threshold_rule": f"quantile 1-{alert_rate} of validation-period scores (target alert rate {alert_rate}; no labels)",
        "alert_rate": alert_rate, "seed": seed, "epochs": epochs, "lam": lam,
        "training": {"fit_windows": len(fit_w), "val_windows": len(val_w), "unlabeled_windows": len(unlabeled),
                     "best_val_ap": info["best_val_ap"], "history": info["history"],
                     "seconds": time.perf_counter() - t0},
        "data": _fingerprint(table),
    }
    bundle = FraudBundle(model=model, config=config, builder_state=builder.state_dict())
    bundle.save(out_dir)
    return {"out_dir": str(out_dir), "threshold": threshold, "best_val_ap": info["best_val_ap"],
            "epochs_run": len(info["history"]), "seconds": time.perf_counter() - t0,
            "transactions": table.num_rows}


# --------------------------------------------------------------------- evaluate
def _stack(ws: list[WindowFeat]):
    f = [w.feats for w in ws]
    return (np.concatenate([x.handbook for x in f]), np.concatenate([w.label for w in ws]),
            np.concatenate([w.day for w in ws]), np.concatenate([x.cust for x in f]))


@torch.no_grad()
def _embed(model, w: WindowFeat) -> np.ndarray:
    """Learned transaction embeddings z [E, hidden] of one window (eval mode)."""
    model.eval()
    return model(w.graph())[1].numpy()


def _baselines(names: tuple[str, ...], seed: int, rf_jobs: int = 2) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    make = {
        "logistic_regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)),
        "random_forest": lambda: RandomForestClassifier(n_estimators=100, max_depth=20, n_jobs=rf_jobs, random_state=seed),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=False,
                                                                    random_state=seed),
    }
    bad = [n for n in names if n not in make]
    if bad:
        raise ValueError(f"unknown baselines {bad}; known: {sorted(make)}")
    return {n: make[n] for n in names}


def evaluate(inputs: list[str], report_dir: str, *, folds: int = 3, train_days: int = 14, delay_days: int = 7,
             test_days: int = 7, val_days: int = 3, window_s: float = 86400.0, epochs: int = 15, hidden: int = 64,
             layers: int = 1, lam: float = 0.2, seed: int = 0, alert_rate: float = 0.01, top_k: int = 100,
             baselines: tuple[str, ...] = ("logistic_regression", "random_forest", "gradient_boosting"),
             ablations: tuple[str, ...] = ("no_graph", "no_contrastive"), lr: float = 2e-3, threads: int = 1,
             only_folds: tuple[int, ...] | None = None, rf_jobs: int = 2, include_ours: bool = True, refit: bool = True,
             extras: tuple[str, ...] = (),
             progress: bool = True) -> dict:
    """Fraud Detection Handbook protocol with rolling folds; writes report.json and report.md.

    Fold f: train days [s, s+train_days), delay [.., +delay_days), test [.., +test_days);
    the last fold's test ends on the last full day of the data, earlier folds step back
    by ``train_days + delay_days``. Everything is "trained at the start of the test period":
    labels used = those known then (``ts + delay <= test start``). Test transactions of
    customers already known as defrauded (fraud labels known before that test day) are
    removed, as in the handbook. All models (ours, ablations, baselines) see the same split;
    every threshold is the (1 - alert_rate) quantile of that model's delay-period scores.
    """
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    delay_s = delay_days * DAY
    table = read_transactions([str(p) for p in inputs])
    wfs, _ = feature_pass(table, window_s, delay_s)
    by_day: dict[int, list[WindowFeat]] = {}
    for w in wfs:
        by_day.setdefault(int(w.start // DAY), []).append(w)
    days = sorted(by_day)
    last_full = days[-1] if len(by_day[days[-1]]) and by_day[days[-1]][-1].end >= (days[-1] + 1) * DAY - 1 else days[-1] - 1
    stride = train_days + delay_days
    fold_defs = []
    for f in range(folds):
        test0 = last_full + 1 - test_days - stride * (folds - 1 - f)
        train0 = test0 - delay_days - train_days
        if train0 < days[0] + WARMUP_DAYS:
            log.warning("fold %d would start training on day %d, before the %d-day warm-up: skipped", f, train0, WARMUP_DAYS)
            continue
        fold_defs.append((train0, test0))
    if not fold_defs:
        raise ValueError("the data is too short for even one fold of the protocol")
    fold_reports = []
    for fi, (train0, test0) in enumerate(fold_defs):
        if only_folds is not None and fi not in only_folds:
            continue
        trd = list(range(train0, train0 + train_days))
        dld = list(range(train0 + train_days, test0))
        ted = list(range(test0, test0 + test_days))
        pick = lambda ds: [w for d in ds for w in by_day.get(d, [])]  # noqa: E731
        tr_w, dl_w, te_w = pick(trd), pick(dld), pick(ted)
        now = test0 * DAY
        # Test set (handbook): drop customers whose fraud is known before the test day.
        Xte, yte, dte, cte = _stack(te_w)
        Xtr, ytr, dtr, ctr = _stack(tr_w)
        Xdl, ydl, ddl, cdl = _stack(dl_w)
        keep = np.ones(len(yte), bool)
        all_d = np.concatenate([dtr, ddl])
        all_c = np.concatenate([ctr, cdl])
        all_y = np.concatenate([ytr, ydl])
        for d in ted:
            known = np.unique(all_c[(all_y == 1) & (all_d <= d - delay_days - 1)])
            m = dte == d
            keep[m] = ~np.isin(cte[m], known)
        info = {"fold": fi, "train_days": [trd[0], trd[-1]], "delay_days": [dld[0], dld[-1]],
                "test_days": [ted[0], ted[-1]], "train_tx": int(len(ytr)), "train_frauds": int((ytr == 1).sum()),
                "test_tx": int(keep.sum()), "test_frauds": int((yte[keep] == 1).sum()),
                "test_removed_known_customers_tx": int((~keep).sum()), "models": {}}
        if progress:
            print(f"fold {fi}: train days {trd[0]}-{trd[-1]}, delay {dld[0]}-{dld[-1]}, test {ted[0]}-{ted[-1]}; "
                  f"{info['test_tx']} test tx, {info['test_frauds']} frauds", flush=True)
        assert (ytr >= 0).all() and np.all(np.concatenate([w.feats.ts for w in tr_w]) + delay_s <= now)
        # --- our model and its ablations
        fit_days = trd[:-val_days] if val_days else trd
        fit_w = pick(fit_days)
        val_w = pick(trd[len(fit_days):])
        variants = {"ours": dict(use_graph=True, lam=lam)} if include_ours else {}
        if "no_graph" in ablations:
            variants["ours_no_graph"] = dict(use_graph=False, lam=lam)
        if "no_contrastive" in ablations:
            variants["ours_no_contrastive"] = dict(use_graph=True, lam=0.0)
        te_graphs = [w.graph() for w in te_w]
        dl_graphs = [w.graph() for w in dl_w]
        for name, v in variants.items():
            cfg = FraudModelConfig(hidden=hidden, layers=layers, use_graph=v["use_graph"])
            t0 = time.perf_counter()
            model, tinfo = fit_select_refit(fit_w, val_w, dl_w, refit=refit, now=now, label_delay_s=delay_s, cfg=cfg,
                                            epochs=epochs, seed=seed, lam=v["lam"], lr=lr)
            fit_s = time.perf_counter() - t0
            thr = calibrate_threshold(predict(model, dl_graphs), alert_rate)
            s = predict(model, te_graphs)
            m = fraud_metrics(dte[keep], cte[keep], yte[keep], s[keep], thr, top_k)
            m.update({"fit_seconds": fit_s, "epochs_run": len(tinfo["history"]), "best_val_ap": tinfo["best_val_ap"],
                      "refit_epochs": tinfo.get("refit_epochs")})
            info["models"][name] = m
            if progress:
                print(f"  {name:22s} AUC={m['auc_roc']:.4f} AP={m['average_precision']:.4f} "
                      f"CP@{top_k}={m[f'card_precision@{top_k}']:.4f} ({fit_s:.0f}s)", flush=True)
        # --- baselines on the handbook's 15 features, same split
        for name, make in _baselines(tuple(baselines), seed, rf_jobs).items():
            t0 = time.perf_counter()
            clf = make().fit(Xtr, ytr)
            fit_s = time.perf_counter() - t0
            thr = calibrate_threshold(clf.predict_proba(Xdl)[:, 1], alert_rate)
            s = clf.predict_proba(Xte)[:, 1]
            m = fraud_metrics(dte[keep], cte[keep], yte[keep], s[keep], thr, top_k)
            m["fit_seconds"] = fit_s
            info["models"][name] = m
            if progress:
                print(f"  {name:22s} AUC={m['auc_roc']:.4f} AP={m['average_precision']:.4f} "
                      f"CP@{top_k}={m[f'card_precision@{top_k}']:.4f} ({fit_s:.0f}s)", flush=True)
        # --- extras: is it our features or the learned graph representation? (same split, same RF)
        for extra in extras:
            if extra not in ("rf_edge21", "ours_rf_head"):
                raise ValueError(f"unknown extra {extra!r}; known: rf_edge21, ours_rf_head")
            t0 = time.perf_counter()
            feats = {k: [w.feats.edge for w in ws] for k, ws in (("tr", tr_w), ("dl", dl_w), ("te", te_w))}
            if extra == "ours_rf_head":
                cfg = FraudModelConfig(hidden=hidden, layers=layers, use_graph=True)
                model, _ = fit_select_refit(fit_w, val_w, dl_w, refit=refit, now=now, label_delay_s=delay_s, cfg=cfg,
                                            epochs=epochs, seed=seed, lam=lam, lr=lr)
                for k, ws in (("tr", tr_w), ("dl", dl_w), ("te", te_w)):
                    feats[k] = [np.concatenate([w.feats.edge, _embed(model, w)], axis=1) for w in ws]
            A = {k: np.concatenate(v) for k, v in feats.items()}
            clf = _baselines(("random_forest",), seed, rf_jobs)["random_forest"]().fit(A["tr"], ytr)
            fit_s = time.perf_counter() - t0
            thr = calibrate_threshold(clf.predict_proba(A["dl"])[:, 1], alert_rate)
            s = clf.predict_proba(A["te"])[:, 1]
            m = fraud_metrics(dte[keep], cte[keep], yte[keep], s[keep], thr, top_k)
            m["fit_seconds"] = fit_s
            info["models"][extra] = m
            if progress:
                print(f"  {extra:22s} AUC={m['auc_roc']:.4f} AP={m['average_precision']:.4f} "
                      f"CP@{top_k}={m[f'card_precision@{top_k}']:.4f} ({fit_s:.0f}s)", flush=True)
        fold_reports.append(info)
    summary = summarize(fold_reports, top_k)
    report = {
        "protocol": {"train_days": train_days, "delay_days": delay_days, "test_days": test_days, "val_days": val_days,
                     "window_s": window_s, "folds": len(fold_reports), "label_delay_days": delay_days,
                     "alert_rate": alert_rate, "top_k": top_k, "epochs": epochs, "hidden": hidden, "layers": layers,
                     "lam": lam, "seed": seed, "refit": refit},
        "inputs": [str(p) for p in inputs], "data": _fingerprint(table), "folds": fold_reports, "summary": summary,
        "seconds": time.perf_counter() - t_start, "host": {"python": platform.python_version(), "machine": platform.node(), "cpus": os.cpu_count(),
                                                             "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.update(report_meta())  # commit, date and cores of the code that measured
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(render_markdown(report))
    return report


def summarize(fold_reports: list[dict], top_k: int = 100) -> dict:
    """Mean and std over folds of each model's metrics."""
    keys = ["auc_roc", "average_precision", f"card_precision@{top_k}", "precision_at_threshold",
            "recall_at_threshold", "alert_rate"]
    names: list[str] = []
    for fr in fold_reports:
        names += [n for n in fr["models"] if n not in names]
    summary = {}
    for name in names:
        summary[name] = {}
        for k in keys:
            vals = [fr["models"][name][k] for fr in fold_reports if name in fr["models"]]
            summary[name][k] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "folds": len(vals)}
    return summary


def merge_reports(report_jsons: list[str], report_dir: str) -> dict:
    """Join reports of single folds (run as separate processes) into one report.json/report.md."""
    reps = [json.loads(Path(p).read_text()) for p in report_jsons]
    by_test: dict[int, dict] = {}
    for r in reps:  # the same fold may come from several processes (one per model group)
        for fr in r["folds"]:
            cur = by_test.setdefault(fr["test_days"][0], dict(fr, models={}))
            cur["models"].update(fr["models"])
    order = ["ours", "ours_no_graph", "ours_no_contrastive", "logistic_regression", "random_forest", "gradient_boosting",
             "rf_edge21", "ours_rf_head"]
    folds = []
    for k in sorted(by_test):
        fr = by_test[k]
        fr["models"] = dict(sorted(fr["models"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
        folds.append(fr)
    rep = dict(reps[0])
    rep["folds"] = folds
    rep["protocol"] = dict(rep["protocol"], folds=len(folds))
    rep["summary"] = summarize(folds, rep["protocol"]["top_k"])
    rep["seconds"] = max(r["seconds"] for r in reps)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep.update(report_meta())
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=float))
    (out / "report.md").write_text(render_markdown(rep))
    return rep


def render_markdown(report: dict) -> str:
    """Tables of the summary (mean ± std over folds) and per fold."""
    p = report["protocol"]
    k = f"card_precision@{p['top_k']}"
    lines = ["# Fraud detection evaluation (Fraud Detection Handbook protocol)", "",
             f"Inputs: {', '.join(report['inputs'])} ({report['data']['rows']} transactions). "
             f"{p['folds']} rolling folds: {p['train_days']} training days (last {p['val_days']} for model selection "
             f"of the neural models), {p['delay_days']} delay days, {p['test_days']} test days. Labels known "
             f"{p['label_delay_days']} days after the transaction; thresholds = score quantile at alert rate "
             f"{p['alert_rate']} on the delay period (no labels). Test excludes customers already known as "
             f"defrauded. Window {p['window_s']:.0f} s, hidden {p['hidden']}, epochs <= {p['epochs']}, seed {p['seed']}"
             + ("; neural models refitted on all training days for the validation-selected epoch count." if p.get("refit") else ".")
             , "",
             f"| model | AUC-ROC | average precision | {k} | precision@thr | recall@thr |", "|---|---|---|---|---|---|"]
    for name, s in report["summary"].items():
        f = lambda key, s=s: f"{s[key]['mean']:.4f} ± {s[key]['std']:.4f}"  # noqa: E731
        lines.append(f"| {name} | {f('auc_roc')} | {f('average_precision')} | {f(k)} | "
                     f"{f('precision_at_threshold')} | {f('recall_at_threshold')} |")
    lines += ["", "## Per fold", "", f"| fold | test days | test tx / frauds | model | AUC-ROC | AP | {k} |",
              "|---|---|---|---|---|---|---|"]
    for fr in report["folds"]:
        for name, m in fr["models"].items():
            lines.append(f"| {fr['fold']} | {fr['test_days'][0]}–{fr['test_days'][1]} | {fr['test_tx']} / "
                         f"{fr['test_frauds']} | {name} | {m['auc_roc']:.4f} | {m['average_precision']:.4f} | {m[k]:.4f} |")
    lines += ["", f"Total run time {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"

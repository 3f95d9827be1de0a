"""Grace-period calibration on a new network (issue 17, section 2): trained vs plain vs robust thresholds.

    python -m training.grace_eval [--out reports/grace] [--grace-frac 0.25] [--captures 34-1,8-1] [--cache DIR]

Cases: every IoT-23 capture held out in turn (the model is trained benign-only, the `ours` defaults of
:mod:`training.eval_suites`, on the benign flows of the *other* IoT-23 captures), and Stratosphere 008 -> 010
(trained on 008, benign-only). The held-out capture is scored once, in event-time order; its earliest
``grace-frac`` of the records (at least 1,000, at most half the capture) is the grace period, whose *labels are
never read* by the calibrators; the later records are the test. Three thresholds are applied to the same test
scores, window by window in event time as the daemon does (alerts of a window decided with the threshold in
force (grace records: the trained one), then the window feeds the calibrator's drift tracking):

(a) ``trained``: the model's stored threshold; (b) ``quantile``: plain conformal 1 - target_fpr quantile of the
grace scores (:class:`detector.grace.GraceCalibrator` ``method="quantile"``); (c) ``robust``: entity-trimmed
quantile with bounded drift (``method="robust"``, its defaults; entity ``src_ip|dst_port/proto``).

Reported: test benign FPR, attack recall and precision for each; grace contamination (from the labels, *after*
the fact, for the reader only). Writes ``report.json`` and ``report.md`` under ``--out``. ``--cache`` keeps the
scores of each case as ``.npz`` so that the calibrators can be re-run without retraining.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.grace import GraceCalibrator, flow_entities

METHODS = ("trained", "quantile", "robust")


def _cases(want: list[str]):
    from training.eval_data import DATA, read
    from training.eval_data import renumber as _renumber

    d = DATA / "iot23"
    files = sorted(d.glob("*.csv"))
    tables = {f.name.replace("-labeled.csv", ""): read([f]) for f in files}
    for name in tables:
        if want and not any(name.endswith(f"-{c}") for c in want):
            continue
        train = _renumber(pa.concat_tables([t for n, t in tables.items() if n != name]))
        yield f"IoT-23 {name}", train, tables[name]
    s = DATA / "stratosphere"
    if (s / "010-zeek-mixed.conn.log.labeled").exists() and (not want or "strat" in want):
        yield ("Stratosphere 008 -> 010", read([s / "008-zeek-mixed.conn.log.labeled"]),
               read([s / "010-zeek-mixed.conn.log.labeled"]))


def _score_case(name: str, train: pa.Table, test: pa.Table, cfg, cache: Path | None) -> dict:
    """Scores of the held-out capture in event-time order, with what the calibrators need."""
    from detector.bundle import load_bundle
    from detector.scoring import score_table
    from training.pretrain import train_bundle

    key = None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        key = cache / (name.replace(" ", "_").replace(">", "") + f"-w{cfg.window:g}-e{cfg.epochs}-s{cfg.seed}.npz")
        if key.exists():
            z = np.load(key, allow_pickle=False)
            return {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_bundle([train], cfg, out_dir=Path(tmp) / "m", progress=False)
        b = load_bundle(Path(tmp) / "m")
        out = score_table(b, test)
        info = {"threshold": float(b.threshold), "target_fpr": float(b.calibration.target_fpr),
                "detector": str(b.detector_name), "window": float((b.window or {}).get("size", cfg.window))}
    order = np.lexsort((test.column("row").to_numpy(), test.column("ts").cast(pa.int64()).to_numpy()))
    srt = test.take(pa.array(order))
    o = out.take(pa.array(order))
    z = {
        "score": o.column("score").to_numpy(zero_copy_only=False).astype(np.float64),
        "ts": srt.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6,
        "label": pc.fill_null(srt.column("label"), -1).to_numpy(zero_copy_only=False).astype(np.int64),
        "entity": flow_entities(srt).astype(str),
        "attack": np.array([a or "" for a in (srt.column("attack").to_pylist() if "attack" in srt.column_names
                                              else [None] * srt.num_rows)], dtype=str),
        "info": np.array(json.dumps(info)), "train_s": np.array(time.perf_counter() - t0),
    }
    if key is not None:
        np.savez_compressed(key, **z)
    return z


def grace_alerts(scores: np.ndarray, ts: np.ndarray, ent: np.ndarray, threshold: float, target_fpr: float,
                 window: float, n_grace: int, method: str = "robust") -> tuple[np.ndarray, GraceCalibrator]:
    """Alerts of records given in event-time order, decided window by window as the daemon does (grace
    records: the trained ``threshold``; later ones: the threshold in force), and the calibrator after the run."""
    cal = GraceCalibrator(threshold, target_fpr, grace_records=n_grace, method=method)
    s = np.where(np.isnan(scores), -np.inf, scores)
    alerts = np.zeros(s.size, dtype=bool)
    bucket = np.floor(ts / window)
    edges = np.flatnonzero(np.diff(bucket)) + 1
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, s.size]):
        alerts[lo:hi] = cal.process(s[lo:hi], ent[lo:hi], ts[lo:hi])
    return alerts, cal


def grace_size(n: int, frac: float = 0.25) -> int:
    """Records in the grace period: ``frac`` of them, at least 1,000, at most half."""
    return min(max(int(round(frac * n)), 1000), n // 2)


def after_grace(scores, ts, ent, labels, src, dst, threshold: float, target_fpr: float, window: float,
                frac: float = 0.25, method: str = "robust") -> dict:
    """Operating point after an unlabelled grace period on the earliest ``frac`` of the records (inputs in
    event-time order; labels only measure): benign FPR, recall and attack episodes on the later records."""
    from training.episodes import episode_metrics

    n = len(scores)
    n_grace = grace_size(n, frac)
    alerts, cal = grace_alerts(np.asarray(scores, np.float64), ts, ent, threshold, target_fpr, window, n_grace, method)
    after = np.arange(n) >= n_grace
    r = _rates(alerts[after], labels[after])
    ep = episode_metrics(ts[after], src[after], dst[after], labels[after], alerts[after])
    r.update({"method": method, "grace_records": int(n_grace), "threshold": float(cal.threshold_),
              "n_episodes": ep["n_episodes"], "n_detected": ep["n_detected"], "episode_recall": ep["episode_recall"],
              "ttfa_median_s": ep["ttfa_median_s"]})
    return r


def _apply(method: str, z: dict, info: dict, n_grace: int) -> tuple[np.ndarray, GraceCalibrator]:
    """Alerts of every record (grace ones with the trained threshold) and the calibrator after the run."""
    return grace_alerts(z["score"], z["ts"], z["entity"], info["threshold"], info["target_fpr"], info["window"],
                        n_grace, method)


def _rates(alerts: np.ndarray, label: np.ndarray) -> dict:
    ben, mal = label == 0, label == 1
    tp, fp = int((alerts & mal).sum()), int((alerts & ben).sum())
    return {"fpr": fp / ben.sum() if ben.sum() else None, "recall": tp / mal.sum() if mal.sum() else None,
            "precision": tp / (tp + fp) if tp + fp else None, "alerts": int(alerts.sum())}


def run_case(name: str, z: dict, frac: float) -> dict:
    info = json.loads(str(z["info"]))
    n = int(z["score"].size)
    n_grace = grace_size(n, frac)
    label = z["label"]
    test = np.arange(n) >= n_grace
    rep = {"case": name, "records": n, "grace_records": n_grace, "test_records": int(test.sum()),
           "grace_malicious_share": float((label[:n_grace] == 1).mean()),
           "test_malicious": int((label[test] == 1).sum()), "test_benign": int((label[test] == 0).sum()),
           "grace_hours": float((z["ts"][n_grace - 1] - z["ts"][0]) / 3600.0),
           "detector": info["detector"], "target_fpr": info["target_fpr"], "train_s": float(z["train_s"]),
           "methods": {}}
    for m in METHODS:
        alerts, cal = _apply(m, z, info, n_grace)
        r = _rates(alerts[test], label[test])
        r.update({"threshold_after_grace": cal.calibrated_threshold_ if m != "trained" else info["threshold"],
                  "threshold_final": cal.threshold_, "trimmed_entities": cal.trimmed_entities_,
                  "cut_kind": cal.cut_kind_, "trim_skipped": cal.trim_skipped_})
        rep["methods"][m] = r
    rep["threshold_trained"] = info["threshold"]
    return rep


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def verdict(r: dict) -> str:
    """Robust vs the better of the other two, in words (a loss is called a loss)."""
    tgt = r["target_fpr"]
    rb = r["methods"]["robust"]
    ok_fpr = rb["fpr"] is None or rb["fpr"] <= 2 * tgt
    rec = [r["methods"][m]["recall"] for m in METHODS if r["methods"][m]["recall"] is not None]
    ok_rec = rb["recall"] is None or rb["recall"] >= max(rec) - 0.05
    if ok_fpr and ok_rec:
        return "robust OK (FPR within 2x target, recall within 0.05 of the best)"
    parts = []
    if not ok_fpr:
        parts.append(f"FPR {rb['fpr']:.3f} > 2x target")
    if not ok_rec:
        parts.append(f"recall {rb['recall']:.3f} below best {max(rec):.3f}")
    return "robust LOSES: " + ", ".join(parts)


def markdown(rep: dict) -> str:
    lines = [
        "# Grace-period calibration on a new network: trained vs plain grace quantile vs robust (entity-trimmed)",
        "", f"Rendered by `python -m training.grace_eval` (code {rep['code']}); window {rep['window']} s, epochs "
        f"{rep['epochs']}, seed {rep['seed']}; grace = the earliest {rep['grace_frac']:.0%} of the held-out "
        "capture's records (at least 1,000, at most half), calibrated without labels; metrics on the later "
        "records only. Grace records are alerted with the trained threshold and are not counted below. "
        "'grace mal.' is the share of malicious records in the grace period (read from the labels after the "
        "fact, for the reader).", "",
        "| case | grace / test records (grace mal.) | detector | threshold trained / plain / robust (after grace) | "
        "test FPR trained / plain / robust | test recall trained / plain / robust | robust: trimmed entities | "
        "verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in rep["cases"]:
        m = r["methods"]
        trimmed = ", ".join(e.replace("|", "\\|") for e in m["robust"]["trimmed_entities"][:4]) or "none"
        if len(m["robust"]["trimmed_entities"]) > 4:
            trimmed += f" (+{len(m['robust']['trimmed_entities']) - 4})"
        if m["robust"]["trim_skipped"]:
            trimmed += " (trim skipped: over max_trim)"
        lines.append(
            f"| {r['case']} | {r['grace_records']} / {r['test_records']} ({r['grace_malicious_share']:.0%}) | "
            f"{r['detector']} | {r['threshold_trained']:.4g} / {m['quantile']['threshold_after_grace']:.4g} / "
            f"{m['robust']['threshold_after_grace']:.4g} (cut: {m['robust']['cut_kind']}) | "
            + " / ".join(_f(m[k]["fpr"], 4) for k in METHODS) + " | "
            + " / ".join(_f(m[k]["recall"]) for k in METHODS) + f" | {trimmed} | {verdict(r)} |")
    lines += ["", f"Target FPR {rep['cases'][0]['target_fpr'] if rep['cases'] else 'n/a'}. 'n/a': the test part "
              "has no records of that class. Thresholds after grace; the robust threshold then drifts within its "
              "bounds (final values in report.json).", "",
              "Honesty notes: the robust method's defaults (k = 3, min_entity_records = 5, max_trim = 0.9, "
              "max_shift = 50, drift_rate = 0.5, the half-of-the-entities rule) were set before any of these runs "
              "and were not tuned on their labels. One rule was changed after a first run of this script: a pool "
              "of small entities with fewer than min_entity_records records no longer votes on whether the trained "
              "threshold is trusted (in 8-1 a two-record pool had tipped the vote); 8-1 is therefore not an "
              "independent test of that rule. The entity key (source|service) was chosen after looking at the "
              "composition of the IoT-23 captures (one infected device is the source of all their flows). A "
              "loss is a case where the robust threshold's test FPR exceeds twice the target or its recall is "
              "more than 0.05 below the best of the three; losses are listed as such."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from training.eval_data import DATA
    from training.evaluate import _git_head
    from training.pretrain import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/grace")
    ap.add_argument("--grace-frac", type=float, default=0.25)
    ap.add_argument("--captures", default="", help="comma list: IoT-23 capture ids (34-1, 8-1, ...) and/or 'strat'")
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--code", default=None, help="commit to record (runs from a clean export of a commit)")
    ap.add_argument("--cache", default=None, help="directory for per-case scores (.npz), reused when present")
    a = ap.parse_args(argv)
    if not (DATA / "iot23").exists():
        print(f"skipped: no shared data under {DATA}")
        return 0
    cfg = TrainConfig(window=a.window, epochs=a.epochs, benign_only=True, seed=a.seed)
    rep = {"grace_frac": a.grace_frac, "window": a.window, "epochs": a.epochs, "seed": a.seed,
           "code": a.code or _git_head(), "cases": []}
    want = [c for c in a.captures.split(",") if c]
    cache = Path(a.cache) if a.cache else None
    for name, train, test in _cases(want):
        z = _score_case(name, train, test, cfg, cache)
        rep["cases"].append(run_case(name, z, a.grace_frac))
        print([ln for ln in markdown(rep).splitlines() if ln.startswith("| ")][-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=float))
    (out / "report.md").write_text(markdown(rep))
    print(markdown(rep), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

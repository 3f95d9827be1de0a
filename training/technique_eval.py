"""Technique channel on attack families held out of everything (issue 17, section 4).

``python -m training.technique_eval --out reports/technique [--splits PATTERNS] [--max-train N] [--max-test N]
[--epochs E] [--seed S]``

Splits (built by :func:`training.generalise.build`, leave one network out), each with an attack *family*
held out of everything: the test network's family is removed from the training table entirely (not only
from what benign-only training fits: also from the held-back period that the validation choices see):

* ``iot23/CTU-Malware-Capture-8-1``: an IoT-23 device whose only attack is its C&C channel; every
  ``C&C*`` record of every other capture is dropped from training;
* ``iot23/CTU-Malware-Capture-20-1``: C&C-Torii, the same (a small family: 16 flows);
* ``cicids2017/Botnet``: CIC-IDS2017's Botnet family (never in the split's training table).

ONE model per split, the default ``graphsentry train --benign-only`` pipeline with the technique channel
on (:class:`training.pretrain.TrainConfig` defaults apart from epochs/seed), scored twice through the real
scoring path (:func:`detector.scoring.score_table`, behaviour state on): once fused (``with_channel``), once
with the channel removed from the same bundle (``embedding_only``): the same encoder, detector and
threshold, so the difference is the channel alone. Per variant: AUROC, AUPRC, recall and benign FPR at the
bundle threshold, attack episodes detected (:mod:`training.episodes`); for the fused run also how many
attack flows / episodes got an alert naming a technique, how many alerts the channel raised on its own
(attack and benign), and which techniques it named. No test label reaches training or a threshold.

Writes ``OUT/report.json`` and ``OUT/report.md``.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

# split name -> the attack family held out of everything (a prefix of the ``attack`` strings removed)
SPLITS = {
    "iot23/CTU-Malware-Capture-8-1": "C&C",
    "iot23/CTU-Malware-Capture-20-1": "C&C",
    "cicids2017/Botnet": "Botnet",
}


def _attacks(t: pa.Table) -> np.ndarray:
    return np.asarray(t.column("attack").to_pylist() if "attack" in t.column_names else [None] * t.num_rows,
                      dtype=object)


def hold_out_family(train: pa.Table, family: str) -> tuple[pa.Table, int]:
    """``train`` without any record whose attack name starts with ``family`` (and how many were removed)."""
    from training.generalise import _concat

    att = _attacks(train)
    drop = np.array([a is not None and str(a).startswith(family) for a in att], dtype=bool)
    return (_concat([train.filter(pa.array(~drop))]) if drop.any() else train), int(drop.sum())


def _columns(out: pa.Table, test: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """score, alert, top_technique of ``out`` (score_table's output) in ``test``'s row order."""
    assert np.array_equal(out.column("row").to_numpy(), test.column("row").to_numpy())
    s = out.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    a = out.column("alert").to_numpy(zero_copy_only=False).astype(bool)
    top = np.asarray(out.column("top_technique").to_pylist(), dtype=object)
    return s, a, top


def evaluate_split(name: str, family: str, max_train: int, max_test: int, epochs: int, seed: int) -> dict:
    from detector.runtime import torch_threads
    from detector.scoring import score_table
    from training.episodes import episode_ids, episode_metrics
    from training.evaluate import metrics
    from training.generalise import build, split_specs, ts_seconds
    from training.pretrain import TrainConfig, prepare, train_bundle

    spec = next((s for s in split_specs() if s.name == name), None)
    if spec is None:
        return {"split": name, "skipped": "not in the shared data"}
    t0 = time.perf_counter()
    split = build(spec, max_train, max_test)
    train, removed = hold_out_family(split.train, family)
    test = split.test
    cfg = TrainConfig(benign_only=True, epochs=epochs, seed=seed, technique=True)
    with torch_threads():
        prep = prepare([train], cfg)
        bundle = train_bundle(None, cfg, progress=False, prepared=prep)
        t_train = time.perf_counter() - t0
        plain = copy.copy(bundle)
        plain.technique = None
        fused_out, plain_out = score_table(bundle, test), score_table(plain, test)
    thr = float(bundle.threshold)
    lab = test.column("label").to_numpy(zero_copy_only=False).astype(float) if "label" in test.column_names \
        else np.full(test.num_rows, np.nan)
    labels = np.nan_to_num(lab, nan=-1).astype(int)
    attacks = _attacks(test).tolist()
    ts = ts_seconds(test)
    src = np.asarray(test.column("src_ip").to_pylist(), dtype=object)
    dst = np.asarray(test.column("dst_ip").to_pylist(), dtype=object)
    res: dict = {}
    cols = {}
    for variant, out in (("embedding_only", plain_out), ("with_channel", fused_out)):
        s, a, top = _columns(out, test)
        cols[variant] = (s, a, top)
        r = metrics(labels, attacks, s, thr)
        r.update(episode_metrics(ts, src, dst, labels, a))
        res[variant] = {k: r.get(k) for k in ("auroc", "auprc", "recall", "fpr", "precision", "n_malicious",
                                              "n_benign", "n_episodes", "n_detected", "episode_recall",
                                              "ttfa_median_s", "per_class_recall")}
    s_f, a_f, top_f = cols["with_channel"]
    s_p, a_p, _ = cols["embedding_only"]
    att, ben = labels == 1, labels == 0
    raised = a_f & ~a_p                       # alerts only the channel raised
    named = a_f & np.not_equal(top_f, None)   # alerts that name a technique (channel or knowledge top)
    eps = episode_ids(ts, src, dst, labels)
    n_ep = int(eps.max()) + 1 if (eps >= 0).any() else 0

    def episodes(mask: np.ndarray) -> int:
        return int(len(np.unique(eps[mask & (eps >= 0)])))

    ch = {
        "never_lowered": bool(np.all(np.nan_to_num(s_f, nan=-np.inf) >= np.nan_to_num(s_p, nan=-np.inf))),
        "attack_flows": int(att.sum()), "attack_episodes": n_ep,
        "attack_flows_alert_naming_technique": int((named & att).sum()),
        "attack_episodes_alert_naming_technique": episodes(named & att),
        "attack_flows_raised_by_channel": int((raised & att).sum()),
        "attack_episodes_raised_by_channel": episodes(raised & att),
        "attack_episodes_detected_only_by_channel": len(set(eps[a_f & att & (eps >= 0)].tolist())
                                                        - set(eps[a_p & att & (eps >= 0)].tolist())),
        "benign_flows_raised_by_channel": int((raised & ben).sum()),
        "benign_fpr_added_by_channel": float((raised & ben).sum() / max(1, ben.sum())) if ben.any() else None,
        "techniques_named_on_attack_alerts": dict(Counter(top_f[named & att].tolist()).most_common(8)),
        "techniques_raised_on_attacks": dict(Counter(top_f[raised & att].tolist()).most_common(8)),
        "techniques_raised_on_benign": dict(Counter(top_f[raised & ben].tolist()).most_common(8)),
    }
    if bundle.technique is not None:
        ch["evidence"] = evidence(bundle, prep.pipeline, test, labels)
    tm = bundle.metrics.get("technique") or {}
    return {
        "split": name, "held_out_family": family, "held_out": spec.held_out,
        "removed_family_records_from_training": removed, "sampling": split.sampling,
        "train_records": int(train.num_rows), "benign_train_records": int(prep.table.num_rows),
        "test_records": int(test.num_rows), "threshold": thr,
        "model": {"detector": bundle.detector_name, "flow_parts": bundle.model.config.flow_parts,
                  "objective": (bundle.metrics.get("objective") or {}).get("chosen"),
                  "technique_threshold": tm.get("threshold"), "technique_calibration_fpr": tm.get("calibration_fpr"),
                  "technique_fit_flows": tm.get("fit_flows"), "technique_calibration_flows": tm.get("calibration_flows"),
                  "technique_lift_gap": bundle.technique.lift_gap_ if bundle.technique is not None else None},
        "results": res, "channel": ch,
        "seconds": {"train": round(t_train, 1), "total": round(time.perf_counter() - t0, 1)},
    }


def evidence(bundle, pipeline, test: pa.Table, labels: np.ndarray, top: int = 6) -> dict:
    """Why the channel fired or not: the channel's score alone as a ranking (AUROC/AUPRC of
    ``decision_function`` over the test flows, attack vs benign), the share of attack / benign flows above
    some benign bound (score > 0) and above the channel threshold, and the ``top`` columns by mean attack
    activation with their benign bound and the share of attack / benign flows above it."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from detector.technique_detector import behaviour_scores, graph_activations
    from training.pretrain import make_windows

    det = bundle.technique
    windows = make_windows(test, float(bundle.window.get("size", 60.0)))
    stream = pipeline.stream()
    graphs = [stream.build(w)[0] for w in windows]
    A = graph_activations(graphs, behaviour_scores(windows), pipeline.kf)
    rows = np.concatenate([g.edge_row.numpy().astype(np.int64) for g in graphs])
    trow = test.column("row").to_numpy().astype(np.int64)
    order = np.argsort(trow, kind="stable")
    lab = labels[order[np.searchsorted(trow[order], rows)]]
    s = det.decision_function(A)
    att, ben = lab == 1, lab == 0
    out: dict = {"channel_threshold": det.threshold_}
    if att.any() and ben.any():
        m = att | ben
        out["channel_auroc"] = float(roc_auc_score(att[m], s[m]))
        out["channel_auprc"] = float(average_precision_score(att[m], s[m]))
    for name, m in (("attack", att), ("benign", ben)):
        out[f"{name}_share_above_a_bound"] = float((s[m] > 0).mean()) if m.any() else None
        out[f"{name}_share_above_threshold"] = float((s[m] > det.threshold_).mean()) if m.any() else None
    if att.any():
        mean = A[att].mean(axis=0)
        cols = []
        for j in np.argsort(-mean, kind="stable")[:top]:
            cols.append({"column": det.columns_[j], "attack_mean": round(float(mean[j]), 3),
                         "benign_bound": round(float(det.bound_[j]), 3),
                         "attack_share_above_bound": round(float((A[att, j] > det.bound_[j]).mean()), 4),
                         "benign_share_above_bound": round(float((A[ben, j] > det.bound_[j]).mean()), 4)
                         if ben.any() else None})
        out["top_attack_columns"] = cols
    return out


def _f(x, nd: int = 3) -> str:
    return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def verdict(rep: dict) -> str:
    """Whether the channel helped on the split, in words, from the measured figures."""
    if rep.get("skipped"):
        return "skipped: " + rep["skipped"]
    e, w, ch = rep["results"]["embedding_only"], rep["results"]["with_channel"], rep["channel"]
    parts = []
    de = (w["n_detected"] or 0) - (e["n_detected"] or 0)
    parts.append(f"episodes detected {e['n_detected']}/{e['n_episodes']} -> {w['n_detected']}/{w['n_episodes']}")
    if e.get("recall") is not None:
        parts.append(f"recall {_f(e['recall'])} -> {_f(w['recall'])}")
    if e.get("fpr") is not None:
        parts.append(f"benign FPR {_f(e['fpr'], 4)} -> {_f(w['fpr'], 4)}")
    if e.get("auprc") is not None:
        parts.append(f"AUPRC {_f(e['auprc'])} -> {_f(w['auprc'])}")
    helped = de > 0 or ((w.get("recall") or 0) > (e.get("recall") or 0) + 0.01)
    cost = (w.get("fpr") or 0) - (e.get("fpr") or 0)
    head = "the channel HELPED" if helped else "the channel did NOT help"
    if cost > 0:
        head += f", at a benign FPR cost of +{cost:.4f}"
    if not ch["attack_flows_raised_by_channel"]:
        head += " (it raised no alert on an attack flow)"
    return head + ": " + "; ".join(parts)


def _evidence_lines(ev: dict | None) -> list[str]:
    if not ev:
        return []
    lines = [f"- Channel score alone (test flows): AUROC {_f(ev.get('channel_auroc'))}, AUPRC "
             f"{_f(ev.get('channel_auprc'))}; above some benign bound: attack {_f(ev.get('attack_share_above_a_bound'))}, "
             f"benign {_f(ev.get('benign_share_above_a_bound'))}; above the channel threshold "
             f"{_f(ev.get('channel_threshold'))}: attack {_f(ev.get('attack_share_above_threshold'))}, benign "
             f"{_f(ev.get('benign_share_above_threshold'))}.",
             "- Strongest evidence on the attack flows (column: attack mean activation / benign bound / share of "
             "attack flows above the bound / share of benign test flows above it): " + "; ".join(
                 f"{c['column']} {c['attack_mean']}/{c['benign_bound']}/{c['attack_share_above_bound']}/"
                 f"{c['benign_share_above_bound']}" for c in ev.get("top_attack_columns", [])) + "."]
    return lines


def markdown(report: dict) -> str:
    lines = ["# Technique channel on attack families held out of everything", "",
             f"Generated {report['generated']} by `{report['command']}` (commit {report.get('commit') or '?'}"
             + (f"; uncommitted changes in {', '.join(report['uncommitted_changes'])}" if report.get("uncommitted_changes")
                else "") + ").",
             "", "One model per split (default `train --benign-only` pipeline, technique channel on), scored "
             "twice through `score_table`: fused, and with the channel removed from the same bundle "
             "(same encoder, detector and threshold). The held-out family never enters training, not even "
             "the held-back period the validation choices see. Metrics at the bundle threshold "
             f"(target benign FPR {report['target_fpr']}).", ""]
    lines += ["| split | variant | AUROC | AUPRC | recall | benign FPR | episodes detected |",
              "|---|---|---|---|---|---|---|"]
    for rep in report["splits"]:
        if rep.get("skipped"):
            lines.append(f"| {rep['split']} | skipped: {rep['skipped']} | | | | | |")
            continue
        for v in ("embedding_only", "with_channel"):
            r = rep["results"][v]
            lines.append(f"| {rep['split']} | {v} | {_f(r['auroc'])} | {_f(r['auprc'])} | {_f(r['recall'])} | "
                         f"{_f(r['fpr'], 4)} | {r['n_detected']}/{r['n_episodes']} |")
    lines += ["", "## What the channel did", ""]
    for rep in report["splits"]:
        if rep.get("skipped"):
            continue
        ch = rep["channel"]
        lines += [f"### {rep['split']} (held out: {rep['held_out_family']}; {rep['removed_family_records_from_training']} "
                  f"training records of the family removed)", "",
                  f"- Verdict: {verdict(rep)}.",
                  f"- Attack flows with an alert naming a technique: {ch['attack_flows_alert_naming_technique']}"
                  f"/{ch['attack_flows']} (episodes {ch['attack_episodes_alert_naming_technique']}/{ch['attack_episodes']}).",
                  f"- Alerts raised by the channel alone: {ch['attack_flows_raised_by_channel']} attack flows "
                  f"({ch['attack_episodes_raised_by_channel']} episodes, {ch['attack_episodes_detected_only_by_channel']} "
                  f"of them missed by the embedding score), {ch['benign_flows_raised_by_channel']} benign flows "
                  f"(benign FPR added {_f(ch['benign_fpr_added_by_channel'], 4)}).",
                  f"- Techniques named on attack alerts: {ch['techniques_named_on_attack_alerts'] or 'none'}.",
                  f"- Techniques the channel raised on attacks: {ch['techniques_raised_on_attacks'] or 'none'}; "
                  f"on benign flows: {ch['techniques_raised_on_benign'] or 'none'}.",
                  f"- Fused score never below the embedding score: {ch['never_lowered']}.",
                  *_evidence_lines(ch.get("evidence")),
                  f"- Model: {rep['model']}; train {rep['train_records']} records ({rep['benign_train_records']} "
                  f"benign), test {rep['test_records']}; {rep['seconds']}.", ""]
    return "\n".join(lines) + "\n"


def run(out: Path, patterns: str | None, max_train: int, max_test: int, epochs: int, seed: int, argv) -> dict:
    import fnmatch

    from training.generalise import _dirty, git_head

    names = [n for n in SPLITS if not patterns or any(fnmatch.fnmatchcase(n, p.strip()) for p in patterns.split(","))]
    reps = []
    for n in names:
        t = time.perf_counter()
        rep = evaluate_split(n, SPLITS[n], max_train, max_test, epochs, seed)
        reps.append(rep)
        print(f"[{n}] {verdict(rep)} ({time.perf_counter() - t:.0f}s)", flush=True)
    report = {"generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "command": "python -m training.technique_eval " + " ".join(argv),
              "commit": git_head(), "uncommitted_changes": _dirty(), "target_fpr": 0.01,
              "caps": {"max_train": max_train, "max_test": max_test, "epochs": epochs, "seed": seed},
              "splits": reps, "verdicts": {r["split"]: verdict(r) for r in reps}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(markdown(report))
    return report


def rerender(out: Path) -> dict:
    """``OUT/report.md`` (and the verdicts in ``OUT/report.json``) again from ``OUT/report.json``."""
    report = json.loads((out / "report.json").read_text())
    report["verdicts"] = {r["split"]: verdict(r) for r in report["splits"]}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(markdown(report))
    return report


def main(argv=None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/technique")
    ap.add_argument("--splits", default=None, help="comma-separated fnmatch patterns over the split names")
    ap.add_argument("--max-train", type=int, default=40_000)
    ap.add_argument("--max-test", type=int, default=40_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render", action="store_true", help="only render OUT/report.md from OUT/report.json")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.render:
        rerender(Path(a.out))
        return 0
    run(Path(a.out), a.splits, a.max_train, a.max_test, a.epochs, a.seed, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

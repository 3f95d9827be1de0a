"""The shared-data evaluation suites behind reports/ and README.md (Model).

Run one with ``python -m training.eval_suites NAME [--out reports] [--seed N]`` (NAME: stratosphere,
iot23, luflow, cicids2017; ``generalise``: the leave-one-network-out benchmark of training/generalise.py,
with its own options). Each writes ``reports/<NAME>[/<fold>]/report.{json,md}`` (+ PR/ROC PNGs)
using the harness in :mod:`training.evaluate`; ``summary`` tabulates the reports under ``--out``, and
``seeds`` compares ``ours`` with ``iforest_raw`` over runs in ``--out``/seed<N>/. Designs (all benign-only training, thresholds calibrated on
the latest held-back training windows, no test labels in any choice):

* stratosphere: capture 008 (day 1) -> capture 010 (a later day of the same host).
* iot23: leave-one-capture-out over the four malware captures; training = the benign-labelled
  flows of every *other* capture (the two honeypot captures always train). Cross-capture, not
  time-ordered (captures are different devices/dates).
* luflow: earlier days (2020-07-08/09/11) -> later days (2020-12-16/17/18); uniform random
  subsample of each side (``--max`` records) to keep the run to minutes.
* cicids2017: the per-class random sample; benign flows split by time (earliest 70% train/
  calibrate, latest 30% test); every attack family is absent from training (benign-only), so one
  trained model serves all families and each family is scored against the same benign test flows
  ("held out in turn" = one row per family).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from training.eval_data import DATA, read
from training.eval_data import renumber as _renumber
from training.evaluate import DEFAULT_VARIANTS, evaluate_split, subsample, write_report
from training.pretrain import TrainConfig


def stratosphere(out: Path, cfg: TrainConfig, variants) -> list[dict]:
    d = DATA / "stratosphere"
    tr, te = read([d / "008-zeek-mixed.conn.log.labeled"]), read([d / "010-zeek-mixed.conn.log.labeled"])
    rep = evaluate_split(tr, te, cfg, variants, name="Stratosphere 008 -> 010",
                         notes="Same host, capture 008 (earlier day) for training, 010 (later day) for test.")
    write_report(rep, out / "stratosphere")
    return [rep]


def iot23(out: Path, cfg: TrainConfig, variants) -> list[dict]:
    d = DATA / "iot23"
    files = sorted(d.glob("*.csv"))
    tables = {f.name: read([f]) for f in files}
    reps = []
    for test_name in [f.name for f in files if "Malware" in f.name]:
        others = [t for n, t in tables.items() if n != test_name]
        tr = _renumber(pa.concat_tables(others))
        te = tables[test_name]
        rep = evaluate_split(tr, te, cfg, variants, name=f"IoT-23 leave-one-capture-out: test {test_name}",
                             notes="Training: benign-labelled flows of all other captures (honeypots included); "
                                   "cross-capture, not time-ordered.")
        write_report(rep, out / "iot23" / test_name.replace("-labeled.csv", ""))
        reps.append(rep)
    return reps


def luflow(out: Path, cfg: TrainConfig, variants, max_records: int = 20000) -> list[dict]:
    d = DATA / "luflow"
    tr = read([d / f"{x}.zip" for x in ("2020.07.08", "2020.07.09", "2020.07.11")])
    te = read([d / f"{x}.zip" for x in ("2020.12.16", "2020.12.17", "2020.12.18")])
    tr, te = _renumber(subsample(tr, max_records, cfg.seed)), _renumber(subsample(te, max_records, cfg.seed + 1))
    rep = evaluate_split(tr, te, cfg, variants, name="LUFlow 2020-07-08/09/11 -> 2020-12-16/17/18",
                         notes=f"Uniform random subsample of {max_records} records per side (seeded); "
                               "'outlier' records are label 2 and excluded from metrics.")
    write_report(rep, out / "luflow")
    return [rep]


def cicids2017(out: Path, cfg: TrainConfig, variants) -> list[dict]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    d = DATA / "cicids2017"
    allt = read(sorted(d.glob("*.csv")))
    lab = allt.column("label").to_numpy(zero_copy_only=False)
    ben = allt.filter(pa.array(lab == 0))
    ts = ben.column("ts").cast(pa.int64()).to_numpy()
    cut = np.quantile(ts, 0.7)
    tr = _renumber(ben.filter(pa.array(ts <= cut)))
    te = _renumber(pa.concat_tables([ben.filter(pa.array(ts > cut)), allt.filter(pa.array(lab == 1))]))
    rep = evaluate_split(tr, te, cfg, variants, name="CIC-IDS2017 sample, every attack family held out",
                         notes="Benign flows split by time (earliest 70% train/calibrate, latest 30% test); "
                               "all attack families absent from training; per-family rows below compare "
                               "each family with the same benign test flows. The sample is a per-class "
                               "random sample, so windows are sparse: graph context is weak here.")
    # per family: AUROC / AUPRC of that family vs the benign test flows, recall at the calibrated threshold
    labels, scores = rep["_labels"], rep["_scores"]
    att = np.asarray([a or "" for a in te.column("attack").to_pylist()], dtype=object)
    fam: dict = {}
    for v, s in scores.items():
        s = np.nan_to_num(np.asarray(s, float), nan=-1e18)
        thr = rep["results"][v]["threshold"]
        for a in sorted(set(att[labels == 1])):
            sel = (labels == 0) | ((labels == 1) & (att == a))
            y = (labels[sel] == 1).astype(int)
            fam.setdefault(a, {})[v] = {"n": int(y.sum()), "auroc": float(roc_auc_score(y, s[sel])),
                                        "auprc": float(average_precision_score(y, s[sel])),
                                        "recall": float((s[sel][y == 1] > thr).mean())}
    rep["per_family"] = fam
    d_out = write_report(rep, out / "cicids2017")
    lines = ["", "## Per held-out family (vs the benign test flows)", "",
             "| family | n | " + " | ".join(f"{v} AUROC / AUPRC / recall" for v in scores) + " |",
             "|---|---|" + "---|" * len(scores)]
    for a, r in fam.items():
        n = next(iter(r.values()))["n"]
        lines.append(f"| {a} | {n} | " + " | ".join(
            f"{r[v]['auroc']:.3f} / {r[v]['auprc']:.3f} / {r[v]['recall']:.3f}" for v in scores) + " |")
    with open(d_out / "report.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    return [rep]


def summary(root: Path) -> str:
    """One markdown table (AUROC / AUPRC / macro-F1 / recall / FPR per variant) over every report under ``root``."""
    rows = []
    for f in sorted(root.rglob("report.json")):
        r = json.loads(f.read_text())
        if not isinstance(r, dict) or "results" not in r or "protocol" not in r:
            continue  # another area's report
        for v, m in r["results"].items():
            rows.append((str(f.parent.relative_to(root)), v, m))
    if not rows:
        return "(no reports)\n"
    fmt = lambda x, nd=3: "n/a" if x is None else f"{x:.{nd}f}"  # noqa: E731
    out = ["| split | variant | objective · detector input · detector | AUROC | AUPRC | macro-F1 | recall | FPR |",
           "|---|---|---|---|---|---|---|---|"]
    for split, v, m in rows:
        obj = (m.get("objective") or {}).get("chosen", "")
        chosen = " · ".join(x for x in (obj.replace("/gradnorm", "").replace("none", "random"),
                                        m.get("flow_parts") or "", m.get("detector") or "") if x)
        out.append(f"| {split} | {v} | {chosen} | {fmt(m['auroc'])} | {fmt(m['auprc'])} | "
                   f"{fmt(m['macro_f1'])} | {fmt(m['recall'])} | {fmt(m['fpr'], 4)} |")
    return "\n".join(out) + "\n"


def seeds(root: Path, ours: str = "ours", baseline: str = "iforest_raw") -> str:
    """``ours`` against ``baseline`` over the seeds of ``root/seed<N>/...`` (one run per seed, the same splits):
    AUPRC and macro-F1 per seed and the number of seeds each is won on."""
    runs: dict[str, dict[int, dict]] = {}
    for d in sorted(root.glob("seed*")):
        if not d.name[4:].isdigit():
            continue
        for f in sorted(d.rglob("report.json")):
            r = json.loads(f.read_text())
            res = r.get("results", {}) if isinstance(r, dict) else {}
            if ours in res and baseline in res:
                runs.setdefault(str(f.parent.relative_to(d)), {})[int(d.name[4:])] = res
    if not runs:
        return "(no seed reports)\n"
    fmt = lambda xs: " / ".join("n/a" if x is None else f"{x:.3f}" for x in xs)  # noqa: E731
    out = [f"| split | seeds | AUPRC {ours} | AUPRC {baseline} | macro-F1 {ours} | macro-F1 {baseline} | "
           "AUPRC won | F1 won |", "|---|---|---|---|---|---|---|---|"]
    for split, by_seed in sorted(runs.items()):
        ss = sorted(by_seed)
        get = lambda v, k, by_seed=by_seed, ss=ss: [by_seed[s][v][k] for s in ss]  # noqa: E731
        won = lambda k, get=get: sum(a is not None and b is not None and a > b  # noqa: E731
                            for a, b in zip(get(ours, k), get(baseline, k)))
        out.append(f"| {split} | {','.join(map(str, ss))} | {fmt(get(ours, 'auprc'))} | {fmt(get(baseline, 'auprc'))} | "
                   f"{fmt(get(ours, 'macro_f1'))} | {fmt(get(baseline, 'macro_f1'))} | {won('auprc')}/{len(ss)} | "
                   f"{won('macro_f1')}/{len(ss)} |")
    return "\n".join(out) + "\n"


SUITES = {"stratosphere": stratosphere, "iot23": iot23, "luflow": luflow, "cicids2017": cicids2017}


def main(argv=None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generalise"]:  # leave-one-network-out benchmark: its own options (training/generalise.py)
        from training.generalise import main as generalise_main

        return generalise_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=sorted(SUITES) + ["summary", "seeds", "generalise"])
    ap.add_argument("--out", default="reports")
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--node-mode", default="ip")
    ap.add_argument("--knn-bank", default="coreset", help="kNN memory bank: coreset | random")
    ap.add_argument("--knn-bank-size", type=int, default=512, help="kNN bank rows")
    a = ap.parse_args(argv)
    if a.suite == "summary":
        print(summary(Path(a.out)), end="")
        return 0
    if a.suite == "seeds":  # --out holds seed<N>/ folders, one suite run per seed
        print(seeds(Path(a.out)), end="")
        return 0
    cfg = TrainConfig(window=a.window, epochs=a.epochs, benign_only=True, seed=a.seed, node_mode=a.node_mode,
                      knn_bank=a.knn_bank, knn_bank_size=a.knn_bank_size)
    SUITES[a.suite](Path(a.out), cfg, tuple(a.variants.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Development benchmark "leave one network out" (issue 17, section 1).

``python -m training.eval_suites generalise --out reports/generalise [--splits PATTERNS] [--max-train N]
[--max-test N] [--epochs E] [--seed S]``

Every split holds one *network* out of training entirely and trains ONE generic model on the rest:

* ``iot23/<capture>`` and ``stratosphere/<capture>``: one Zeek capture (one device / host) is the test set;
  the model trains on every other IoT-23 and Stratosphere capture together (one generic Zeek model).
  Cross-capture: captures are different devices and dates, so this is not a forecast in time.
* ``luflow/later-days``: LUFlow days before the first gap of at least 3 days without data train, the
  days after it test (only 2020-12-16 of those holds labelled attacks in the shared copy); test records less than 3 days after the last training record are dropped, so the
  gap holds on the records' own timestamps.
* ``cicids2017/<family>``: benign flows split in time (earliest 70 % train, latest 30 % test); the
  training table also holds the attack flows of every *other* family up to the cut, the test table the
  held-out family. Training is benign-only (malicious-labelled records are dropped before anything is
  fitted), so leaving a family out only changes what the validation-based choices (objective, detector
  input, detector) see: the attacks of the held-back training period. Families whose flows all lie
  after the cut change nothing at all (the same model; trained once and reused in one run).

Methods, all fitted on the same benign training flows of the split:

* ``ours``: the default ``graphsentry train --benign-only`` pipeline (``train_bundle`` with the
  default TrainConfig apart from epochs/seed), its calibrated threshold;
* ``iforest_raw``, ``ecod``, ``hbos``: IsolationForest, PyOD ECOD and PyOD HBOS on the raw per-flow
  feature matrix (the preprocessor ``iforest_raw`` of :mod:`training.evaluate` uses), thresholded at the
  ``1 - target_fpr`` quantile of their own training scores.

No threshold and no choice sees a test label. Big inputs are capped with an even stride over the
time-sorted records (never random rows across time); the caps are stored in the report.

Results: one JSON per split under ``OUT/splits/`` (so partial and parallel runs add up), and
``OUT/report.json`` / ``OUT/report.md`` rendered from all of them (:func:`render`).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flows"
METHODS = ("ours", "iforest_raw", "ecod", "hbos")
GAP_DAYS = 3.0
CIC_TRAIN_FRAC = 0.7
EPISODE_GOAL = 0.9      # verdict: ours detects >= 90 % of the episodes ...
FPR_GOAL = 0.01         # ... at a benign FPR <= 1 %
GRACE_FRAC = 0.25       # after_grace: the earliest quarter of the test records is the unlabelled grace period
ECOD_CHUNK = 2000       # ECOD ranks test rows against training rows + the rows scored with them: chunks of at
                        # most this and 1 % of the training rows keep it (nearly) inductive


# -- reading ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def read_file(path: str) -> pa.Table:
    from ingest.readers import open_inputs

    return pa.Table.from_batches(list(open_inputs([path])))


def _concat(tables: list[pa.Table]) -> pa.Table:
    from training.pretrain import as_table

    t = as_table(tables)
    return t.set_column(t.schema.get_field_index("row"), "row", pa.array(np.arange(t.num_rows), pa.int64()))


def time_sorted(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, sort_keys=[("ts", "ascending"), ("row", "ascending")]))


def stride(t: pa.Table, cap: int) -> tuple[pa.Table, dict]:
    """Time-sort ``t`` and keep ``cap`` records evenly spaced over it (all when ``cap <= 0`` or fewer)."""
    t = time_sorted(t)
    n = t.num_rows
    info = {"rows_in": n, "rows_kept": n, "method": "all"}
    if cap > 0 and n > cap:
        idx = np.floor(np.arange(cap) * (n / cap)).astype(np.int64)
        t = t.take(pa.array(idx))
        info = {"rows_in": n, "rows_kept": cap, "method": f"even stride over time-sorted records (1 in {n / cap:.2f})"}
    return _concat([t]), info


def ts_seconds(t: pa.Table) -> np.ndarray:
    return t.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6


# -- splits ----------------------------------------------------------------------------------------------

@dataclass
class SplitSpec:
    name: str
    group: str                 # iot23 | stratosphere | luflow | cicids2017
    held_out: str              # the network (capture / days / family) that never trains
    train_files: list[str]
    test_files: list[str]
    notes: str = ""
    family: str | None = None  # cicids2017: the held-out attack family


@dataclass
class Split:
    spec: SplitSpec
    train: pa.Table
    test: pa.Table
    sampling: dict = field(default_factory=dict)


def zeek_captures(data: Path) -> dict[str, Path]:
    """``group/capture`` -> file, for every IoT-23 and Stratosphere capture present."""
    out: dict[str, Path] = {}
    for f in sorted((data / "iot23").glob("*-labeled.csv")):
        out[f"iot23/{f.name.replace('-labeled.csv', '')}"] = f
    for f in sorted((data / "stratosphere").glob("*")):
        if f.is_file() and ("conn.log" in f.name):
            out[f"stratosphere/{f.name.split('.')[0]}"] = f
    return out


def luflow_days(data: Path) -> list[tuple[dt.date, Path]]:
    out = []
    for f in sorted((data / "luflow").glob("*.zip")):
        m = re.fullmatch(r"(\d{4})\.(\d{2})\.(\d{2})\.zip", f.name)
        if m:
            out.append((dt.date(*map(int, m.groups())), f))
    return sorted(out)


def luflow_cut(days: list[dt.date], gap_days: float = GAP_DAYS) -> int | None:
    """Index of the first test day: after the *first* run of >= ``gap_days`` days without data (None when
    there is none). The first, not the latest: in the shared copy only the days up to 2020-12-16 hold
    labelled attacks (2020-12-17 onwards are all benign), so a later cut would leave a test set without
    attacks; the benign-only later days still count for the benign FPR."""
    for i in range(1, len(days)):
        if (days[i] - days[i - 1]).days - 1 >= gap_days:
            return i
    return None


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_")


def cic_families(data: Path) -> dict[str, Path]:
    """Attack family name (as in the ``attack`` column) -> file."""
    out = {}
    for f in sorted((data / "cicids2017").glob("*.csv")):
        if f.name.startswith("BENIGN"):
            continue
        fam = re.sub(r"_\d+$", "", f.stem).replace("_", " ")
        out[fam] = f
    return out


def split_specs(data: Path = DATA) -> list[SplitSpec]:
    """Every split the data present allows, in priority order (IoT-23, Stratosphere, LUFlow, CIC-IDS2017)."""
    specs: list[SplitSpec] = []
    caps = zeek_captures(data)
    for name, f in caps.items():
        group = name.split("/")[0]
        others = [str(p) for n, p in caps.items() if n != name]
        note = ("Honeypot capture: benign-only, so only the benign FPR is measured. " if "Honeypot" in name else "")
        if name == "stratosphere/001-zeek-scenario-malicious":
            note += "Only 9 benign flows (739 background, excluded from metrics): FPR and AUROC are very coarse. "
        specs.append(SplitSpec(name, group, f"{group} capture {f.name}", others, [str(f)],
                               note + "Training: every other IoT-23 and Stratosphere capture (one generic Zeek "
                                      "model); cross-capture, not time-ordered."))
    days = luflow_days(data)
    cut = luflow_cut([d for d, _ in days])
    if cut is not None:
        tr, te = days[:cut], days[cut:]
        specs.append(SplitSpec("luflow/later-days", "luflow", f"LUFlow days {te[0][0]} .. {te[-1][0]}",
                               [str(p) for _, p in tr], [str(p) for _, p in te],
                               f"Training days {', '.join(str(d) for d, _ in tr)}; test days "
                               f"{', '.join(str(d) for d, _ in te)}; >= {GAP_DAYS:g} days without data between "
                               "them (enforced on the records' timestamps). 'outlier' records are excluded "
                               "from the metrics. Addresses are anonymised to AS numbers, so an episode is an "
                               "AS -> AS pair within one hour."))
    benign = sorted((data / "cicids2017").glob("BENIGN*.csv"))
    fams = cic_families(data)
    if benign:
        for fam, f in fams.items():
            specs.append(SplitSpec(
                f"cicids2017/{_slug(fam)}", "cicids2017", f"CIC-IDS2017 family {fam}",
                [str(benign[0])] + [str(p) for g, p in fams.items() if g != fam], [str(benign[0]), str(f)],
                f"Benign flows split in time (earliest {CIC_TRAIN_FRAC:.0%} train, latest test); training also "
                f"holds the other families' flows up to the cut (dropped by benign-only training: they only "
                f"serve the validation-based choices); test: the later benign flows + every '{fam}' flow "
                "(a family's flows may predate the cut: it is never trained on, but the family split is not "
                "a forecast in time). Per-class random sample: sparse windows, weak graph context.",
                family=fam))
    return specs


def select(specs: list[SplitSpec], patterns: str | None) -> list[SplitSpec]:
    """Specs whose name matches any comma-separated fnmatch pattern (a bare group name matches the group)."""
    if not patterns:
        return specs
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    pats = [p if any(c in p for c in "*?[/") else f"{p}/*" for p in pats]
    return [s for s in specs if any(fnmatch.fnmatchcase(s.name, p) for p in pats)]


def build(spec: SplitSpec, max_train: int, max_test: int) -> Split:
    """Load the tables of ``spec`` (capped by an even stride over time)."""
    if spec.group in ("iot23", "stratosphere"):
        train = _concat([read_file(f) for f in spec.train_files])
        test = _concat([read_file(f) for f in spec.test_files])
        host = local_host(test)
        extra = {"held_out_host": host, "held_out_host_in_training": host in ips(train)}
    elif spec.group == "luflow":
        train = _concat([read_file(f) for f in spec.train_files])
        test = _concat([read_file(f) for f in spec.test_files])
        last = float(ts_seconds(train).max())
        keep = ts_seconds(test) >= last + GAP_DAYS * 86400
        extra = {"test_dropped_inside_gap": int((~keep).sum()), "gap_days": GAP_DAYS}
        test = _concat([test.filter(pa.array(keep))])
    elif spec.group == "cicids2017":
        ben = read_file(spec.train_files[0])
        ts = ts_seconds(ben)
        cut = float(np.quantile(ts, CIC_TRAIN_FRAC))
        others = [read_file(f) for f in spec.train_files[1:]]
        others = [o.filter(pa.array(ts_seconds(o) <= cut)) for o in others]
        train = _concat([ben.filter(pa.array(ts <= cut))] + others)
        test = _concat([ben.filter(pa.array(ts > cut)), read_file(spec.test_files[1])])
        extra = {"benign_cut": dt.datetime.fromtimestamp(cut, dt.timezone.utc).isoformat()}
    else:
        raise ValueError(f"unknown group {spec.group!r}")
    train, tr_info = stride(train, max_train)
    test, te_info = stride(test, max_test)
    return Split(spec, train, test, {"train": tr_info, "test": te_info, **extra})


def local_host(t: pa.Table) -> str | None:
    """The monitored host of a capture: the most frequent source address of its non-malicious flows."""
    lab = t.column("label").to_numpy(zero_copy_only=False) if "label" in t.column_names else np.zeros(t.num_rows)
    keep = pa.array(np.asarray(lab) != 1)
    vc = pc.value_counts(t.filter(keep).column("src_ip")) if t.num_rows else []
    best = max(vc.to_pylist(), key=lambda d: d["counts"], default=None) if len(vc) else None
    return best["values"] if best else None


def ips(t: pa.Table) -> set:
    return set(pc.unique(t.column("src_ip")).to_pylist()) | set(pc.unique(t.column("dst_ip")).to_pylist())


# -- methods ---------------------------------------------------------------------------------------------

def _raw(prep, table: pa.Table) -> np.ndarray:
    X = np.asarray(prep.pipeline.pre.transform(table), dtype=np.float64)
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def _baseline(name: str, Xtr: np.ndarray, Xte: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training scores, test scores), higher = more anomalous."""
    if name == "iforest_raw":
        from detector.detectors import IForestDetector

        det = IForestDetector(random_state=seed).fit(Xtr)
        return det.decision_function(Xtr), det.decision_function(Xte)
    if name == "hbos":
        from pyod.models.hbos import HBOS

        det = HBOS().fit(Xtr)
        return det.decision_scores_, det.decision_function(Xte)
    if name == "ecod":
        import warnings

        from pyod.models.ecod import ECOD

        # PyOD's ECOD ranks the rows it scores together with its training rows (transductive: a burst of
        # identical attack flows scored at once looks "common"); small chunks keep the test rows from moving
        # the empirical distributions (as a stream would be scored)
        k = max(1, min(ECOD_CHUNK, len(Xtr) // 100))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Precision loss occurred in moment calculation")
            det = ECOD(n_jobs=1).fit(Xtr)
            te = np.concatenate([det.decision_function(Xte[i:i + k])
                                 for i in range(0, len(Xte), k)]) if len(Xte) else np.zeros(0)
        return det.decision_scores_, te
    raise ValueError(f"unknown baseline {name!r}")


def evaluate(split: Split, cfg, methods=METHODS, cache: dict | None = None) -> dict:
    """Fit every method on the benign training flows of ``split``, score its test flows, all metrics."""
    from detector.runtime import torch_threads

    with torch_threads():
        return _evaluate(split, cfg, methods, cache)


def _evaluate(split: Split, cfg, methods, cache) -> dict:
    from detector.grace import flow_entities
    from training.episodes import episode_metrics
    from training.evaluate import TestGraphs, metrics
    from training.grace_eval import after_grace
    from training.pretrain import fingerprint, prepare, train_bundle

    t0 = time.perf_counter()
    train, test = split.train, split.test
    key = (fingerprint(train)["sha256"], train.num_rows, cfg.seed, cfg.epochs, cfg.window)
    hit = cache.get(key) if cache is not None else None   # (prep, bundle) of an identical training table
    prep = hit[0] if hit is not None else prepare([train], cfg)
    lab = test.column("label").to_numpy(zero_copy_only=False).astype(float) if "label" in test.column_names \
        else np.full(test.num_rows, np.nan)
    labels = np.nan_to_num(lab, nan=-1).astype(int)
    attacks = test.column("attack").to_pylist() if "attack" in test.column_names else [None] * test.num_rows
    ts = ts_seconds(test)
    src = np.asarray(test.column("src_ip").to_pylist(), dtype=object)
    dst = np.asarray(test.column("dst_ip").to_pylist(), dtype=object)
    order = np.lexsort((test.column("row").to_numpy(), test.column("ts").cast(pa.int64()).to_numpy()))
    ent = flow_entities(test).astype(str)
    res: dict = {}
    Xtr = Xte = None
    for m in methods:
        tm = time.perf_counter()
        info: dict = {}
        if m == "ours":
            if hit is None:
                hit = (prep, train_bundle(None, cfg, progress=False, prepared=prep))
                if cache is not None:
                    cache[key] = hit
            else:
                info["reused_model_of_identical_training_table"] = True
            b = hit[1]
            s = TestGraphs(prep.pipeline, test, cfg.window).score(b)
            thr = float(b.threshold)
            info.update({"detector": b.detector_name, "flow_parts": b.model.config.flow_parts,
                         "objective": (b.metrics.get("objective") or {}).get("chosen"),
                         "val_attacks": b.metrics.get("val_attacks"), "val_flows": b.metrics.get("val_flows"),
                         "threshold_rule": "conformal quantile of the held-back benign training flows' scores "
                                           f"(target FPR {cfg.target_fpr})"})
        else:
            if Xtr is None:
                Xtr, Xte = _raw(prep, prep.table), _raw(prep, test)
            s_tr, s = _baseline(m, Xtr, Xte, cfg.seed)
            thr = float(np.quantile(np.asarray(s_tr, float), 1.0 - cfg.target_fpr))
            info.update({"fit_flows": int(len(Xtr)), "features": int(Xtr.shape[1]),
                         "threshold_rule": f"{1 - cfg.target_fpr:g} quantile of its benign training scores"})
        s = np.asarray(s, dtype=np.float64)
        r = metrics(labels, attacks, s, thr)
        flagged = np.where(np.isnan(s), -np.inf, s) > thr
        r.update(episode_metrics(ts, src, dst, labels, flagged))
        # the operating point a deployment gets: robust grace calibration on the test's own first records
        r["after_grace"] = after_grace(s[order], ts[order], ent[order], labels[order], src[order], dst[order],
                                       thr, cfg.target_fpr, cfg.window, GRACE_FRAC)
        r.update(info)
        r["threshold"] = thr
        r["seconds"] = round(time.perf_counter() - tm, 1)
        res[m] = r
        print(f"[{split.spec.name}] {m}: AUROC={_f(r['auroc'])} AUPRC={_f(r['auprc'])} recall={_f(r['recall'])} "
              f"FPR={_f(r['fpr'], 4)} episodes={r['n_detected']}/{r['n_episodes']} "
              f"TTFA_med={_f(r['ttfa_median_s'], 1)}s ({r['seconds']}s)", flush=True)
    return {
        "split": split.spec.name, "group": split.spec.group, "held_out": split.spec.held_out,
        "notes": split.spec.notes, "train_files": [Path(f).name for f in split.spec.train_files],
        "test_files": [Path(f).name for f in split.spec.test_files], "sampling": split.sampling,
        "protocol": {"benign_only": True, "removed_malicious_from_training": prep.removed,
                     "train_records": prep.records_in, "benign_train_records": int(prep.table.num_rows),
                     "train_windows": len(prep.train_w), "calibration_windows": len(prep.val_w),
                     "test_records": int(test.num_rows), "target_fpr": cfg.target_fpr,
                     "train_span": _span(train), "test_span": _span(test),
                     "test_malicious": int((labels == 1).sum()), "test_benign": int((labels == 0).sum())},
        "results": res, "seconds": round(time.perf_counter() - t0, 1),
    }


def _span(t: pa.Table) -> list:
    ts = t.column("ts")
    return [str(pc.min(ts).as_py()), str(pc.max(ts).as_py())]


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


# -- run + report ----------------------------------------------------------------------------------------

def git_head() -> str | None:
    from training.evaluate import _git_head

    # a copy of the tree without .git (e.g. a remote machine) names its commit in GENERALISE_COMMIT
    return _git_head() or os.environ.get("GENERALISE_COMMIT") or None


def run(out: Path, patterns: str | None = None, max_train: int = 150_000, max_test: int = 100_000,
        epochs: int = 1, seed: int = 0, data: Path = DATA, methods=METHODS, window: float | None = None) -> dict:
    """Evaluate the selected splits, one JSON per split under ``out/splits``, then :func:`render`."""
    from training.pretrain import TrainConfig

    cfg = TrainConfig(benign_only=True, epochs=epochs, seed=seed)   # the `graphsentry train --benign-only` defaults
    if window is not None:
        cfg = replace(cfg, window=window)
    specs = select(split_specs(Path(data)), patterns)
    if not specs:
        raise SystemExit(f"no split matches {patterns!r} under {data}")
    d = Path(out) / "splits"
    d.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    run_meta = {"commit": git_head(), "uncommitted_code": _dirty(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "cores": os.cpu_count(), "torch_threads": _torch_threads(),
                "machine": os.environ.get("GENERALISE_MACHINE") or platform.node(),
                "caps": {"max_train": max_train, "max_test": max_test,
                         "sampling": "even stride over the time-sorted records (never random rows)"},
                "config": asdict(cfg), "methods": list(methods), "seed": seed, "epochs": epochs,
                "versions": _versions()}
    for spec in specs:
        print(f"== {spec.name}", flush=True)
        t0 = time.perf_counter()
        try:
            split = build(spec, max_train, max_test)
            rep = evaluate(split, cfg, methods, cache)
        except Exception as e:  # noqa: BLE001 -- one failed split must not lose the others; it is reported
            log.exception("split %s failed", spec.name)
            rep = {"split": spec.name, "group": spec.group, "held_out": spec.held_out, "notes": spec.notes,
                   "error": f"{type(e).__name__}: {e}", "results": {}, "seconds": round(time.perf_counter() - t0, 1)}
        rep["run"] = run_meta
        (d / f"{spec.name.replace('/', '__')}.json").write_text(json.dumps(rep, indent=2, default=str))
        render(Path(out))
    return render(Path(out))


def _dirty() -> list[str] | None:
    """Code files that differ from the commit (None outside a git checkout)."""
    import subprocess

    try:
        r = subprocess.run(["git", "status", "--porcelain", "--", "training", "detector", "ingest", "knowledge"],
                           capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return [ln[3:] for ln in r.stdout.splitlines() if ln[3:].endswith(".py")]


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("torch", "numpy", "scikit-learn", "pyarrow", "pyod"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def _torch_threads() -> int:
    from detector.runtime import default_threads

    return int(default_threads())


GROUP_ORDER = {"iot23": 0, "stratosphere": 1, "luflow": 2, "cicids2017": 3}


def load_splits(out: Path) -> list[dict]:
    """Every split JSON under ``out/splits``; where ``out/previous/splits`` holds the same split from the
    previous default pipeline, its ``ours`` result is added as the row ``ours_previous`` (with its run)."""
    reps = [json.loads(f.read_text()) for f in sorted((Path(out) / "splits").glob("*.json"))]
    prev_dir = Path(out) / "previous" / "splits"
    for r in reps:
        f = prev_dir / f"{r['split'].replace('/', '__')}.json"
        if f.is_file() and "ours" in (r.get("results") or {}):
            p = json.loads(f.read_text())
            if "ours" in (p.get("results") or {}):
                r["results"]["ours_previous"] = {**p["results"]["ours"], "run": p.get("run")}
    return sorted(reps, key=lambda r: (GROUP_ORDER.get(r.get("group"), 9), r["split"]))


def _goal(x: dict | None) -> bool | None:
    """>= EPISODE_GOAL of the episodes at benign FPR <= FPR_GOAL (None without episodes)."""
    if not x or not x.get("n_episodes"):
        return None
    return bool(x["episode_recall"] >= EPISODE_GOAL and x["fpr"] is not None and x["fpr"] <= FPR_GOAL)


def verdict(rep: dict) -> dict:
    """Which method wins AUPRC; does ours reach >= 90 % of the episodes at a benign FPR <= 1 %, at its
    trained threshold and after the grace period (the deployed operating point)."""
    res = rep.get("results") or {}
    if rep.get("error"):
        return {"auprc_winner": None, "ours_goal": None, "ours_goal_grace": None, "text": f"failed: {rep['error']}"}
    auprc = {m: r["auprc"] for m, r in res.items() if r.get("auprc") is not None}
    win = max(auprc, key=auprc.get) if auprc else None
    o = res.get("ours")
    goal = _goal(o)
    g = (o or {}).get("after_grace")
    goal_g = _goal(g)
    parts = [f"AUPRC won by {win}" if win else "no attacks in the test set: AUPRC undefined"]
    if o is not None:
        if goal is None:
            fpr = g["fpr"] if g else o.get("fpr")
            parts.append(f"ours: no episodes; benign FPR {'after grace ' if g else ''}{_f(fpr, 4)} "
                         f"({'within' if fpr is not None and fpr <= FPR_GOAL else 'above'} 1 %)")
        else:
            parts.append(f"ours {'REACHES' if goal else 'MISSES'} >= {EPISODE_GOAL:.0%} episodes at FPR <= "
                         f"{FPR_GOAL:.0%} at the trained threshold ({o['n_detected']}/{o['n_episodes']} episodes, "
                         f"FPR {_f(o['fpr'], 4)})")
            if goal_g is not None:
                parts.append(f"after grace {'REACHES' if goal_g else 'MISSES'} ({g['n_detected']}/{g['n_episodes']} "
                             f"episodes, FPR {_f(g['fpr'], 4)})")
    return {"auprc_winner": win, "ours_goal": goal, "ours_goal_grace": goal_g, "text": "; ".join(parts)}


def worst(reps: list[dict], methods) -> dict:
    """Per method: the split with the lowest AUPRC, the lowest episode recall and the highest benign FPR."""
    out: dict = {}
    for m in methods:
        rows = [(r["split"], r["results"][m]) for r in reps if m in (r.get("results") or {})]
        w: dict = {}
        for k, fn in (("auprc", min), ("episode_recall", min), ("fpr", max)):
            vals = [(s, x[k]) for s, x in rows if x.get(k) is not None]
            if vals:
                s, v = fn(vals, key=lambda t: t[1])
                w[k] = {"split": s, "value": v}
        out[m] = w
    return out


def render(out: Path) -> dict:
    """report.json + report.md from every split JSON under ``out/splits``."""
    out = Path(out)
    reps = load_splits(out)
    methods = [m for m in METHODS + ("ours_previous",) if any(m in (r.get("results") or {}) for r in reps)]
    for r in reps:
        r["verdict"] = verdict(r)
    report = {"benchmark": "leave one network out (issue 17, section 1)",
              "rendered": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "commit": git_head(), "cores": os.cpu_count(),
              "runs": _runs(reps), "methods": methods, "worst_split": worst(reps, methods),
              "goal": {"episode_recall": EPISODE_GOAL, "fpr": FPR_GOAL},
              "splits": reps}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    notes = out / "NOTES.md"   # hand-written provenance notes (no figures), appended verbatim when present
    if notes.is_file():
        md += "\n" + notes.read_text()
    (out / "report.md").write_text(md)
    return report


def _runs(reps: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in reps:
        m = r.get("run") or {}
        k = json.dumps({k: m.get(k) for k in ("commit", "machine", "caps", "epochs", "seed")}, sort_keys=True)
        if k not in seen:
            seen.add(k)
            out.append({**{k: m.get(k) for k in ("commit", "date", "machine", "cores", "torch_threads", "caps",
                                                   "epochs", "seed")}, "splits": []})
        next(o for o in out if json.dumps({k: o.get(k) for k in ("commit", "machine", "caps", "epochs", "seed")},
                                          sort_keys=True) == k)["splits"].append(r["split"])
    return out


def _grace_cell(g: dict | None) -> str:
    if not g:
        return "n/a"
    return f"{_f(g.get('recall'))} / {_f(g.get('fpr'), 4)} / {g.get('n_detected')}/{g.get('n_episodes')}"


def markdown(report: dict) -> str:
    L = ["# Leave one network out: development benchmark", "",
         "Written by `python -m training.eval_suites generalise` (training/generalise.py); do not edit by hand. "
         "Each split holds one network (capture, later days, or attack family) out of training entirely; "
         "training is benign-only; every threshold comes from training data (ours: conformal quantile on the "
         "held-back benign training flows; baselines: the (1 - target FPR) quantile of their training scores). "
         "Episode = one attacker -> victim (src, dst) pair within one hour, detected when any of its flows is "
         "flagged; TTFA = seconds from an episode's first flow to its first alert (median over detected episodes). "
         "`ours_previous` is the previous default pipeline on the same split (objective, detector input and "
         "detector picked per run by the validation rule; no technique channel), read from `previous/splits/`.",
         "", f"Rendered {report['rendered']} at commit `{report['commit']}`.", "", "Runs behind these splits:", ""]
    for r in report["runs"]:
        c = r.get("caps") or {}
        L.append(f"- commit `{r.get('commit')}`, {r.get('date')}, {r.get('machine')}, {r.get('cores')} cores "
                 f"({r.get('torch_threads')} torch threads), epochs {r.get('epochs')}, seed {r.get('seed')}, "
                 f"caps: train {c.get('max_train')} / test {c.get('max_test')} flows ({c.get('sampling')}); "
                 f"{len(r['splits'])} split(s)")
    hdr = ("| method | AUROC | AUPRC | recall | benign FPR | episodes detected | TTFA median (s) | threshold | "
           "after grace: recall / FPR / episodes | s |", "|---|---|---|---|---|---|---|---|---|---|")
    L += ["", "## Summary", "", "| split | held out | AUPRC winner | ours: episodes / FPR (trained threshold) | "
          "ours after grace: episodes / FPR | verdict |", "|---|---|---|---|---|---|"]
    for r in report["splits"]:
        o = (r.get("results") or {}).get("ours") or {}
        g = o.get("after_grace")
        eps = f"{o.get('n_detected')}/{o.get('n_episodes')} / {_f(o.get('fpr'), 4)}" if o else "n/a"
        geps = f"{g.get('n_detected')}/{g.get('n_episodes')} / {_f(g.get('fpr'), 4)}" if g else "n/a"
        L.append(f"| {r['split']} | {r.get('held_out')} | {r['verdict']['auprc_winner'] or 'n/a'} | {eps} | {geps} | "
                 f"{r['verdict']['text']} |")
    att = [r for r in report["splits"] if any((x.get("auprc") is not None) for x in (r.get("results") or {}).values())]
    wins: dict = {}
    for r in att:
        wins[r["verdict"]["auprc_winner"]] = wins.get(r["verdict"]["auprc_winner"], 0) + 1
    eps = [r for r in report["splits"] if r["verdict"].get("ours_goal") is not None]
    L += ["", f"AUPRC wins over the {len(att)} splits with attacks: "
              + (", ".join(f"{m} {n}" for m, n in sorted(wins.items(), key=lambda t: -t[1])) or "none") + ". "
              f"`ours` reaches >= {EPISODE_GOAL:.0%} of the episodes at benign FPR <= {FPR_GOAL:.0%} on "
              f"{sum(r['verdict']['ours_goal'] for r in eps)} of {len(eps)} splits with episodes at its trained "
              f"threshold, and on {sum(bool(r['verdict'].get('ours_goal_grace')) for r in eps)} after the grace "
              f"period (robust calibration on the earliest {GRACE_FRAC:.0%} of the test records, no labels)."]
    w = report["worst_split"]
    L += ["", "**Worst split** per method (lowest AUPRC, lowest episode recall, highest benign FPR):", "",
          "| method | worst AUPRC | worst episode recall | worst benign FPR |", "|---|---|---|---|"]
    for m, x in w.items():
        cell = lambda k, nd=3: (f"{_f(x[k]['value'], nd)} ({x[k]['split']})" if k in x else "n/a")  # noqa: E731
        L.append(f"| {m} | {cell('auprc')} | {cell('episode_recall')} | {cell('fpr', 4)} |")
    for r in report["splits"]:
        L += ["", f"## {r['split']}", "", r.get("notes") or ""]
        if r.get("error"):
            L += ["", f"**Failed:** {r['error']}"]
            continue
        p, s = r["protocol"], r.get("sampling") or {}
        L += ["", f"- training: {p['train_records']} records ({p['removed_malicious_from_training']} malicious-labelled "
                  f"dropped; {s.get('train', {}).get('method')} of {s.get('train', {}).get('rows_in')}), span "
                  f"{p['train_span'][0]} .. {p['train_span'][1]}; files: {', '.join(r['train_files'])}",
              f"- test: {p['test_records']} records ({p['test_malicious']} malicious, {p['test_benign']} benign; "
              f"{s.get('test', {}).get('method')} of {s.get('test', {}).get('rows_in')}), span {p['test_span'][0]} .. "
              f"{p['test_span'][1]}; files: {', '.join(r['test_files'])}"]
        if "test_dropped_inside_gap" in s:
            L.append(f"- test records dropped inside the {s['gap_days']:g}-day gap: {s['test_dropped_inside_gap']}")
        o = r["results"].get("ours")
        if o:
            L.append(f"- ours: objective {o.get('objective')}, detector input {o.get('flow_parts')}, detector "
                     f"{o.get('detector')}, validation attacks {o.get('val_attacks')}"
                     + (" (model reused: identical training table)" if o.get("reused_model_of_identical_training_table")
                        else ""))
        L += ["", *hdr]
        for m, x in r["results"].items():
            L.append(f"| {m} | {_f(x['auroc'])} | {_f(x['auprc'])} | {_f(x['recall'])} | {_f(x['fpr'], 4)} | "
                     f"{x['n_detected']}/{x['n_episodes']} ({_f(x['episode_recall'])}) | {_f(x['ttfa_median_s'], 1)} | "
                     f"{x['threshold']:.4g} | {_grace_cell(x.get('after_grace'))} | {x['seconds']} |")
        L += ["", f"Verdict: {r['verdict']['text']}."]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.eval_suites generalise",
                                 description="Leave-one-network-out development benchmark")
    add_arguments(ap)
    return run_args(ap.parse_args(argv))


def add_arguments(ap) -> None:
    ap.add_argument("--out", default="reports/generalise")
    ap.add_argument("--splits", default=None, help="comma-separated name patterns, e.g. 'iot23/*Malware-8*,"
                                                   "stratosphere,luflow' (default: all)")
    ap.add_argument("--max-train", type=int, default=150_000, help="cap on training records (even time stride)")
    ap.add_argument("--max-test", type=int, default=100_000, help="cap on test records (even time stride)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DATA), help="the shared flows folder")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--list", action="store_true", help="print the split names and exit")
    ap.add_argument("--render-only", action="store_true", help="re-render report.{json,md} from OUT/splits")


def run_args(a) -> int:
    if a.list:
        for s in select(split_specs(Path(a.data)), a.splits):
            print(s.name)
        return 0
    if a.render_only:
        render(Path(a.out))
        return 0
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown methods {bad}; choose from {list(METHODS)}")
    run(Path(a.out), a.splits, a.max_train, a.max_test, a.epochs, a.seed, Path(a.data), methods)
    print(f"report written to {a.out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The methods compared on a split, all fitted on the same benign training flows: ``ours`` (the default
``train_bundle`` pipeline) and the raw-feature baselines (IsolationForest, PyOD ECOD and HBOS), each
scored on the held-out network (:func:`evaluate`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.generalise.splits import Split, ts_seconds

METHODS = ("ours", "iforest_raw", "ecod", "hbos")


GRACE_FRAC = 0.25       # after_grace: the earliest quarter of the test records is the unlabelled grace period
ECOD_CHUNK = 2000       # ECOD ranks test rows against training rows + the rows scored with them: chunks of at
                        # most this and 1 % of the training rows keep it (nearly) inductive


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

"""The validation rule: the detector input and detector chosen on the held-back period (per-attack-class
partial AUROC at low benign FPR, or benign threshold transfer), with rounded comparisons and a fixed
tie order, and the class-stratified subsample of the fitting flows.
"""
from __future__ import annotations

import math

import numpy as np

from detector.detectors import make_detector, select_detector
from detector.models import parse_flow_parts
from training.pretrain.config import DETECTOR_CANDIDATES, FLOW_CANDIDATES, TrainConfig


def _auprc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s))


RARE = "(rare classes)"


def class_groups(y: np.ndarray, classes: np.ndarray | None, min_flows: int = 5) -> np.ndarray:
    """Attack class of every malicious flow for the per-class score (``""`` elsewhere).

    Unnamed attacks are one class; classes with fewer than ``min_flows`` flows are pooled into one
    (a partial AUROC over two or three flows is noise).
    """
    out = np.full(len(y), "", dtype=object)
    att = y == 1
    if classes is None:
        out[att] = "malicious"
        return out
    names = np.array(["malicious" if c is None else str(c) for c in classes[att]], dtype=object)
    uniq, counts = np.unique(names, return_counts=True)
    rare = set(uniq[counts < min_flows])
    out[att] = [RARE if n in rare else n for n in names]
    return out


def val_score(y: np.ndarray, s: np.ndarray, groups: np.ndarray, max_fpr: float) -> tuple[float, dict[str, float]]:
    """Macro average over attack classes of the standardised partial AUROC (benign FPR <= ``max_fpr``).

    Why not AUPRC: the training inputs' attacks often outnumber the held-back benign flows (IoT-23:
    21k vs 1.8k), where AUPRC saturates near 1 for every candidate and one easy, huge class (a port
    scan) decides. A partial AUROC does not depend on the attack share, looks only at the low-FPR
    end where alerts are raised, and the macro average gives each attack class one vote.
    """
    from sklearn.metrics import roc_auc_score

    ben = y == 0
    per = {}
    for g in sorted(set(groups[y == 1])):
        m = ben | ((y == 1) & (groups == g))
        per[g] = float(roc_auc_score(y[m] == 1, s[m], max_fpr=max_fpr))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def _val_max_fpr(cfg: TrainConfig, n_benign: int) -> float:
    base = cfg.val_max_fpr if cfg.val_max_fpr > 0 else cfg.target_fpr
    return float(min(1.0, max(base, 10.0 / max(n_benign, 1))))


# Noise floor of the validation rule's comparisons: scores and drifts are rounded to this many decimals
# before they are compared, and the tie band is at least TIE_REL x the best score. Float noise (summation
# order, a BLAS path) is ~1e-7 and below; a flow crossing a threshold moves a score by ~1/n_flows >> 1e-9.
ROUND_DIGITS = 9
TIE_REL = 1e-3


def _comparable(x) -> float:
    """``x`` rounded to :data:`ROUND_DIGITS` decimals; None/NaN as -inf (never the best, never tied)."""
    if x is None:
        return float("-inf")
    x = float(x)
    return float("-inf") if math.isnan(x) else round(x, ROUND_DIGITS)


def pick_best(scores: dict[str, float], drift: dict[str, float], tol: float) -> str:
    """The candidate the validation rule keeps, independent of float noise and of dict order:

    1. every score is rounded to :data:`ROUND_DIGITS` decimals (None/NaN count as -inf);
    2. candidates within ``max(tol, TIE_REL * |best|)`` of the best rounded score are tied;
    3. among the tied, the smallest benign threshold drift wins (drift rounded the same way, so two
       drifts equal up to float noise are equal);
    4. remaining ties go to the fixed preference order: the order of ``scores``' keys, which callers
       build from :data:`OBJECTIVE_CANDIDATES`, :data:`FLOW_CANDIDATES` x :data:`DETECTOR_CANDIDATES`.

    So the choice can only change when a score or drift moves by more than the rounding, i.e. when the
    models really differ; two candidates that score the same up to noise always resolve the same way.
    """
    keys = list(scores)
    if not keys:
        raise ValueError("no candidate to pick from")
    sc = {k: _comparable(scores[k]) for k in keys}
    top = max(sc.values())
    if top == float("-inf"):
        tied = keys
    else:
        band = round(max(tol, TIE_REL * abs(top)), ROUND_DIGITS)
        tied = [k for k in keys if sc[k] >= round(top - band, ROUND_DIGITS)]
    dr = {k: (-_comparable(-drift[k]) if k in drift and drift[k] is not None else float("inf")) for k in tied}
    return min(tied, key=lambda k: (dr[k], keys.index(k)))


def select_flow_detector(tr_blocks: dict, va_blocks: dict, y_val: np.ndarray, cfg: TrainConfig,
                         groups: np.ndarray | None = None) -> dict:
    """Choose the detector input (flow parts) and detector on the held-back training period.

    * ``validation="labels"`` and at least ``min_val_attacks`` flows labelled malicious (label 1): every
      candidate (``FLOW_CANDIDATES`` x detectors, or the configured ones) is fitted on the benign training
      flows and scored on the validation flows; the highest :func:`val_score` (per attack class partial
      AUROC at low benign FPR, macro) wins; candidates within ``val_tol`` of it are tied and the one
      whose benign threshold transfers best (smallest drift, :func:`detector.detectors.select_detector`)
      wins the tie. ``groups``: attack class per validation flow (:func:`class_groups`).
    * otherwise the benign-only rule of :func:`detector.detectors.select_detector` picks the detector on
      ``src,dst,edge`` (or the configured parts): the one whose training quantile transfers best to the
      later benign flows.

    Returns ``{"rule", "chosen": {flow_parts, detector}, "candidates", "drift", "fitted": (det, val scores),
    "score"}``.
    """
    names = list(DETECTOR_CANDIDATES) if cfg.detector == "auto" else [cfg.detector]
    n_att = int((y_val == 1).sum())
    n_ben = int((y_val == 0).sum())
    by_labels = cfg.validation == "labels" and n_att >= cfg.min_val_attacks and n_ben >= 2
    if cfg.flow_parts != "auto":
        cands = [cfg.flow_parts]
    elif by_labels:
        cands = list(FLOW_CANDIDATES)
    else:  # the benign rule compares detectors on one input: the issue's, or the fusion's with raw features
        cands = ["src,dst,edge,raw" if cfg.detector == "fusion" else FLOW_CANDIDATES[0]]
    if groups is None:
        groups = class_groups(y_val, None)
    max_fpr = _val_max_fpr(cfg, n_ben)
    contamination = cfg.target_fpr if cfg.target_fpr < 0.5 else 0.01
    ev = (y_val == 0) | (y_val == 1)
    results, fitted, tr_s, va_s = {}, {}, {}, {}
    for parts in cands:
        pt = parse_flow_parts(parts)
        Xtr = np.concatenate([tr_blocks[p] for p in pt], axis=1)
        Xva = np.concatenate([va_blocks[p] for p in pt], axis=1)
        for n in names:
            if n == "fusion" and pt[-1] != "raw":
                continue  # the fusion's forest reads the raw block, the input's last part
            kw = dict(bank=cfg.knn_bank, max_bank=cfg.knn_bank_size) if n in ("knn", "fusion") else {}
            if n == "fusion":
                kw["raw_dim"] = tr_blocks["raw"].shape[1]
            det = make_detector(n, contamination=contamination, random_state=cfg.seed, **kw).fit(Xtr)
            key = f"{parts}|{n}"
            s = det.decision_function(Xva)
            fitted[key] = (det, s)
            tr_s[key], va_s[key] = det.decision_scores_, s[y_val != 1]
            if by_labels:
                score, per = val_score(y_val[ev], s[ev], groups[ev], max_fpr)
                results[key] = {"val_score": score, "val_per_class": per, "val_auprc": _auprc(y_val[ev] == 1, s[ev])}
            else:
                results[key] = {"val_score": None, "val_auprc": None}
    _, drift = select_detector(tr_s, va_s, cfg.target_fpr)
    for k in results:
        results[k]["drift"] = drift[k]
    keys = list(results)
    if by_labels:
        n_cls = len(set(groups[y_val == 1]))
        rule = (f"max per-class partial AUROC (benign FPR <= {max_fpr:.3g}, macro over {n_cls} attack classes) on "
                f"the training inputs' labelled flows ({n_att} malicious, {n_ben} held-back benign); within "
                f"{cfg.val_tol} of the best, the smallest benign threshold drift")
        best = pick_best({k: results[k]["val_score"] for k in keys}, drift, cfg.val_tol)
    else:
        rule = "min |FPR on later benign val at train 1-target quantile - target| (no labelled attacks held back)"
        best = min(keys, key=lambda k: (round(drift[k], ROUND_DIGITS), k.split("|")[1], keys.index(k)))
    parts, det_name = best.split("|")
    return {"rule": rule, "chosen": {"flow_parts": parts, "detector": det_name}, "candidates": results,
            "drift": drift, "fitted": fitted[best], "score": results[best]["val_score"]}


def stratified_keep(groups: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded subsample of at most ``budget`` items spread evenly over ``groups`` (water-filling).

    Every class keeps ``min(size, cap)`` items, ``cap`` as large as the budget allows; leftover slots go
    to the largest classes. Returns a boolean mask over ``groups``.
    """
    keep = np.zeros(len(groups), dtype=bool)
    if budget <= 0 or len(groups) == 0:
        return keep
    uniq, inv, sizes = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    take = np.zeros(len(uniq), dtype=np.int64)
    left = budget
    order = np.argsort(sizes, kind="stable")             # smallest classes first: they keep everything
    for i, c in enumerate(order):
        take[c] = min(int(sizes[c]), left // (len(order) - i))
        left -= take[c]
    for c in order[::-1]:                                  # the floor's remainder, to the largest with room
        extra = min(left, int(sizes[c] - take[c]))
        take[c] += extra
        left -= extra
    for c in range(len(uniq)):
        idx = np.flatnonzero(inv == c)
        keep[rng.choice(idx, min(int(take[c]), len(idx)), replace=False)] = True
    return keep

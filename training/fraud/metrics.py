"""Fraud Detection Handbook metrics: AUC-ROC, average precision, card precision@k per day."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_top_k(day: np.ndarray, customer: np.ndarray, y: np.ndarray, score: np.ndarray,
                         k: int = 100, remove_detected: bool = True) -> tuple[float, list[float]]:
    """Mean over days of: among the ``k`` customers with the highest max score that day,
    the fraction that had a fraudulent transaction that day.

    As in the handbook, customers detected as compromised on a day (in the top k and
    truly fraudulent) are removed from the following days. Returns (mean, per-day list).
    """
    detected: set = set()
    per_day = []
    for d in np.unique(day):
        m = day == d
        c, yy, ss = customer[m], y[m], score[m]
        keep = ~np.isin(c, list(detected)) if detected else np.ones(len(c), bool)
        c, yy, ss = c[keep], yy[keep], ss[keep]
        if len(c) == 0:
            per_day.append(0.0)
            continue
        uc, inv = np.unique(c, return_inverse=True)
        smax = np.full(len(uc), -np.inf)
        np.maximum.at(smax, inv, ss)
        ymax = np.zeros(len(uc), dtype=np.int64)
        np.maximum.at(ymax, inv, yy.astype(np.int64))
        top = np.argsort(-smax, kind="stable")[:k]
        hits = uc[top][ymax[top] == 1]
        per_day.append(len(hits) / k)
        if remove_detected:
            detected.update(hits.tolist())
    return float(np.mean(per_day)) if per_day else float("nan"), per_day


def fraud_metrics(day: np.ndarray, customer: np.ndarray, y: np.ndarray, score: np.ndarray,
                  threshold: float | None = None, k: int = 100) -> dict:
    """AUC-ROC, AP, card precision@k; plus precision/recall/alert rate at ``threshold``."""
    out = {"n": int(len(y)), "frauds": int(y.sum())}
    both = len(np.unique(y)) == 2
    out["auc_roc"] = float(roc_auc_score(y, score)) if both else float("nan")
    out["average_precision"] = float(average_precision_score(y, score)) if both else float("nan")
    out[f"card_precision@{k}"], _ = card_precision_top_k(day, customer, y, score, k)
    if threshold is not None:
        a = score >= threshold
        tp = int((a & (y == 1)).sum())
        out["alert_rate"] = float(a.mean()) if len(a) else float("nan")
        out["precision_at_threshold"] = tp / max(int(a.sum()), 1)
        out["recall_at_threshold"] = tp / max(int(y.sum()), 1)
    return out

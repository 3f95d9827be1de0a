"""Alert threshold calibrated to a target false-positive rate on held-back benign scores.

No attack labels are involved: the threshold is the conformal ``(1 - alpha)``
quantile of scores on benign windows that are *later* in time than the training
windows. With ``n`` calibration scores and exchangeable benign traffic, a new
benign score exceeds it with probability at most ``alpha`` (Vovk et al.).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Calibration:
    """A fitted threshold and what it was fitted on (stored in the bundle)."""

    threshold: float
    target_fpr: float
    n_calibration: int
    calibration_fpr: float  # fraction of calibration scores strictly above the threshold

    def to_dict(self) -> dict:
        return asdict(self)

    def alerts(self, scores: np.ndarray) -> np.ndarray:
        """Boolean alerts for ``scores`` (NaN never alerts)."""
        s = np.asarray(scores, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(s, nan=-np.inf) > self.threshold


def calibrate_threshold(benign_scores: np.ndarray, target_fpr: float = 0.01) -> Calibration:
    """Threshold such that at most ``target_fpr`` of future benign scores exceed it.

    Uses the conformal quantile: the ``ceil((n + 1)(1 - alpha))``-th smallest
    score. When ``n`` is too small for the requested rate, the maximum score is
    used (the achievable FPR is then about ``1/(n+1)``) and that is reported.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    s = np.asarray(benign_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("calibration needs at least one finite benign score")
    s = np.sort(s)
    n = s.size
    k = math.ceil((n + 1) * (1.0 - target_fpr))  # 1-based rank
    thr = float(s[min(k, n) - 1])
    return Calibration(threshold=thr, target_fpr=float(target_fpr), n_calibration=int(n),
                       calibration_fpr=float((s > thr).mean()))

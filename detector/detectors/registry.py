"""The detectors by name (:data:`DETECTORS`, the names saved in a bundle's ``detector.json``),
:func:`make_detector`, and the benign-only choice between fitted detectors (:func:`select_detector`).
"""
from __future__ import annotations

import numpy as np

from detector.detectors.base import _Base
from detector.detectors.fusion import FusionDetector
from detector.detectors.iforest import IForestDetector
from detector.detectors.knn import KNNDetector

DETECTORS = {"knn": KNNDetector, "iforest": IForestDetector, "fusion": FusionDetector}


def make_detector(name: str, **kw) -> _Base:
    """Build a detector by name (``knn``, ``iforest`` or ``fusion``, which needs ``raw_dim``)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](**kw)


def select_detector(train_scores: dict[str, np.ndarray], val_scores: dict[str, np.ndarray],
                    target_fpr: float = 0.01) -> tuple[str, dict[str, float]]:
    """Pick the default detector from benign data only (no attack labels).

    Rule ("threshold transfer"): for each detector take the ``1 - target_fpr``
    quantile of its scores on the *training* benign flows, and measure which
    fraction of the *later* benign validation flows exceed it. The detector
    whose rate stays closest to ``target_fpr`` is the most stable under the
    drift of benign traffic over time, so its calibrated threshold is the most
    trustworthy on unseen data. Ties go to the first name in sorted order.
    Returns the name and the per-detector drift ``|fpr_val - target|``.
    """
    drift: dict[str, float] = {}
    for name in sorted(train_scores):
        tr, va = np.asarray(train_scores[name]), np.asarray(val_scores[name])
        if len(tr) == 0 or len(va) == 0:
            drift[name] = float("inf")
            continue
        t = np.quantile(tr, 1.0 - target_fpr)
        drift[name] = float(abs((va > t).mean() - target_fpr))
    best = min(drift, key=lambda n: (drift[n], n))
    return best, drift

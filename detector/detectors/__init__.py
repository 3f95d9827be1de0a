"""Anomaly detectors on embeddings (PyOD-style API: fit / decision_function, higher = more anomalous).

kNN and IsolationForest standardise their input with statistics of the fitting data
(benign embeddings), so the embedding scale does not dominate distances; the fusion
runs one of each (embedding columns, raw columns) and adds their standardised scores.
``threshold_`` after ``fit`` is the ``1 - contamination`` quantile of the
training scores; the bundle replaces it by the threshold calibrated on held-back
benign windows (:mod:`detector.calibration`).

Every fitted detector is numbers only: :meth:`~_Base.state` gives its constructor parameters and scalar
fitted attributes (JSON) and its fitted arrays (``np.savez``), :meth:`~_Base.from_state` rebuilds it and
refuses state that does not describe a detector it can score with (:mod:`detector.bundle` stores it so
in ``detector.json`` + ``detector.npz``; nothing is unpickled).

One detector per module (as PyOD): :mod:`.knn`, :mod:`.iforest`, :mod:`.fusion`; what they share in
:mod:`.base`; the name table and the benign-only choice in :mod:`.registry`.
"""
from __future__ import annotations

from detector.detectors.base import _Base
from detector.detectors.fusion import FusionDetector
from detector.detectors.iforest import IForestDetector
from detector.detectors.knn import KNNDetector, kcenter_greedy
from detector.detectors.registry import DETECTORS, make_detector, select_detector

__all__ = ["DETECTORS", "FusionDetector", "IForestDetector", "KNNDetector", "_Base", "kcenter_greedy", "make_detector",
           "select_detector"]

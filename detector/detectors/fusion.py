"""Fusion detector: one kNN on the embedding columns and one isolation forest on the raw columns, their
standardised scores added.
"""
from __future__ import annotations

import numpy as np

from detector.detectors.base import _Base, _state_number
from detector.detectors.iforest import IForestDetector
from detector.detectors.knn import KNNDetector
from detector.tensors import FactoredRows


class FusionDetector(_Base):
    """kNN on the embedding columns plus IsolationForest on the raw flow columns, scores added.

    .. math::
        s(x) = \\sum_{c \\in \\{\\text{knn}, \\text{forest}\\}}
               \\frac{s_c(x_c) - \\operatorname{med}_c}{q_c - \\operatorname{med}_c}

    ``x = [x_emb ‖ x_raw]``: the last ``raw_dim`` columns are the raw flow features (the ``raw`` block,
    always last in a detector input), the rest the learned embedding. Each part is scored by its own
    detector, fitted on the same benign rows, and each score is put in units of that detector's benign
    spread — median ``med_c`` and ``1 - contamination`` quantile ``q_c`` of its training scores (kNN:
    leave-one-out) — before the sum, so neither scale dominates (PyOD's score "standardise, then
    average", with a robust standardiser: benign kNN scores are heavy-tailed). A flow that either view
    finds far from benign traffic scores high; one that both find unusual scores highest.

    Why: the embedding and the raw features fail on different splits (a new device's benign flows look
    anomalous in the graph; a stealthy scan looks benign per flow), and the raw-feature forest is the
    baseline the model must beat. Whether the fusion is used is decided per model on validation, like
    any other candidate (:func:`training.pretrain.select_flow_detector`).
    """

    name = "fusion"

    def __init__(self, raw_dim: int, k: int = 5, max_bank: int = 512, bank: str = "coreset",
                 n_estimators: int = 100, contamination: float = 0.01, random_state: int = 0) -> None:
        super().__init__(contamination, random_state, raw_dim=(raw_dim, 1), k=(k, 1), max_bank=(max_bank, 2),
                         n_estimators=(n_estimators, 1))
        if bank not in KNNDetector.BANKS:
            raise ValueError(f"bank must be one of {KNNDetector.BANKS}, got {bank!r}")
        self.bank = bank

    def fit(self, X: np.ndarray) -> FusionDetector:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] <= self.raw_dim:
            raise ValueError(f"fusion needs embedding columns before the last raw_dim={self.raw_dim}, "
                             f"got shape {X.shape}")
        self.n_features_in_ = X.shape[1]
        emb, raw = X[:, :-self.raw_dim], X[:, -self.raw_dim:]
        self.knn_ = KNNDetector(self.k, self.max_bank, self.bank, self.contamination, self.random_state).fit(emb)
        self.forest_ = IForestDetector(self.n_estimators, contamination=self.contamination,
                                       random_state=self.random_state).fit(raw)
        self.centers_, self.spreads_ = [], []
        for d in (self.knn_, self.forest_):
            med = float(np.median(d.decision_scores_))
            q = float(np.quantile(d.decision_scores_, 1.0 - self.contamination))
            self.centers_.append(med)
            self.spreads_.append(max(q - med, 1e-12))  # all-equal training scores: avoid a zero division
        p = self._parts(self.knn_.decision_scores_, self.forest_.decision_scores_)
        self._finish_fit(p["knn"] + p["forest"])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        p = self.part_scores(X)
        return p["knn"] + p["forest"]

    def part_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each part's standardised score (``knn``, ``forest``; they add up to :meth:`decision_function`):
        which view made a flow anomalous."""
        self._check_fitted()
        if not isinstance(X, FactoredRows):
            X = np.asarray(X, dtype=np.float32)
        if len(X.shape) != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}, the detector was fitted on {self.n_features_in_} features")
        if len(X) == 0:
            return {"knn": np.zeros(0), "forest": np.zeros(0)}
        last, index = X.blocks[-1] if isinstance(X, FactoredRows) else (None, None)
        if last is not None and index is None and last.shape[1] == self.raw_dim and len(X.blocks) > 1:
            # the raw block is the last per-row block: the kNN part keeps the endpoint blocks factored
            emb, raw = FactoredRows(X.blocks[:-1]), last
        else:
            X = np.asarray(X, dtype=np.float32)
            emb, raw = X[:, :-self.raw_dim], X[:, -self.raw_dim:]
        return self._parts(self.knn_.decision_function(emb), self.forest_.decision_function(raw))

    _SCALARS = {**_Base._SCALARS, "n_features_in_": int}
    _ARRAYS = {"decision_scores_": (np.float64, 1)}
    PARTS = {"knn": ("knn_", KNNDetector), "forest": ("forest_", IForestDetector)}

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """As :meth:`_Base.state`, plus each part's ``(params, arrays)``: params under ``knn_`` / ``forest_``,
        arrays prefixed ``knn.`` / ``forest.``."""
        params, arrays = super().state()
        params.update(centers_=[float(c) for c in self.centers_], spreads_=[float(c) for c in self.spreads_])
        for prefix, (attr, _) in self.PARTS.items():
            p, a = getattr(self, attr).state()
            params[attr] = p
            arrays.update({f"{prefix}.{k}": v for k, v in a.items()})
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict) -> FusionDetector:
        params = dict(params) if isinstance(params, dict) else params
        parts, sums = {}, {}
        for prefix, (attr, part_cls) in cls.PARTS.items():
            if not isinstance(params, dict) or attr not in params:
                raise ValueError(f"fusion parameters lack the {prefix} part ({attr!r})")
            own = {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
            try:
                parts[attr] = part_cls.from_state(params.pop(attr), own)
            except ValueError as exc:
                raise ValueError(f"fusion {prefix} part: {exc}") from None
        for name in ("centers_", "spreads_"):
            v = params.pop(name, None)
            if not (isinstance(v, list) and len(v) == 2):
                raise ValueError(f"parameter {name!r} must be a list of two numbers, got {v!r}")
            sums[name] = [_state_number({name: x}, name) for x in v]
        det = super().from_state(params, {k: v for k, v in arrays.items() if "." not in k})
        det.__dict__.update(parts)
        det.__dict__.update(sums)
        emb, raw = det.knn_.mean_.shape[0], det.forest_.mean_.shape[0]
        if raw != det.raw_dim or emb + raw != det.n_features_in_:
            raise ValueError(f"fusion parts fitted on {emb} + {raw} features, parameters say "
                             f"{det.n_features_in_ - det.raw_dim} + {det.raw_dim}")
        if not all(np.isfinite(det.centers_)) or not all(x > 0 and np.isfinite(x) for x in det.spreads_):
            raise ValueError("parameters 'centers_' / 'spreads_' must be finite, spreads > 0")
        return det

    def _check_state(self) -> None:
        pass  # the parts are checked by their own from_state; the widths in from_state

    def _parts(self, s_knn: np.ndarray, s_forest: np.ndarray) -> dict[str, np.ndarray]:
        return {"knn": (np.asarray(s_knn) - self.centers_[0]) / self.spreads_[0],
                "forest": (np.asarray(s_forest) - self.centers_[1]) / self.spreads_[1]}

    def __repr__(self) -> str:
        return (f"FusionDetector(raw_dim={self.raw_dim}, k={self.k}, max_bank={self.max_bank}, bank={self.bank!r}, "
                f"n_estimators={self.n_estimators}, contamination={self.contamination})")

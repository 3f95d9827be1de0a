"""The scorer's result records: :class:`WindowScores` (one window) and :class:`FlowScores` (a group of
consecutive windows, for offline scoring).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WindowScores:
    """Scores of one window; index ``i`` of the edge arrays is row ``i`` of ``window.table``."""

    rows: np.ndarray                      # [E] int64, the `row` of each flow
    scores: np.ndarray                    # [E] float64, higher = more anomalous
    alerts: np.ndarray                    # [E] bool, scores > bundle threshold
    top_technique: list                   # [E] str | None, from the knowledge features
    node_scores: np.ndarray               # [N] float64, max score of the endpoint's flows in the window
    node_key: list = field(default_factory=list)  # [N] endpoint keys
    window_start: float = 0.0
    window_end: float = 0.0
    threshold: float = float("nan")
    # Long-horizon behaviour (ingest.behaviour; enters scores and alerts only through the bundle's technique
    # channel, below, when it has one); None when
    # the scorer runs without it. [E] object: per flow, a tuple of the ATT&CK ids fired
    # (knowledge.behaviour_predicates.fired; () where none); [E, T] float32: technique scores, columns
    # knowledge.behaviour_predicates.TECHNIQUES.
    behaviour_techniques: np.ndarray | None = None
    behaviour_scores: np.ndarray | None = None
    # Technique channel (detector.technique_detector; None when the bundle has none): [E] float64 its
    # score (fires above its own threshold), [E] bool the flows alerted only because it lifted their score
    # (their embedding score was at or below the threshold; their top_technique is the channel's).
    technique_scores: np.ndarray | None = None
    technique_raised: np.ndarray | None = None
    # ``explain(k) -> dict``: the knowledge explanation of flow k (the predicates that fired with their values,
    # the techniques they point to); None when the scorer has no knowledge block (detector.alerts evidence).
    explain: object = None

    @property
    def num_alerts(self) -> int:
        return int(self.alerts.sum())


@dataclass
class FlowScores:
    """Flow scores of consecutive windows together (offline scoring: :meth:`StreamScorer.iter_flow_scores`)."""

    rows: np.ndarray                      # [E] int64, the `row` of each flow
    scores: np.ndarray                    # [E] float64
    alerts: np.ndarray                    # [E] bool, scores > bundle threshold
    top_technique: np.ndarray             # [E] object, str | None
    behaviour_techniques: np.ndarray | None = None  # [E] object, tuple of ids (as WindowScores)
    behaviour_scores: np.ndarray | None = None      # [E, T] float32 (as WindowScores)
    technique_scores: np.ndarray | None = None      # [E] float64 (as WindowScores)
    technique_raised: np.ndarray | None = None      # [E] bool (as WindowScores)

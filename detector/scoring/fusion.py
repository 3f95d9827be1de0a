"""The technique channel: the bundle's technique detector scored on a window's knowledge and behaviour
columns and fused with the embedding detector's scores (it only ever adds alerts).
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _named(top: np.ndarray, fired: np.ndarray, names: np.ndarray) -> np.ndarray:
    """``top`` (object array, changed in place) with the technique channel's technique where it fired."""
    top[fired] = names[fired]
    return top


class _TechniqueChannel:
    """The bundle's technique detector (:mod:`detector.technique_detector`) applied to a window's flows:
    its activations are the knowledge block's technique columns (``kb.edge[:, kb.tech_slice]``) and the
    behaviour technique scores (``WindowScores.behaviour_scores``), in the detector's column order
    (``knowledge:*`` then ``behaviour:*``). The two ranges are scored apart (:meth:`TechniqueDetector.partial`)
    and joined by a maximum (ties to the knowledge column), so a group's knowledge rows shared by
    ``transform_many`` are scored once per distinct row (cached on them), and both scoring paths give the
    same values. Missing evidence (no knowledge block, behaviour off) scores -1: it never fires."""

    def __init__(self, det) -> None:
        from knowledge.behaviour_predicates import TECHNIQUES

        self.det = det
        cols = list(det.columns_)
        self.nk = sum(1 for c in cols if c.startswith("knowledge:"))
        beh = cols[self.nk:]
        self.nb = len(beh)
        if beh and beh != [f"behaviour:{t}" for t in TECHNIQUES]:
            log.warning("technique channel: behaviour columns %s differ from this version's %s; scoring "
                        "without them", beh, list(TECHNIQUES))
            self.nb = 0

    @classmethod
    def of(cls, bundle) -> _TechniqueChannel | None:
        det = getattr(bundle, "technique", None)
        return cls(det) if det is not None else None

    def _knowledge(self, kb, n: int) -> tuple[np.ndarray, np.ndarray]:
        det = self.det
        if kb is None or self.nk == 0 or getattr(kb, "n_tech", -1) != self.nk:
            return np.full(n, -1.0), np.zeros(n, dtype=np.int64)
        rows = getattr(kb, "_rows", None)
        if rows is not None:  # a transform_many block (edge built or not): its shared rows
            shared, idx = rows
            cache = getattr(shared, "_technique", None)
            if cache is None or cache[0] is not det:
                cache = (det, *det.partial(shared.rows[:, kb.tech_slice], 0))
                shared._technique = cache
            return cache[1][idx], cache[2][idx]
        return det.partial(kb.edge[:, kb.tech_slice], 0)

    errors = 0

    def fuse(self, scores: np.ndarray, kb, behaviour: np.ndarray | None, threshold: float) -> tuple:
        """``(fused scores, channel scores, channel technique [E] object, fired [E] bool, raised [E] bool)``
        for one window's flows (``scores``: the embedding detector's). A failure leaves the scores as they
        are (logged): the channel only ever adds alerts."""
        try:
            return self._fuse(scores, kb, behaviour, threshold)
        except Exception as exc:  # noqa: BLE001 - a side channel must not cost the window its scores
            self.errors += 1
            if self.errors <= 3:
                log.warning("technique channel failed on a window: %r", exc)
            n = len(scores)
            return (np.asarray(scores, dtype=np.float64), np.full(n, -1.0), np.full(n, None, dtype=object),
                    np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))

    def _fuse(self, scores: np.ndarray, kb, behaviour: np.ndarray | None, threshold: float) -> tuple:
        from detector.technique_detector import fuse

        det, n = self.det, len(scores)
        s, j = self._knowledge(kb, n)
        if self.nb and behaviour is not None and len(behaviour) == n and behaviour.shape[1] == self.nb:
            sb, jb = det.partial(behaviour, self.nk)
            better = sb > s
            s, j = np.where(better, sb, s), np.where(better, jb, j)
        fused, raised = fuse(scores, s, det.threshold_, threshold, det.lift_gap_)
        fired = s > det.threshold_
        return fused, s, det.name_of(s, j), fired, raised

"""The long-horizon behaviour side channel of the scorer: :class:`_Behaviour` feeds every flow once, in
window order, to an :class:`ingest.behaviour.BehaviourState`; :func:`behaviour_top` names each flow's
strongest fired technique.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def behaviour_top(scores: np.ndarray | None) -> np.ndarray | None:
    """Per flow, the fired behaviour technique with the highest score (ties: the first in
    ``knowledge.behaviour_predicates.TECHNIQUES``), None where none fired: ``[E]`` object."""
    if scores is None:
        return None
    from knowledge.behaviour_predicates import FIRE_THRESHOLD, TECHNIQUES

    out = np.empty(len(scores), dtype=object)
    if len(scores) and scores.shape[1]:
        best = np.argmax(scores, axis=1)
        hit = scores[np.arange(len(scores)), best] >= FIRE_THRESHOLD
        out[hit] = np.asarray(TECHNIQUES, dtype=object)[best[hit]]
    return out


class _Behaviour:
    """The scorer's long-horizon behaviour state (:class:`ingest.behaviour.BehaviourState`) fed with every
    flow exactly once, in window order.

    Tumbling windows are disjoint: each window's rows are fed whole. A window that starts before the
    previous one ended (sliding windows) shares rows with it: only its rows not in the previous window
    (by ``row``) are fed, and the shared rows get the results they had there. The new rows of consecutive
    windows given together (a scoring group) go through ONE ``update`` (its per-call cost is most of the
    cost at a few hundred flows per window): the same features as one update per window, since each
    window's flows are not earlier than the previous window's, unless the store evicts keys within the
    group (``BehaviourState.update``). Windows that fail here get None (logged) and scoring goes on."""

    # what BehaviourState.update reads (the rest of the table is not copied into the group's batch)
    COLUMNS = ("ts", "src_ip", "dst_ip", "dst_port", "proto", "conn_state", "src_bytes", "dst_bytes")

    def __init__(self, params=None) -> None:
        from ingest.behaviour import BehaviourParams, BehaviourState
        from knowledge.behaviour_predicates import FIRE_THRESHOLD, TECHNIQUES

        if isinstance(params, dict):
            params = BehaviourParams.from_json(params)
        self.state = BehaviourState(params if isinstance(params, BehaviourParams) else None)
        self.threshold = FIRE_THRESHOLD
        self.n_tech = len(TECHNIQUES)
        # every set of fired techniques as a tuple, indexed by its bit code (2^T entries, T = 6 today)
        self.tuples = np.empty(1 << self.n_tech, dtype=object)
        for code in range(1 << self.n_tech):
            self.tuples[code] = tuple(t for j, t in enumerate(TECHNIQUES) if code >> j & 1)
        self.bits = (1 << np.arange(self.n_tech)).astype(np.int64)
        # the last window fed: (end, rows sorted, their positions in it or None, its scores)
        self.prev = None
        self.errors = 0

    def windows(self, windows) -> list:
        """Per window, ``(techniques [E] object, scores [E, T] float32)`` for the rows of its table in
        order (None for a window that failed)."""
        try:
            return self._windows(windows)
        except Exception as exc:  # noqa: BLE001 - a side channel must not cost the windows their scores
            self.errors += 1
            self.prev = None
            if self.errors <= 3:
                log.warning("behaviour state failed on windows [%s, %s): %r", windows[0].start, windows[-1].end, exc)
            return [None] * len(windows)

    def _windows(self, windows) -> list:
        import pyarrow as pa

        from knowledge.behaviour_predicates import compute_behaviour_predicates, technique_scores

        plans: list = []   # per window: None (empty) or (rows, known mask | None, index into previous | None)
        fresh: list = []   # the rows to feed, window by window
        end = self.prev[0] if self.prev is not None else None
        p_rows = self.prev[1] if self.prev is not None else None
        for w in windows:
            table = w.table
            if table.num_rows == 0:
                plans.append(None)
                continue
            rows = table.column("row").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            known = at = None
            if end is not None and float(w.start) < end and len(p_rows):  # overlapping (sliding) windows
                at = np.clip(np.searchsorted(p_rows, rows), 0, len(p_rows) - 1)
                known = p_rows[at] == rows
                if not known.any():
                    known = at = None
            names = table.schema.names
            cols = [c for c in self.COLUMNS if c in names]
            if known is None:
                fresh.append(table.select(cols))
            elif not known.all():
                fresh.append(table.select(cols).filter(pa.array(~known, pa.bool_())))
            plans.append((rows, known, at))
            end, p_rows = float(w.end), np.sort(rows)
        if fresh:
            batch = fresh[0] if len(fresh) == 1 else pa.concat_tables(fresh, promote_options="permissive")
            new_scores = technique_scores(compute_behaviour_predicates(self.state.update(batch)))
        else:
            new_scores = np.zeros((0, self.n_tech), dtype=np.float32)
        out: list = []
        used = 0
        prev = self.prev
        for w, plan in zip(windows, plans):
            if plan is None:
                out.append((np.zeros(0, dtype=object), np.zeros((0, self.n_tech), dtype=np.float32)))
                continue
            rows, known, at = plan
            n = len(rows)
            if known is None:
                scores = new_scores[used:used + n]
                used += n
            else:
                scores = np.empty((n, self.n_tech), dtype=np.float32)
                _end, _rows, pos, p_scores = prev
                scores[known] = p_scores[at[known] if pos is None else pos[at[known]]]
                k = int((~known).sum())
                scores[~known] = new_scores[used:used + k]
                used += k
            out.append((self.tuples[(scores >= self.threshold).astype(np.int64) @ self.bits], scores))
            if n > 1 and not bool(np.all(rows[1:] > rows[:-1])):  # windows hold rows in `row` order; in case not
                o = np.argsort(rows, kind="stable")
                prev = (float(w.end), rows[o], o, scores)
            else:
                prev = (float(w.end), rows, None, scores)
        self.prev = prev
        return out

"""Streaming scorer: window -> graph (+ knowledge block) -> STGNN -> detector -> scores and alerts."""
from __future__ import annotations

import copy
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch

from detector.pipeline import window_groups
from detector.runtime import torch_threads
from detector.tensors import FactoredRows

log = logging.getLogger(__name__)


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
    def of(cls, bundle) -> "_TechniqueChannel | None":
        det = getattr(bundle, "technique", None)
        return cls(det) if det is not None else None

    def _knowledge(self, kb, n: int) -> tuple[np.ndarray, np.ndarray]:
        det = self.det
        if kb is None or self.nk == 0 or getattr(kb, "n_tech", -1) != self.nk:
            return np.full(n, -1.0), np.zeros(n, dtype=np.int64)
        rows = getattr(kb, "_rows", None)
        if getattr(kb, "_edge", True) is None and rows is not None:  # a transform_many block: shared rows
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


class _Built(list):
    """:meth:`StreamScorer._build_group`'s per-window builds, with the group's behaviour results
    (``behaviour[k]``: ``(techniques, scores)`` or None) alongside."""

    behaviour: list | None = None


class StreamScorer:
    """Holds the temporal state (node memory, previous-flow times) across the windows of one stream.

    Each scorer owns a private copy of the model, so two scorers never share state.
    """

    # Default of the long-horizon behaviour side channel (WindowScores.behaviour_*), when neither the
    # constructor, the bundle (a ``behaviour`` attribute) nor GRAPHSENTRY_BEHAVIOUR (0/off/false/no) says.
    BEHAVIOUR = True

    def __init__(self, bundle, behaviour=None) -> None:
        """``behaviour``: keep an :class:`ingest.behaviour.BehaviourState` across the windows and give each
        flow its fired behaviour techniques (``WindowScores.behaviour_techniques``; scores and alerts change
        only through the bundle's technique channel, which reads the behaviour technique scores): True/False, or the state's ``BehaviourParams`` (or their JSON dict) to turn it on
        with them. None: the bundle's ``behaviour`` attribute if it has one, else the environment variable
        ``GRAPHSENTRY_BEHAVIOUR``, else :attr:`BEHAVIOUR`."""
        self.bundle = bundle
        self.model = copy.deepcopy(bundle.model).eval()
        self.model.reset_state()
        self.stream = bundle.pipeline.stream()
        self.windows = 0
        if behaviour is None:
            behaviour = getattr(bundle, "behaviour", None)
        if behaviour is None:
            env = os.environ.get("GRAPHSENTRY_BEHAVIOUR", "").strip().lower()
            behaviour = (env not in ("0", "off", "false", "no")) if env else self.BEHAVIOUR
        self.behaviour_params = None if isinstance(behaviour, bool) else behaviour
        self.behaviour_enabled = bool(behaviour is not False)
        self._behaviour: _Behaviour | None = None  # made on the first window (imports numba)
        self.technique = _TechniqueChannel.of(bundle)

    @property
    def behaviour(self):
        """The :class:`ingest.behaviour.BehaviourState` of this stream (None when off or not started)."""
        return self._behaviour.state if self._behaviour is not None else None

    def restore_behaviour(self, state) -> None:
        """Continue from a saved :class:`ingest.behaviour.BehaviourState` (a daemon restart): the next
        windows are fed into ``state`` as if this scorer had built it. No-op when behaviour is off."""
        if not self.behaviour_enabled:
            return
        self._behaviour = _Behaviour(state.params)
        self._behaviour.state = state

    def reset(self) -> None:
        """Forget the stream (new capture, replay from the start)."""
        self.model.reset_state()
        self.stream = self.bundle.pipeline.stream()
        self._behaviour = None

    def _behave(self, windows) -> list | None:
        """Behaviour results of consecutive windows (fed in order), or None when off."""
        if not self.behaviour_enabled:
            return None
        if self._behaviour is None:
            try:
                self._behaviour = _Behaviour(self.behaviour_params)
            except Exception as exc:  # noqa: BLE001 - e.g. bad params: score without it, say so
                log.warning("behaviour state unavailable (%r); scoring without it", exc)
                self.behaviour_enabled = False
                return None
        return self._behaviour.windows(windows)

    @torch.no_grad()
    def embed_window(self, window):
        """``(data, kb, node_emb, flow_emb)`` for one window; advances the temporal state."""
        data, kb = self.stream.build(window)
        z, _h, flow = self.model.embed(data, update_state=True)
        return data, kb, z, flow

    def _empty(self, window) -> WindowScores:
        e = np.zeros(0)
        thr = float(self.bundle.threshold)
        return WindowScores(np.zeros(0, np.int64), e, np.zeros(0, bool), [], e, [], window.start, window.end, thr)

    def _finish(self, window, data, kb, scores: np.ndarray, behaviour=None) -> WindowScores:
        thr = float(self.bundle.threshold)
        n_rows = window.table.num_rows
        tech = self.technique.fuse(scores, kb, behaviour[1] if behaviour is not None else None, thr) \
            if self.technique is not None else None
        if tech is not None:
            scores = tech[0]
        alerts = scores > thr
        n = int(data.num_nodes)
        node_scores = np.full(n, -np.inf)
        ei = data.edge_index.numpy()
        np.maximum.at(node_scores, ei[0], scores)
        np.maximum.at(node_scores, ei[1], scores)
        if kb is not None:
            try:
                fast = getattr(kb, "top_technique_array", None)
                top = fast().tolist() if fast is not None else list(kb.top_technique(np.arange(n_rows)))
            except Exception:
                top = [None] * n_rows
        else:
            top = [None] * n_rows
        if tech is not None and tech[3].any():
            top = _named(np.asarray(top, dtype=object), tech[3], tech[2]).tolist()
        self.windows += 1
        return WindowScores(
            rows=data.edge_row.numpy().astype(np.int64), scores=scores, alerts=alerts, top_technique=top,
            node_scores=node_scores, node_key=list(data.node_key), window_start=float(window.start),
            window_end=float(window.end), threshold=thr,
            behaviour_techniques=behaviour[0] if behaviour is not None else None,
            behaviour_scores=behaviour[1] if behaviour is not None else None,
            technique_scores=tech[1] if tech is not None else None,
            technique_raised=tech[4] if tech is not None else None,
        )

    def _decide(self, flow: np.ndarray) -> np.ndarray:
        return np.asarray(self.bundle.detector.decision_function(flow), dtype=np.float64)

    def score_window(self, window) -> WindowScores:
        if window.table.num_rows == 0:
            return self._empty(window)
        beh = self._behave([window])
        # Small graphs: single-threaded torch (detector/runtime.py), as offline scoring; also for
        # callers such as the daemon that do not set it. Switching costs about a microsecond.
        with torch_threads():
            data, kb, _z, flow = self.embed_window(window)
        return self._finish(window, data, kb, self._decide(flow.numpy()), beh[0] if beh else None)

    # Detectors whose decision_function scores each row on its own, so one call over a group equals one per
    # window (the forest bit for bit; kNN up to the float rounding of its distance matrix product).
    ROWWISE_DETECTORS = ("IForestDetector", "KNNDetector", "FusionDetector")
    # Detectors given a group's flows as FactoredRows (the endpoint blocks once per node; same scores up to
    # float rounding): the kNN search (alone or as the fusion's embedding part) then multiplies each
    # endpoint's embedding with the bank once per group instead of once per flow (LUFlow, 5-min windows:
    # ~33 flows per endpoint).
    FACTORED_DETECTORS = ("KNNDetector", "FusionDetector")

    # Records per batched group: bounds the memory of the concatenated flow embeddings.
    # 16384 rather than 65536: a group's edge tensors (E x ~340 float32) then stay under glibc's 32 MB mmap
    # threshold, so they reuse freed heap memory instead of page-faulting fresh pages on every call
    # (measured 12% faster end to end on LUFlow, 5-min windows); the per-call overheads are paid by then.
    BATCH_RECORDS = 16384
    # Build group i + 1 in a worker thread while group i is scored (see score_windows); False: one thread,
    # groups in turn (same results; benchmarks/score_bench.py measures both).
    OVERLAP = True
    # Groups handed to the worker ahead of the one being scored: more than one evens out groups whose
    # build and score times differ (the worker never waits for this thread to pull the next group).
    AHEAD = 2
    # Edge knowledge blocks passed factored (shared distinct rows + per-edge index, projected once per
    # distinct row: GraphStream.build_many(factored_kb=True)); False: joined into edge_attr. Scores
    # equal up to float rounding.
    FACTORED_KB = True

    def score_windows(self, windows, return_exceptions: bool = False) -> list:
        """Score consecutive windows (in window order); the scores of :meth:`score_window` on each in turn.

        What does not depend on the temporal state is batched: the graphs (``GraphBuilder.build_many``),
        the knowledge blocks (``KnowledgeFeaturizer.transform_many``, bit-identical per window) and the
        detector call (one ``decision_function`` over all flows when the detector scores rows
        independently and exactly, i.e. the isolation forest). The model's graph encoder runs once
        per group on the union of its graphs (:meth:`STGNN.embed_many`): scores then equal the one at
        a time ones up to float rounding (``np.allclose``), not bit for bit. Its GRU memory still
        advances window by window, in order. With ``return_exceptions=True`` a window that fails gives its
        exception in its slot instead of raising (the others are still scored).

        With more than one group the two halves overlap: a worker thread builds the graphs and knowledge
        blocks of group ``i + 1`` while this thread runs the encoder, advances the GRU memory, runs the
        detector and finishes group ``i`` (NumPy, Arrow, torch and the tree walk release the GIL in
        their kernels). Each half keeps its own state and runs its groups in order (the graph stream in
        the worker, the model here), so the results are those of running them one after the other
        (``test_overlapped_groups_equal_groups_in_turn``). The split point is measured (LUFlow, 136k
        records, best of 5-6): once the tree walk was compiled, the encoder in the worker made the worker
        the bottleneck (stage 94k vs 116k records/s); with the compiled knowledge kernels too (worker
        ~0.6 s, this thread ~1.0 s CPU) the two splits measure alike (121k vs 124k), and this one keeps
        the worker to the graph stream.
        """
        out = [r for _w, r in self.iter_scores(windows)]
        if not return_exceptions:
            for r in out:
                if isinstance(r, BaseException):
                    raise r
        return out

    def iter_scores(self, windows):
        """Lazily score an iterable of consecutive windows: yields ``(window, WindowScores or exception)``
        in window order, a group of at most :attr:`BATCH_RECORDS` records at a time (see
        :meth:`score_windows`). Pulls the next group before scoring the current one so that its graphs
        are built meanwhile: the whole input is one pipeline, not one per call. Runs with the
        single-thread torch setting; consume it to the end (or close it) to restore the caller's.
        """
        for group, res in self._pipeline(windows, self._score_built):
            yield from zip(group, res)

    def iter_flow_scores(self, windows):
        """:meth:`iter_scores` for offline scoring of flows: yields ``(windows, FlowScores or None,
        [(window, exception), ...])`` per group, the flows of all its scored windows together and no
        endpoint scores (nothing per window but the error path). Same flow scores as :meth:`iter_scores`."""
        for group, (flows, failed) in self._pipeline(windows, self._score_flows):
            yield group, flows, failed

    def _pipeline(self, windows, score):
        """``(group, score(group, built))`` for the groups of ``windows`` in order; the builds run in one
        worker thread, up to :attr:`AHEAD` groups ahead (see :meth:`score_windows`)."""
        groups = window_groups(windows, self.BATCH_RECORDS)
        first = next(groups, None)
        if first is None:
            return
        with torch_threads():
            second = next(groups, None)
            if second is None or not self.OVERLAP:  # one group (the daemon's usual call): no worker thread
                for group in chain([first], [second] if second is not None else [], groups):
                    yield group, score(group, self._build_group(group))
                return
            # the worker gets this thread's torch setting (OpenMP thread counts are per thread)
            with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)) as pool:
                queue: deque = deque()  # (group, its build) in order, at most AHEAD + 1
                for group in chain([first, second], groups):
                    queue.append((group, pool.submit(self._build_group, group)))
                    if len(queue) > self.AHEAD:
                        group, pending = queue.popleft()
                        yield group, score(group, pending.result())
                while queue:
                    group, pending = queue.popleft()
                    yield group, score(group, pending.result())

    def _build_group(self, windows) -> list:
        """Per window: ``(data, kb)``, an exception (its build failed) or None (an empty window).

        One ``build_many`` call for the group; when it fails, each window is built alone, so an
        error stays with its window. Touches only the graph stream's and the behaviour state (see
        :meth:`score_windows`); the group's behaviour results go in the returned list's ``behaviour``.
        """
        live = [w for w in windows if w.table.num_rows]
        try:
            built = iter(self.stream.build_many(live, factored_kb=self.FACTORED_KB)) if live else iter(())
        except Exception:  # noqa: BLE001 - one window at a time
            built = None
        res = _Built()
        res.behaviour = self._behave(windows)
        for w in windows:
            if not w.table.num_rows:
                res.append(None)
            elif built is not None:
                res.append(next(built))
            else:
                try:
                    res.append(self.stream.build(w))
                except Exception as exc:  # noqa: BLE001
                    res.append(exc)
        return res

    @torch.no_grad()
    def _score_built(self, windows, built: list) -> list:
        """Embed, detect and finish one group whose graphs :meth:`_build_group` built."""
        res: list = [None] * len(windows)
        beh = getattr(built, "behaviour", None) or [None] * len(windows)
        for k, data, kb, s in self._embed_decide(windows, built, res):
            try:
                res[k] = self._finish(windows[k], data, kb, s, beh[k])
            except Exception as exc:  # noqa: BLE001
                res[k] = exc
        return [self._empty(w) if r is None else r for w, r in zip(windows, res)]

    @torch.no_grad()
    def _score_flows(self, windows, built: list) -> tuple:
        """:meth:`_score_built` for :meth:`iter_flow_scores`: ``(FlowScores or None, failures)``."""
        res: list = [None] * len(windows)
        done = self._embed_decide(windows, built, res)
        failed = [(w, r) for w, r in zip(windows, res) if isinstance(r, BaseException)]
        if not done:
            return None, failed
        thr = float(self.bundle.threshold)
        beh = getattr(built, "behaviour", None)
        tops, techs = [], []
        for k, _data, kb, s in done:
            try:
                tops.append(kb.top_technique_array())
            except Exception:  # noqa: BLE001 - no technique for this window (as _finish)
                tops.append(np.full(len(s), None, dtype=object))
            if self.technique is not None:  # window by window, as _finish (a group's kb rows: computed once)
                b = beh[k] if beh is not None else None
                techs.append(self.technique.fuse(s, kb, b[1] if b is not None else None, thr))
        if techs:
            for t, top in zip(techs, tops):
                if t[3].any():
                    _named(top, t[3], t[2])
            scores = np.concatenate([t[0] for t in techs])
        else:
            scores = done[0][3] if len(done) == 1 else np.concatenate([s for *_, s in done])
        self.windows += len(done)
        rows = torch.cat([d.edge_row for _k, d, _kb, _s in done]).numpy().astype(np.int64, copy=False)
        fs = FlowScores(rows, scores, scores > thr, np.concatenate(tops))
        if techs:
            fs.technique_scores = np.concatenate([t[1] for t in techs])
            fs.technique_raised = np.concatenate([t[4] for t in techs])
        if beh is not None and all(beh[k] is not None for k, *_ in done):
            fs.behaviour_techniques = np.concatenate([beh[k][0] for k, *_ in done])
            fs.behaviour_scores = np.concatenate([beh[k][1] for k, *_ in done])
        return fs, failed

    def _embed_decide(self, windows, built: list, res: list) -> list:
        """``[(k, data, kb, scores), ...]`` for the windows of the group that embedded and scored, in
        order; ``res[k]`` gets the exception of a window that failed (and stays None for empty ones)."""
        live, pairs = [], []
        for k, b in enumerate(built):
            if isinstance(b, BaseException):
                res[k] = b
            elif b is not None:
                live.append(k)
                pairs.append(b)
        if not live:
            return []
        ok, flow_all = self._embed_group(live, pairs, res)
        if not ok:
            return []
        scores = None
        if len(ok) > 1 and type(self.bundle.detector).__name__ in self.ROWWISE_DETECTORS:
            # Each row's score depends on that row only (tree depths; distances to the bank), whatever rows
            # share the call (asserted in tests/detector/test_scoring_batch.py).
            try:
                allscores = self._decide(flow_all if flow_all is not None else np.concatenate([f for *_, f in ok]))
                scores = np.split(allscores, np.cumsum([f.shape[0] for *_, f in ok])[:-1])
            except Exception:  # noqa: BLE001 - retry window by window below
                scores = None
        done = []
        for idx, (k, data, kb, flow) in enumerate(ok):
            try:
                done.append((k, data, kb, scores[idx] if scores is not None else self._decide(flow)))
            except Exception as exc:  # noqa: BLE001
                res[k] = exc
        return done

    def _embed_group(self, live: list, built: list, res: list) -> tuple[list, "np.ndarray | FactoredRows | None"]:
        """``([(k, data, kb, flow), ...], all flows or None)`` for the windows that embedded, in order.

        One batched encoder call for the group (:meth:`STGNN.embed_many`; scores equal the window by
        window ones up to float rounding), the memory still advanced window by window. When that call
        fails (it checks its inputs before touching the temporal state) the windows run one at a time,
        so an error stays with its window (in ``res[k]``). The second item is the concatenation of the
        flows when every window embedded in one call, so the detector gets it without a copy.
        """
        factored = type(self.bundle.detector).__name__ in self.FACTORED_DETECTORS
        try:
            flow_all = self.model.embed_many([d for d, _ in built], update_state=True, factored=factored)
            flow_all = flow_all if factored else flow_all.numpy()
        except Exception:  # noqa: BLE001 - one window at a time below
            flow_all = None
        if flow_all is not None:
            ends = np.cumsum([d.edge_index.size(1) for d, _ in built])
            if factored:
                flows = [flow_all.rows(lo, hi) for lo, hi in zip(np.r_[0, ends[:-1]], ends)]
            else:
                flows = np.split(flow_all, ends[:-1])
            return [(k, d, kb, f) for k, (d, kb), f in zip(live, built, flows)], flow_all
        ok: list = []
        for k, (data, kb) in zip(live, built):
            try:
                _z, _h, flow = self.model.embed(data, update_state=True)  # strictly in window order
            except Exception as exc:  # noqa: BLE001
                res[k] = exc
                continue
            ok.append((k, data, kb, flow.numpy()))
        return ok, None


# --- offline scoring of whole inputs (``graphsentry score`` and the evaluation harness) -------------


def scores_schema():
    import pyarrow as pa

    return pa.schema([
        pa.field("row", pa.int64(), nullable=False),
        pa.field("uid", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("score", pa.float64()),
        pa.field("alert", pa.bool_()),
        pa.field("top_technique", pa.string()),
        pa.field("reason", pa.string()),
    ])


class _Results:
    """Scored flows (a group's :class:`FlowScores` at a time) and failed records, placed at the records'
    positions in the input once it is complete."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.alerts: list[np.ndarray] = []
        self.tops: list[np.ndarray] = []
        self.failed: list[tuple[np.ndarray, str]] = []  # (rows, reason), applied after the scores

    def put(self, fs: FlowScores) -> None:
        self.rows.append(fs.rows)
        self.scores.append(fs.scores)
        self.alerts.append(fs.alerts)
        top = fs.top_technique
        if fs.behaviour_scores is not None and fs.alerts.any():
            # an alert without a knowledge technique gets its best fired behaviour technique, if any
            need = fs.alerts & np.equal(top, None)
            if need.any():
                top = top.copy()
                top[need] = behaviour_top(fs.behaviour_scores[need])
        self.tops.append(top)

    def fail(self, table, reason: str) -> None:
        self.failed.append((_rows_of(table), reason))

    def table(self, table, windower):
        """The output table: one row per row of ``table`` (the whole input), in its order."""
        import pyarrow as pa

        n = table.num_rows
        rows_np = table.column("row").to_numpy().astype(np.int64)
        if np.array_equal(rows_np, np.arange(n)):  # the readers' numbering: a row's position is its value
            def positions(rows: np.ndarray) -> np.ndarray:
                return rows
        else:  # rows are unique within one scoring call
            order = np.argsort(rows_np, kind="stable")
            sorted_rows = rows_np[order]

            def positions(rows: np.ndarray) -> np.ndarray:
                return order[np.searchsorted(sorted_rows, rows)]

        score, alert = np.full(n, np.nan), np.zeros(n, dtype=bool)
        top = np.empty(n, dtype=object)  # all None (object arrays start empty)
        reasons = ["not_scored"]  # reason codes: -1 = null (scored), else an index in this list
        reason = np.zeros(n, dtype=np.int16)
        if self.rows:
            pos = positions(np.concatenate(self.rows))
            score[pos], alert[pos] = np.concatenate(self.scores), np.concatenate(self.alerts)
            top[pos], reason[pos] = np.concatenate(self.tops), -1
        failed = self.failed + [(_rows_of(b), "late") for b in windower.late] + \
            [(_rows_of(b), "invalid_ts") for b in windower.invalid]
        for rows, why in failed:
            if why not in reasons:
                reasons.append(why)
            pos = positions(rows)
            score[pos], alert[pos], reason[pos] = np.nan, False, reasons.index(why)
        uid = table.column("uid") if "uid" in table.column_names else pa.nulls(n, pa.string())
        if "uid" not in table.column_names and "tx_id" in table.column_names:
            uid = table.column("tx_id")
        return pa.table({
            "row": pa.array(rows_np, pa.int64()), "uid": uid.cast(pa.string()),
            "ts": table.column("ts").cast(pa.timestamp("us", tz="UTC")),
            "score": pa.array(score, mask=np.isnan(score), type=pa.float64()),
            "alert": pa.array(alert, pa.bool_()), "top_technique": pa.array(top, pa.string()),
            "reason": pa.array(reasons, pa.string()).take(pa.array(reason, mask=reason < 0)),
        }, schema=scores_schema())


def _rows_of(batch) -> np.ndarray:
    return batch.column(batch.schema.get_field_index("row")).to_numpy().astype(np.int64)


class _OutOfOrder(Exception):
    """A record arrived for a window already scored (the speculation of :func:`score_batches` failed)."""


def _batch_min_seconds(batch) -> float | None:
    """Earliest ``ts`` of a batch in epoch seconds (None: no valid ts)."""
    import pyarrow.compute as pc

    from ingest.windows import ts_us

    if batch.num_rows == 0:
        return None
    lo = pc.min(ts_us(batch)).as_py()
    return None if lo is None else lo / 1e6


def _table_source(table, chunk: int = 65536):
    """``(batch, watermark)`` for a complete table: the watermark after batch ``i`` is the earliest
    ``ts`` of the batches after it, known exactly (None for the last one)."""
    batches = table.to_batches(max_chunksize=chunk)
    lows = [_batch_min_seconds(b) for b in batches]
    after, wms = None, []
    for lo in reversed(lows):
        wms.append(after)
        if lo is not None:
            after = lo if after is None else min(after, lo)
    yield from zip(batches, reversed(wms))


def _stream_source(batches, seen: list):
    """``(batch, watermark)`` for batches still being read: the watermark after a batch is its own
    earliest ``ts`` (a guess: later inputs start no earlier; checked, see :func:`score_batches`).
    Every batch is appended to ``seen``."""
    for batch in batches:
        seen.append(batch)
        yield batch, _batch_min_seconds(batch)


def _score(bundle, source, stream_order: bool, lateness: float | None, whole):
    """Score the ``(batch, watermark)`` pairs of ``source``; ``whole()`` gives the complete input table
    once the source is exhausted. Raises :class:`_OutOfOrder` (event-time order only) when a record
    arrives for a window that was already scored."""
    import logging
    import math

    from ingest.windows import EventTimeWindower, Tumbling

    log = logging.getLogger(__name__)
    win = bundle.window or {}
    size = float(win.get("size", 60.0))
    lat = float(win.get("lateness", 10.0) if lateness is None else lateness)
    scorer = bundle.stream_scorer()
    # event-time order: records join their window whatever their order (infinite lateness) and windows
    # close when the source's watermark passes them; stream order: the daemon's rule (lateness)
    w = EventTimeWindower(Tumbling(size), lateness=lat if stream_order else math.inf)

    def windows():
        for batch, wm in source:
            yield from w.push(batch)
            if not stream_order:
                if w.stats.late:
                    raise _OutOfOrder
                if wm is not None:
                    yield from w.advance_watermark(wm)
        yield from w.flush()

    res, errors = _Results(), 0
    # One lazy pipeline over all windows (graphs batched per group and built ahead in a worker,
    # temporal state still advanced window by window): same scores as one window at a time.
    for _group, flows, failed in scorer.iter_flow_scores(windows()):
        if flows is not None:
            res.put(flows)
        for win_, exc in failed:
            errors += 1
            if errors <= 3:  # one bad window must not take the rest down
                log.warning("window [%s, %s) failed to score: %r", win_.start, win_.end, exc)
            res.fail(win_.table, f"error:{type(exc).__name__}")
    return res.table(whole(), w)


def score_table(bundle, table, stream_order: bool = False, lateness: float | None = None):
    """Score every record of ``table`` (canonical schema); returns one output row per input row, in input order.

    By default records are windowed in event-time order (a file is complete, so nothing is
    late): each window holds the records whose ``ts`` falls in it, in ``row`` order, and windows are
    scored oldest first, whatever the order of the table. With ``stream_order=True`` they are pushed
    in input order through an ``EventTimeWindower`` with the bundle's lateness, like the daemon:
    records that miss their window get a null score with reason ``late``. Records with a null ``ts``
    get reason ``invalid_ts``; a window that fails to score gets ``error:<type>`` for its rows.
    Runs with the single-thread torch setting of :mod:`detector.runtime`.
    """
    with torch_threads():
        return _score(bundle, _table_source(table), stream_order, lateness, lambda: table)


def score_batches(bundle, batches, stream_order: bool = False, lateness: float | None = None, schema=None):
    """:func:`score_table` on the concatenation of ``batches`` (an iterable, e.g. a reader), scoring
    while they are still being read: the same output, bit for bit.

    In event-time order a window is scored once a batch arrives whose earliest record is past its end
    (inputs such as daily captures given in time order). That is a guess about the batches still to
    come: when a later record falls into a window already scored, the partial work is dropped, the
    rest is read and the whole input is scored by :func:`score_table` (logged). ``schema``: of the
    empty table returned when there are no batches.
    """
    import logging

    import pyarrow as pa

    seen: list = []

    def whole():
        if seen:
            return pa.Table.from_batches(seen)
        if schema is None:
            raise ValueError("no input batches and no schema for the empty output")
        return schema.empty_table()

    with torch_threads():
        source = _stream_source(batches, seen)
        try:
            return _score(bundle, source, stream_order, lateness, whole)
        except _OutOfOrder:
            for _ in source:  # read the rest
                pass
            logging.getLogger(__name__).info(
                "inputs are not in time order across batches: scoring them again after reading all")
    table = whole()
    return score_table(bundle, table, stream_order, lateness)

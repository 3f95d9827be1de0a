"""The streaming scorer: :class:`StreamScorer` holds one stream's temporal state and turns windows into
:class:`~detector.scoring.records.WindowScores` (window -> graph (+ knowledge block) -> STGNN -> detector).
"""
from __future__ import annotations

import copy
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np
import torch

from detector.pipeline import window_groups
from detector.runtime import torch_threads
from detector.scoring.behaviour import _Behaviour
from detector.scoring.fusion import _named, _TechniqueChannel
from detector.scoring.records import FlowScores, WindowScores
from detector.tensors import FactoredRows

log = logging.getLogger(__name__)


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

    def warm_up(self, networks=None, freeze_heap: bool = True, flows: int | None = None) -> float:
        """Pay the one-time costs of serving before the first window (:func:`detector.scoring.warm.warm_up`:
        a throwaway scorer of this bundle scores a synthetic window of ``flows`` flows and builds findings for
        it, then the heap is frozen; this scorer's state is not touched); the seconds it took."""
        from detector.scoring.warm import WARM_FLOWS, warm_up

        return warm_up(self, networks, freeze_heap, WARM_FLOWS if flows is None else flows, factory=StreamScorer)

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
            explain=_explainer(getattr(self.stream, "kf", None), kb),
        )

    def _decide(self, flow: np.ndarray | FactoredRows) -> np.ndarray:
        return np.asarray(self.bundle.detector.decision_function(flow), dtype=np.float64)

    @torch.no_grad()
    def _embed_flows(self, window) -> tuple:
        """``(data, kb, flows)``: :meth:`embed_window`'s flows as the detector takes them; for the
        :attr:`FACTORED_DETECTORS` per-flow blocks side by side (:meth:`STGNN.embed_rows`: the same
        values, no ``[E, D]`` copy, the fusion's raw block handed to its forest as it is)."""
        if type(self.bundle.detector).__name__ not in self.FACTORED_DETECTORS:
            data, kb, _z, flow = self.embed_window(window)
            return data, kb, flow.numpy()
        data, kb = self.stream.build(window)
        return data, kb, self.model.embed_rows(data, update_state=True)[1]

    def score_window(self, window) -> WindowScores:
        if window.table.num_rows == 0:
            return self._empty(window)
        beh = self._behave([window])
        # Small graphs: single-threaded torch (detector/runtime.py), as offline scoring; also for
        # callers such as the daemon that do not set it. Switching costs about a microsecond.
        with torch_threads():
            data, kb, flow = self._embed_flows(window)
        return self._finish(window, data, kb, self._decide(flow), beh[0] if beh else None)

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

    def _embed_group(self, live: list, built: list, res: list) -> tuple[list, np.ndarray | FactoredRows | None]:
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


def _explainer(kf, kb):
    """``explain(k)`` of one window's flows (KnowledgeFeaturizer.explain on its block), None without one."""
    if kf is None or kb is None:
        return None
    return lambda k: kf.explain(kb, edge=int(k))

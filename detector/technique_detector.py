r"""Technique channel: a benign-fitted score on technique-level evidence that the learned score cannot dilute.

The knowledge block (:mod:`knowledge.features`) gives every flow a score in [0, 1] per ATT&CK technique of
the knowledge graph, and the long-horizon behaviour state (:mod:`knowledge.behaviour_predicates`) one per
behaviour technique. Inside the STGNN these are one input block among many, so the embedding detector
can call a flow normal whose technique evidence is far outside anything benign. This detector scores that
evidence on its own, per technique, against benign traffic, and :func:`fuse` lifts the flow's final score
over the alert threshold when it fires (issue 17, section 4; docs/technique-score.md).

Fit, on benign per-flow activations :math:`A \in [0, 1]^{n \times T}` (columns: knowledge techniques then
behaviour techniques, :attr:`TechniqueDetector.columns_`):

.. math::

    b_t = \min\bigl(\max(Q_q(A_{\cdot t}),\ m),\ 1\bigr)

with :math:`Q_q` the benign upper quantile (``quantile``, default 0.999) and :math:`m` the floor
``min_activation`` (default 0.35, the knowledge block's top-technique floor: context-only evidence stays
at or below 0.3). A technique never active in benign traffic gets :math:`b_t = m`; one that benign
traffic activates often gets its own, higher bound. Robust: a quantile, not the maximum, so a few
unlabelled attack flows in the training data move no bound.

Exceedance of technique :math:`t`, as a share of the room above its bound:

.. math::

    e_t(a) = \frac{a_t - b_t}{\max(1 - b_t,\ \epsilon)}

Per-technique calibration on held-back benign flows (a column whose evidence benign traffic of the
held-back period already exceeds gets its own margin, so one noisy technique cannot mute the others):
with :math:`\alpha` = ``target_fpr * share`` (the channel spends ``share`` of the bundle's benign FPR
budget; the embedding threshold spends the rest) split evenly (a union bound) over the :math:`k` columns
that any held-back flow exceeds, :math:`\tau_t = \max(0, \hat q_t)`, :math:`\hat q_t` the conformal
quantile (:func:`detector.calibration.calibrate_threshold`) of :math:`e_t` over the held-back flows at
level :math:`1 - \alpha / k` (the maximum when there are too few flows for it); :math:`\tau_t = 0` for
the other columns. Score (higher = more anomalous):

.. math::

    s(a) = \max\Bigl(-1,\ \max_t \bigl(e_t(a) - \tau_t\bigr)\Bigr)

and ``threshold_`` = 0: the channel fires when some technique exceeds its benign bound by more than its
held-back margin, and never on a flow within every benign bound. :meth:`TechniqueDetector.explain` names
the argmax technique.

Fusion (:func:`fuse`; ``e`` the embedding detector's score, :math:`\theta` its threshold, :math:`\sigma`
the channel's ``threshold_`` (0), :math:`g` ``lift_gap_``, the benign spread of the embedding score fitted
by :meth:`TechniqueDetector.fit_lift`):

.. math::

    f = \begin{cases} \max\bigl(e,\ \theta + g\,(\delta + s - \sigma)\bigr) & s > \sigma \\ e & \text{otherwise}\end{cases}

with :math:`\delta` = :data:`LIFT_MIN`. The fused score is never below :math:`e`; a flow the channel fires
on is above :math:`\theta` (every ``scores > threshold`` consumer sees the alert), and the further its
evidence exceeds its margin, the higher it ranks.

Design note: a first version calibrated ONE threshold on :math:`\max_t e_t`; on the development splits
of ``training.technique_eval`` the noisiest of the 171 columns in the held-back period set it
(e.g. 0.78), which muted every other technique (CIC-IDS2017 Botnet: 68% of its flows above some benign
bound, 6% above that threshold). Per-technique margins keep the same benign budget without that.

State: :meth:`TechniqueDetector.state` gives JSON parameters and NumPy arrays (no pickle); the bundle keeps
them in ``technique.json`` (:mod:`detector.bundle`).
"""
from __future__ import annotations

import math

import numpy as np

LIFT_MIN = 0.05     # the smallest lift above the embedding threshold, in units of lift_gap_
EPS = 1e-3          # the least room above a bound (a bound of 1 leaves none: nothing exceeds it)
FORMAT = 2          # 2: per-technique margins (column_threshold); 1 (never released) had one threshold


class TechniqueDetector:
    """Per-technique benign bounds on technique activations; PyOD-style (``fit``/``decision_function``,
    higher = more anomalous, fitted ``threshold_``).

    Args:
        target_fpr (float): the bundle's benign false-positive target (default: ``0.01``).
        share (float): the part of ``target_fpr`` this channel may spend on held-back benign flows
            (default: ``0.25``).
        quantile (float): benign upper quantile that bounds each technique (default: ``0.999``).
        min_activation (float): floor of every bound: activation a technique must exceed to count, even
            when benign traffic never shows it (default: ``0.35``).

    Shapes:
        A: ``(n_flows, n_columns)`` activations in [0, 1]; scores: ``(n_flows,)``.
    """

    name = "technique"
    BLOCK = 1024  # rows per step of partial(): its float64 exceedances ([BLOCK, columns]) stay in cache

    def __init__(self, target_fpr: float = 0.01, share: float = 0.25, quantile: float = 0.999,
                 min_activation: float = 0.35) -> None:
        if not 0.0 < target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        if not 0.0 <= min_activation < 1.0:
            raise ValueError(f"min_activation must be in [0, 1), got {min_activation!r}")
        self.target_fpr = float(target_fpr)
        self.share = float(share)
        self.quantile = float(quantile)
        self.min_activation = float(min_activation)

    def __repr__(self) -> str:
        return (f"TechniqueDetector(target_fpr={self.target_fpr}, share={self.share}, quantile={self.quantile}, "
                f"min_activation={self.min_activation})")

    # ---------------------------------------------------------------- fitting
    def fit(self, A, columns=None, calibration=None) -> TechniqueDetector:
        """Fit the per-technique bounds on benign activations ``A``; ``columns``: a name per column
        (``source:technique``, e.g. ``knowledge:T1071``; default ``c0, c1, ...``). ``calibration``:
        held-back benign activations for :meth:`calibrate` (default: ``A`` itself, in-sample)."""
        A = self._check(A, None)
        T = A.shape[1]
        cols = [f"c{j}" for j in range(T)] if columns is None else [str(c) for c in columns]
        if len(cols) != T:
            raise ValueError(f"columns has {len(cols)} names for {T} activation columns")
        q = np.quantile(A, self.quantile, axis=0) if len(A) else np.zeros(T)
        self.columns_ = cols
        self.quantile_ = np.asarray(q, dtype=np.float64)
        self.bound_ = np.minimum(np.maximum(self.quantile_, self.min_activation), 1.0)
        self.n_fit_ = int(len(A))
        self.lift_gap_ = 1.0
        self.column_threshold_ = np.zeros(T)
        self.calibrate(A if calibration is None else calibration)
        return self

    def calibrate(self, A) -> TechniqueDetector:
        """Per-technique margins ``column_threshold_`` from held-back benign activations (see the module
        docstring); ``threshold_`` is 0."""
        from detector.calibration import calibrate_threshold

        self._fitted()
        A = self._check(A, None)
        T = len(self.bound_)
        self.column_threshold_ = np.zeros(T)
        n = len(A)
        if n:
            b = self.bound_
            room = np.maximum(1.0 - b, EPS)
            active = np.flatnonzero((A > b).any(axis=0))
            alpha = self.target_fpr * self.share / max(1, len(active))
            for t in active:  # only the columns some held-back flow exceeds (few)
                e = (A[:, t] - b[t]) / room[t]
                self.column_threshold_[t] = max(0.0, calibrate_threshold(e, alpha).threshold)
        self.threshold_ = 0.0
        s = self.decision_function(A)
        self.n_calibration_ = int(n)
        self.calibration_fpr_ = float((s > self.threshold_).mean()) if n else float("nan")
        return self

    def fit_lift(self, benign_scores, threshold: float) -> TechniqueDetector:
        """``lift_gap_``: the embedding score's benign spread below ``threshold`` (threshold minus the benign
        median), the unit of the lift in :func:`fuse`; positive whatever the scores."""
        s = np.asarray(benign_scores, dtype=np.float64)
        s = s[np.isfinite(s)]
        gap = float(threshold - np.median(s)) if len(s) else 0.0
        floor = max(abs(float(threshold)) * 1e-3, 1e-6)
        self.lift_gap_ = gap if math.isfinite(gap) and gap > floor else floor
        return self

    # ---------------------------------------------------------------- scoring
    def _check(self, A, start: int | None) -> np.ndarray:
        A = np.asarray(A)
        if A.ndim != 2:
            raise ValueError(f"activations must be 2-D (n_flows, n_columns), got shape {A.shape}")
        if start is not None:
            if start < 0 or start + A.shape[1] > len(self.bound_):
                raise ValueError(f"activation columns {start}..{start + A.shape[1]} do not fit the "
                                 f"{len(self.bound_)} fitted columns")
        return A

    def _fitted(self) -> None:
        if not hasattr(self, "bound_"):
            raise ValueError("TechniqueDetector is not fitted: call fit(A) first")

    def partial(self, A, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(score [n] float64, column [n] int64)``: the largest exceedance over the columns
        ``start .. start + A.shape[1]`` alone and its column (absolute index). Scores of disjoint column
        ranges combine by a maximum (how the scorer joins knowledge and behaviour columns)."""
        self._fitted()
        A = self._check(A, start)
        n, k = A.shape
        if n == 0 or k == 0:
            return np.full(n, -1.0), np.full(n, start, dtype=np.int64)
        b = self.bound_[start:start + k]
        room, ct = np.maximum(1.0 - b, EPS), self.column_threshold_[start:start + k]
        score, col = np.empty(n), np.empty(n, dtype=np.int64)
        e = np.empty((min(n, self.BLOCK), k))  # float64, reused: a block of rows stays in cache
        for lo in range(0, n, self.BLOCK):
            hi = min(lo + self.BLOCK, n)
            eb = e[:hi - lo]
            np.divide(np.subtract(A[lo:hi], b, out=eb), room, out=eb)
            np.subtract(eb, ct, out=eb)  # (a - b) / room - margin, float64
            j = np.argmax(eb, axis=1)
            np.maximum(eb[np.arange(hi - lo), j], -1.0, out=score[lo:hi])
            col[lo:hi] = j
        return score, col + start

    def decision_function(self, A) -> np.ndarray:
        """Per flow, the largest normalised exceedance of a technique over its benign bound, less the
        technique's held-back margin (in [-1, 1]; > 0: some technique is above anything benign showed)."""
        self._fitted()
        A = self._check(A, None)
        if A.shape[1] != len(self.bound_):
            raise ValueError(f"activations have {A.shape[1]} columns, the detector was fitted on {len(self.bound_)}")
        return self.partial(A, 0)[0]

    def predict(self, A) -> np.ndarray:
        """1 where the channel fires (score above ``threshold_``), else 0."""
        return (self.decision_function(A) > self.threshold_).astype(np.int64)

    @property
    def technique_ids_(self) -> np.ndarray:
        """The technique id of each column (``columns_`` without the ``source:`` prefix), object array."""
        return np.asarray([c.split(":", 1)[-1] for c in self.columns_], dtype=object)

    def name_of(self, score: np.ndarray, column: np.ndarray) -> np.ndarray:
        """Technique id where ``score > threshold_``, None elsewhere (object array)."""
        ids = np.empty(len(self.columns_) + 1, dtype=object)
        ids[:-1] = self.technique_ids_
        return ids[np.where(np.asarray(score) > self.threshold_, column, len(self.columns_))]

    def explain(self, A) -> np.ndarray:
        """Per flow, the technique id that exceeded its bound most when the channel fires, else None."""
        s, j = self.partial(A, 0) if np.asarray(A).shape[1] == len(self.bound_) else (None, None)
        if s is None:
            raise ValueError(f"activations have {np.asarray(A).shape[1]} columns, the detector was fitted on "
                             f"{len(self.bound_)}")
        return self.name_of(s, j)

    # ---------------------------------------------------------------- state (no pickle)
    def state(self) -> tuple[dict, dict]:
        """``(params, arrays)``: JSON-safe parameters and fitted scalars, and the fitted arrays."""
        self._fitted()
        params = {"target_fpr": self.target_fpr, "share": self.share, "quantile": self.quantile,
                  "min_activation": self.min_activation, "columns": list(self.columns_),
                  "threshold": float(self.threshold_), "lift_gap": float(self.lift_gap_),
                  "n_fit": self.n_fit_, "n_calibration": self.n_calibration_,
                  "calibration_fpr": None if math.isnan(self.calibration_fpr_) else float(self.calibration_fpr_)}
        return params, {"bound": self.bound_.copy(), "quantile": self.quantile_.copy(),
                        "column_threshold": self.column_threshold_.copy()}

    @classmethod
    def from_state(cls, params: dict, arrays: dict) -> TechniqueDetector:
        """The detector of :meth:`state`; ValueError when the parts do not describe one."""
        try:
            det = cls(params["target_fpr"], params["share"], params["quantile"], params["min_activation"])
            cols = [str(c) for c in params["columns"]]
            bound = np.asarray(arrays["bound"], dtype=np.float64).reshape(-1)
            q = np.asarray(arrays["quantile"], dtype=np.float64).reshape(-1)
            ct = np.asarray(arrays["column_threshold"], dtype=np.float64).reshape(-1)
            thr, gap = float(params["threshold"]), float(params["lift_gap"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a technique detector state ({type(exc).__name__}: {exc})") from None
        if not len(bound) == len(q) == len(ct) == len(cols):
            raise ValueError(f"{len(cols)} columns but {len(bound)} bounds, {len(q)} quantiles and {len(ct)} "
                             f"column thresholds")
        if not (np.isfinite(bound).all() and np.isfinite(ct).all() and math.isfinite(thr) and math.isfinite(gap)
                and gap > 0):
            raise ValueError("technique detector state has non-finite bounds, thresholds or lift gap")
        det.columns_, det.bound_, det.quantile_, det.column_threshold_ = cols, bound, q, ct
        det.threshold_, det.lift_gap_ = thr, gap
        det.n_fit_ = int(params.get("n_fit", 0))
        det.n_calibration_ = int(params.get("n_calibration", 0))
        cf = params.get("calibration_fpr")
        det.calibration_fpr_ = float("nan") if cf is None else float(cf)
        return det

    def to_json(self) -> dict:
        """The whole state as one JSON object (arrays as lists): ``technique.json``."""
        params, arrays = self.state()
        return {"format": FORMAT, "class": type(self).__name__, "params": params,
                "arrays": {k: v.tolist() for k, v in arrays.items()}}

    @classmethod
    def from_json(cls, obj) -> TechniqueDetector:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("class") != cls.__name__:
            raise ValueError(f"not a technique.json of format {FORMAT}")
        return cls.from_state(obj.get("params") or {}, obj.get("arrays") or {})


def fuse(scores: np.ndarray, tech: np.ndarray, tech_threshold: float, threshold: float,
         gap: float) -> tuple[np.ndarray, np.ndarray]:
    """``(fused scores, raised)``: the embedding ``scores`` lifted where the channel fires (``tech >
    tech_threshold``) to at least ``threshold + gap * (LIFT_MIN + tech - tech_threshold)`` (and strictly
    above ``threshold``); never lowered. ``raised``: flows above ``threshold`` only because of the lift."""
    scores = np.asarray(scores, dtype=np.float64)
    fire = np.asarray(tech) > tech_threshold
    if not fire.any():
        return scores, np.zeros(len(scores), dtype=bool)
    thr = float(threshold)
    lift = thr + gap * (LIFT_MIN + (tech[fire] - tech_threshold))
    lift = np.maximum(lift, np.nextafter(thr, np.inf))
    out = scores.copy()
    base = scores[fire]
    out[fire] = np.where(np.isnan(base), base, np.maximum(base, lift))  # an unscored flow stays unscored
    raised = np.zeros(len(scores), dtype=bool)
    raised[fire] = ~(base > thr) & (out[fire] > thr)
    return out, raised


# ---------------------------------------------------------------- training (training.pretrain)

def channel_columns(kf) -> list[str]:
    """The channel's columns for a knowledge featurizer (None: knowledge off): ``knowledge:<id>`` per
    technique of the knowledge block, in its order, then ``behaviour:<id>`` per behaviour technique."""
    from knowledge.behaviour_predicates import TECHNIQUES

    know = [f"knowledge:{t}" for t in kf.tech_ids] if kf is not None else []
    return know + [f"behaviour:{t}" for t in TECHNIQUES]


def behaviour_scores(windows, group_records: int = 16384) -> list:
    """Per window, its flows' behaviour technique scores ``[E, 6]`` (rows in table order), the windows fed
    in order through one fresh behaviour state, a scoring group at a time (as :class:`detector.scoring.
    StreamScorer` feeds them; default parameters). A window that failed gets zeros."""
    from detector.pipeline import window_groups
    from detector.scoring.behaviour import _Behaviour
    from knowledge.behaviour_predicates import TECHNIQUES

    state = _Behaviour(None)
    out = []
    for group in window_groups(windows, group_records):
        for w, r in zip(group, state.windows(group)):
            out.append(r[1] if r is not None else np.zeros((w.table.num_rows, len(TECHNIQUES)), np.float32))
    return out


def graph_activations(graphs, behaviour: list, kf, keep: np.ndarray | None = None) -> np.ndarray:
    """The channel's activations ``[n, columns]`` (float32) of the flows of ``graphs`` (built by a
    :class:`detector.pipeline.GraphStream`, knowledge block joined as the last columns of ``edge_attr``)
    with ``behaviour[i]`` the behaviour scores of graph ``i``'s flows; ``keep``: a mask over all their flows
    (only those rows are gathered)."""
    from knowledge.behaviour_predicates import TECHNIQUES

    nb = len(TECHNIQUES)
    nk = len(kf.tech_ids) if kf is not None else 0
    parts, lo = [], 0
    for d, b in zip(graphs, behaviour):
        e = int(d.edge_index.size(1))
        m = slice(None) if keep is None else keep[lo:lo + e]
        lo += e
        rows = np.zeros((e, nk + nb), dtype=np.float32)[m]
        if nk:
            ea = d.edge_attr
            start = int(ea.size(1)) - len(kf.names) + len(kf.predicates)
            rows[:, :nk] = ea[:, start:start + nk].numpy()[m]
        if b is not None and len(b) == e:
            rows[:, nk:] = np.asarray(b, dtype=np.float32)[m]
        parts.append(rows)
    return np.concatenate(parts) if parts else np.zeros((0, nk + nb), np.float32)


def fit_channel(graphs, windows, val_graphs, val_windows, val_labels, kf, target_fpr: float,
                embed_benign_scores, threshold: float, max_rows: int = 100_000, seed: int = 0,
                **kwargs) -> TechniqueDetector:
    """A :class:`TechniqueDetector` fitted on the training flows (``graphs`` / ``windows``, at most
    ``max_rows`` of them, a seeded subsample) and calibrated on the held-back flows not labelled malicious
    (``val_graphs`` / ``val_windows``, behaviour state continuing from the training windows), with its
    lift unit from the embedding detector's scores of those held-back benign flows. ``kwargs``: detector
    parameters."""
    beh = behaviour_scores(list(windows) + list(val_windows))
    n_tr = sum(int(d.edge_index.size(1)) for d in graphs)
    keep = None
    if n_tr > max_rows:
        keep = np.zeros(n_tr, dtype=bool)
        keep[np.random.default_rng(seed).choice(n_tr, max_rows, replace=False)] = True
    A = graph_activations(graphs, beh[:len(graphs)], kf, keep)
    lab = np.asarray(val_labels) if val_labels is not None else None
    ben = None if lab is None else (lab != 1)
    A_val = graph_activations(val_graphs, beh[len(graphs):], kf, ben)
    det = TechniqueDetector(target_fpr=target_fpr, **kwargs)
    det.fit(A, channel_columns(kf), calibration=A_val if len(A_val) else None)
    return det.fit_lift(embed_benign_scores, threshold)

"""Grace-period calibration: the alert threshold of a deployed model, set on the new network's own traffic.

A model's stored threshold is the ``1 - target_fpr`` quantile of benign scores of the network it was trained
on; on another network the scores shift and that threshold can flag almost nothing or almost everything. As
Kitsune does, :class:`GraceCalibrator` watches the first traffic of the new network (the *grace period*: a
number of records or seconds of event time), without labels, then deploys the conformal ``1 - target_fpr``
quantile of those scores.

The grace period may already contain an infection, and an attack's flows then fill the top quantile (plain
recalibration on such traffic took recall to about 0 on IoT-23 34-1 and 8-1). ``method="robust"`` therefore
takes the quantile only after **entity-level trimming**: the grace records are grouped by entity (the caller's
key; the CLI and the daemon use ``src_ip|dst_port/proto``, the source endpoint and the service it talks to, so
a scan or a C&C channel is one entity and the device's ordinary services are others), and an entity whose
records are *mostly* suspect (its median score above the cut) is left out before the quantile is taken. The
cut is chosen by one vote per entity, so a single loud entity cannot move it by volume:

1. *anchor*: the trained threshold. It is trusted as the cut when it calls at most half of the voting entities
   suspect (the model still fits the bulk of the new network; only a minority of entities look anomalous);
2. otherwise (the trained threshold does not transfer: it flags most of the network) the cut is the median of
   the entities' median scores plus ``k`` times the median of their within-entity spreads (``1.4826 * MAD``).

Entities with fewer than ``min_entity_records`` grace records are pooled into one entity (a vertical scan
over many ports then still counts as one); an entity (the pool included) with fewer than that many records
does not vote, but is judged against the cut like the others. Trimming never leaves fewer than ``1 - max_trim`` of the records;
otherwise nothing is trimmed (logged as ``trim_skipped``). The quantile of what is left is then clamped to
``trained ± max_shift * scale_`` (``scale_``: the robust spread, ``1.4826 * MAD``, of the kept grace scores).
All bounds are additive in score units because scores can be negative (standardised detectors), so a
multiplicative floor would be meaningless.

After the grace period the threshold tracks slow drift: the ``1 - target_fpr`` conformal quantile of a
sliding window of the last ``drift_window`` benign-looking records (records of entities not trimmed in grace
and not mostly alerting since) is the target, and the deployed threshold moves towards it by at most
``drift_rate * scale_`` per hour of event time, never outside ``[trained - max_shift * scale_, trained +
max_shift * scale_]``. ``drift_rate=0`` freezes the threshold after grace.

``method="quantile"`` is the plain (non-robust) grace quantile, kept as the contrast; ``method="trained"``
never moves (the stored threshold).

State is a JSON-able dict (:meth:`state` / :meth:`from_state`); nothing is pickled.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

METHODS = ("robust", "quantile", "trained")
POOLED = "(small entities)"
MAD_SCALE = 1.4826  # MAD -> standard deviation of a normal


def conformal_quantile(scores: np.ndarray, target_fpr: float) -> float:
    """The ``ceil((n + 1)(1 - target_fpr))``-th smallest score (the maximum when ``n`` is too small)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = s.size
    k = math.ceil((n + 1) * (1.0 - target_fpr))
    return float(s[min(k, n) - 1])


def robust_scale(scores: np.ndarray) -> float:
    """``1.4826 * MAD``; falls back to the standard deviation, then to 1e-9 (never zero)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return 1e-9
    mad = float(np.median(np.abs(s - np.median(s))))
    if mad > 0:
        return MAD_SCALE * mad
    sd = float(np.std(s))
    return sd if sd > 0 else 1e-9


class GraceCalibrator:
    """Threshold set on the first traffic of a new network, robust to an infection already in it.

    Parameters
    ----------
    trained_threshold : the model's stored threshold (used during grace, and as anchor and bound).
    target_fpr : benign false-positive rate the deployed threshold aims at, in (0, 1).
    grace_records : grace ends after this many scored records (None: not by count).
    grace_seconds : grace ends once event time is this far past the first record (None: not by time).
        At least one of the two must be given; with both, grace ends at whichever comes first.
    method : ``"robust"`` (entity trimming, see the module doc), ``"quantile"`` (plain), ``"trained"``.
    k : MAD multiplier of the robust entity cut (used when the trained threshold is not trusted).
    min_entity_records : entities with fewer grace records are pooled into one.
    max_trim : largest share of grace records trimming may remove, in (0, 1).
    max_shift : the deployed threshold stays within ``trained ± max_shift * scale_`` (None: unbounded).
    drift_rate : largest move per hour of event time after grace, in ``scale_`` units (0: frozen).
    drift_window : benign-looking records the drift quantile is taken over.
    """

    def __init__(self, trained_threshold: float, target_fpr: float = 0.01, grace_records: int | None = None,
                 grace_seconds: float | None = None, method: str = "robust", k: float = 3.0,
                 min_entity_records: int = 5, max_trim: float = 0.9, max_shift: float | None = 50.0,
                 drift_rate: float = 0.5, drift_window: int = 5000) -> None:
        if not (isinstance(trained_threshold, (int, float)) and math.isfinite(trained_threshold)):
            raise ValueError(f"trained_threshold must be a finite number, got {trained_threshold!r}")
        if not (isinstance(target_fpr, (int, float)) and 0.0 < target_fpr < 1.0):
            raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
        if grace_records is None and grace_seconds is None:
            raise ValueError("grace_records or grace_seconds must be given, got neither")
        if grace_records is not None and (not isinstance(grace_records, int) or grace_records < 1):
            raise ValueError(f"grace_records must be an integer >= 1, got {grace_records!r}")
        if grace_seconds is not None and not (isinstance(grace_seconds, (int, float)) and grace_seconds > 0):
            raise ValueError(f"grace_seconds must be > 0, got {grace_seconds!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k!r}")
        if not (isinstance(min_entity_records, int) and min_entity_records >= 1):
            raise ValueError(f"min_entity_records must be an integer >= 1, got {min_entity_records!r}")
        if not 0.0 < max_trim < 1.0:
            raise ValueError(f"max_trim must be in (0, 1), got {max_trim!r}")
        if max_shift is not None and not max_shift > 0:
            raise ValueError(f"max_shift must be > 0 or None, got {max_shift!r}")
        if not drift_rate >= 0:
            raise ValueError(f"drift_rate must be >= 0, got {drift_rate!r}")
        if not (isinstance(drift_window, int) and drift_window >= 1):
            raise ValueError(f"drift_window must be an integer >= 1, got {drift_window!r}")
        self.trained_threshold = float(trained_threshold)
        self.target_fpr = float(target_fpr)
        self.grace_records = grace_records
        self.grace_seconds = None if grace_seconds is None else float(grace_seconds)
        self.method = method
        self.k = float(k)
        self.min_entity_records = min_entity_records
        self.max_trim = float(max_trim)
        self.max_shift = None if max_shift is None else float(max_shift)
        self.drift_rate = float(drift_rate)
        self.drift_window = drift_window
        self.reset()

    # -- public state -------------------------------------------------------------------------
    def reset(self) -> GraceCalibrator:
        """Start a new grace period (the trained threshold applies until it ends)."""
        self.threshold_ = self.trained_threshold
        self.in_grace_ = True
        self.grace_start_: float | None = None   # event time of the first grace record
        self.grace_seen_ = 0
        self.calibrated_threshold_: float | None = None  # right after grace, before any drift
        self.scale_: float | None = None
        self.trimmed_entities_: list[str] = []
        self.cut_: float | None = None
        self.cut_kind_: str | None = None        # "trained" | "mad" | None
        self.trim_skipped_ = False
        self.n_grace_ = 0
        self.n_kept_ = 0
        self.last_ts_: float | None = None
        self.entity_alert_: dict[str, list[float]] = {}  # entity -> [alerts, records] after grace (decayed)
        self._grace_scores: list[np.ndarray] = []
        self._grace_entities: list[np.ndarray] = []
        self._drift: deque = deque(maxlen=self.drift_window)
        return self

    @property
    def bounds_(self) -> tuple[float, float]:
        """``(low, high)`` the deployed threshold may take (infinite before grace ends or when unbounded)."""
        if self.max_shift is None or self.scale_ is None:
            return (-math.inf, math.inf)
        d = self.max_shift * self.scale_
        return (self.trained_threshold - d, self.trained_threshold + d)

    def alerts(self, scores: np.ndarray) -> np.ndarray:
        """``scores > threshold_`` (NaN never alerts)."""
        s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
        return s > self.threshold_

    # -- streaming ----------------------------------------------------------------------------
    def update(self, scores, entities=None, ts=None) -> GraceCalibrator:
        """Feed scored records in arrival order (``ts``: event time, epoch seconds; needed for
        ``grace_seconds`` and for the drift rate). Alerts for these records should have been decided with
        ``threshold_`` *before* this call. Non-finite scores are ignored."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        n = s.size
        ent = np.full(n, "", dtype=object) if entities is None else np.asarray(entities, dtype=object).ravel()
        if ent.size != n:
            raise ValueError(f"entities has {ent.size} values for {n} scores")
        t = None if ts is None else np.asarray(ts, dtype=np.float64).ravel()
        if t is not None and t.size != n:
            raise ValueError(f"ts has {t.size} values for {n} scores")
        if self.grace_seconds is not None and t is None and self.in_grace_:
            raise ValueError("grace_seconds needs the records' event times (ts)")
        ok = np.isfinite(s)
        if t is not None:
            ok &= np.isfinite(t)
        s, ent = s[ok], ent[ok]
        t = None if t is None else t[ok]
        if s.size == 0:
            return self
        start = 0
        if self.in_grace_:
            end = self._grace_end(s.size, t)
            if end > 0:
                self._grace_scores.append(s[:end].copy())
                self._grace_entities.append(ent[:end].astype(str))
                self.grace_seen_ += end
            if end < s.size:  # a record past the grace period: calibrate, then the rest drifts
                self._finish_grace()
            start = end
        if not self.in_grace_ and start < s.size:
            self._track(s[start:], ent[start:], None if t is None else t[start:])
        if t is not None and t.size:
            self.last_ts_ = float(np.max(t)) if self.last_ts_ is None else max(self.last_ts_, float(np.max(t)))
        return self

    def process(self, scores, entities=None, ts=None) -> np.ndarray:
        """Alerts for these records, then :meth:`update` with them: grace records are decided with the
        trained threshold; when the grace period ends inside this batch, the records after its end are decided
        with the freshly deployed threshold. Non-finite scores never alert."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        out = np.zeros(s.size, dtype=bool)
        ok = np.isfinite(s)
        t = None if ts is None else np.asarray(ts, dtype=np.float64).ravel()
        if t is not None:
            if t.size != s.size:
                raise ValueError(f"ts has {t.size} values for {s.size} scores")
            ok &= np.isfinite(t)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return out
        ent = None if entities is None else np.asarray(entities, dtype=object).ravel()
        if ent is not None and ent.size != s.size:
            raise ValueError(f"entities has {ent.size} values for {s.size} scores")
        e = None if ent is None else ent[idx]
        tt = None if t is None else t[idx]
        ss = s[idx]
        end = 0
        if self.in_grace_:
            if self.grace_seconds is not None and tt is None:
                raise ValueError("grace_seconds needs the records' event times (ts)")
            end = self._grace_end(ss.size, tt)
            out[idx[:end]] = ss[:end] > self.threshold_
            self.update(ss[:end], None if e is None else e[:end], None if tt is None else tt[:end])
            if end < ss.size and self.in_grace_:
                self._finish_grace()
        if end < ss.size:
            out[idx[end:]] = ss[end:] > self.threshold_
            self.update(ss[end:], None if e is None else e[end:], None if tt is None else tt[end:])
        return out

    def finish_grace(self) -> GraceCalibrator:
        """End the grace period now with what was seen (e.g. a finite input shorter than the grace)."""
        if self.in_grace_ and self.grace_seen_:
            self._finish_grace()
        return self

    def _grace_end(self, n: int, t) -> int:
        """How many of these ``n`` records still belong to the grace period."""
        end = n
        if self.grace_records is not None:
            end = min(end, max(self.grace_records - self.grace_seen_, 0))
        if self.grace_seconds is not None and t is not None and t.size:
            if self.grace_start_ is None:
                self.grace_start_ = float(t[0])
            past = np.flatnonzero(t >= self.grace_start_ + self.grace_seconds)
            if past.size:
                end = min(end, int(past[0]))
        return end

    # -- grace --------------------------------------------------------------------------------
    def _finish_grace(self) -> None:
        s = np.concatenate(self._grace_scores) if self._grace_scores else np.zeros(0)
        ent = np.concatenate(self._grace_entities) if self._grace_entities else np.zeros(0, dtype=str)
        self._grace_scores, self._grace_entities = [], []
        self.in_grace_ = False
        self.n_grace_ = int(s.size)
        if s.size == 0:
            return
        keep = np.ones(s.size, dtype=bool)
        if self.method == "robust":
            keep = self._trim(s, ent)
        kept = s[keep]
        self.n_kept_ = int(kept.size)
        self.scale_ = robust_scale(kept)
        if self.method == "trained":
            thr = self.trained_threshold
        else:
            thr = conformal_quantile(kept, self.target_fpr)
            if self.method == "robust":
                lo, hi = self.bounds_
                thr = float(min(max(thr, lo), hi))
        self.threshold_ = self.calibrated_threshold_ = float(thr)
        trimmed = set(self.trimmed_entities_)
        self._drift.extend(s[[e not in trimmed for e in ent]][-self.drift_window:].tolist()
                           if self.method == "robust" else s[-self.drift_window:].tolist())

    def _pooled(self, ent: np.ndarray) -> np.ndarray:
        names, inv, counts = np.unique(ent, return_inverse=True, return_counts=True)
        small = counts[inv] < self.min_entity_records
        out = ent.astype(object).copy()
        out[small] = POOLED
        return out

    def _trim(self, s: np.ndarray, ent: np.ndarray) -> np.ndarray:
        """Mask of grace records kept after entity-level trimming (see the module doc)."""
        pooled = self._pooled(ent)
        names, inv = np.unique(pooled.astype(str), return_inverse=True)
        groups = [s[inv == i] for i in range(names.size)]
        med = np.array([np.median(g) for g in groups])
        # voters: entities with enough records (a pool of a few stray records does not vote; it is still judged)
        votes = np.array([g.size >= self.min_entity_records for g in groups])
        if not votes.any():
            votes[:] = True
        suspect_anchor = med[votes] > self.trained_threshold
        if suspect_anchor.sum() * 2 <= votes.sum():   # the trained threshold fits most of the network
            cut, kind = self.trained_threshold, "trained"
        elif votes.sum() > 1:
            # one vote per entity: the typical entity's median plus k typical within-entity spreads
            spread = float(np.median([robust_scale(g) for g, v in zip(groups, votes) if v]))
            cut, kind = float(np.median(med[votes])) + self.k * spread, "mad"
        else:
            cut, kind = math.inf, "mad"
        suspect = med > cut
        keep = ~suspect[inv]
        self.cut_, self.cut_kind_ = float(cut), kind
        if suspect.any() and keep.mean() < 1.0 - self.max_trim:
            self.trim_skipped_ = True
            return np.ones(s.size, dtype=bool)
        self.trimmed_entities_ = sorted(str(x) for x in names[suspect])
        return keep

    # -- drift --------------------------------------------------------------------------------
    HALF_LIFE_RECORDS = 200.0  # per-entity alert share: exponential decay over an entity's last ~200 records

    def _track(self, s: np.ndarray, ent: np.ndarray, t) -> None:
        if self.method != "robust" or self.scale_ is None:
            return
        alert = s > self.threshold_
        trimmed = set(self.trimmed_entities_)
        decay = 0.5 ** (1.0 / self.HALF_LIFE_RECORDS)
        benign = np.zeros(s.size, dtype=bool)
        for i, e in enumerate(ent.astype(str)):
            a = self.entity_alert_.setdefault(e, [0.0, 0.0])
            a[0], a[1] = a[0] * decay + float(alert[i]), a[1] * decay + 1.0
            benign[i] = e not in trimmed and a[0] <= 0.5 * a[1]
        self._drift.extend(s[benign].tolist())
        if self.drift_rate <= 0 or not self._drift:
            return
        hours = 0.0
        if t is not None and t.size and self.last_ts_ is not None:
            hours = max(0.0, float(np.max(t)) - self.last_ts_) / 3600.0
        if hours <= 0:
            return
        goal = conformal_quantile(np.fromiter(self._drift, dtype=np.float64), self.target_fpr)
        step = self.drift_rate * self.scale_ * hours
        thr = self.threshold_ + float(np.clip(goal - self.threshold_, -step, step))
        lo, hi = self.bounds_
        self.threshold_ = float(min(max(thr, lo), hi))
        if len(self.entity_alert_) > 100_000:  # bound the memory: forget the quietest entities
            keep = sorted(self.entity_alert_.items(), key=lambda kv: -kv[1][1])[:50_000]
            self.entity_alert_ = dict(keep)

    # -- persistence --------------------------------------------------------------------------
    PARAMS = ("trained_threshold", "target_fpr", "grace_records", "grace_seconds", "method", "k",
              "min_entity_records", "max_trim", "max_shift", "drift_rate", "drift_window")

    def state(self) -> dict:
        """Everything needed to resume, as plain JSON types."""
        def f(x):
            return None if x is None else float(x)

        return {
            "version": 1,
            "params": {p: getattr(self, p) for p in self.PARAMS},
            "threshold": float(self.threshold_), "in_grace": bool(self.in_grace_),
            "grace_start": f(self.grace_start_), "grace_seen": int(self.grace_seen_),
            "calibrated_threshold": f(self.calibrated_threshold_), "scale": f(self.scale_),
            "trimmed_entities": list(self.trimmed_entities_), "cut": f(self.cut_) if self.cut_ is None or
            math.isfinite(self.cut_) else None, "cut_kind": self.cut_kind_, "trim_skipped": bool(self.trim_skipped_),
            "n_grace": int(self.n_grace_), "n_kept": int(self.n_kept_), "last_ts": f(self.last_ts_),
            "entity_alert": {k: [float(a), float(b)] for k, (a, b) in self.entity_alert_.items()},
            "grace_scores": np.concatenate(self._grace_scores).tolist() if self._grace_scores else [],
            "grace_entities": np.concatenate(self._grace_entities).tolist() if self._grace_entities else [],
            "drift": list(self._drift),
        }

    @classmethod
    def from_state(cls, state: dict) -> GraceCalibrator:
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError("not a GraceCalibrator state (version 1)")
        obj = cls(**state["params"])
        obj.threshold_ = float(state["threshold"])
        obj.in_grace_ = bool(state["in_grace"])
        obj.grace_start_ = state["grace_start"]
        obj.grace_seen_ = int(state["grace_seen"])
        obj.calibrated_threshold_ = state["calibrated_threshold"]
        obj.scale_ = state["scale"]
        obj.trimmed_entities_ = list(state["trimmed_entities"])
        obj.cut_, obj.cut_kind_ = state["cut"], state["cut_kind"]
        obj.trim_skipped_ = bool(state["trim_skipped"])
        obj.n_grace_, obj.n_kept_ = int(state["n_grace"]), int(state["n_kept"])
        obj.last_ts_ = state["last_ts"]
        obj.entity_alert_ = {k: [float(a), float(b)] for k, (a, b) in state["entity_alert"].items()}
        if state["grace_scores"]:
            obj._grace_scores = [np.asarray(state["grace_scores"], dtype=np.float64)]
            obj._grace_entities = [np.asarray(state["grace_entities"], dtype=str)]
        obj._drift.extend(float(x) for x in state["drift"])
        return obj

    @property
    def undersized_(self) -> bool:
        """Fewer kept grace records than ``10 / target_fpr`` (the project's rule for a quantile at that rate:
        about 10 expected exceedances); the deployed threshold is then a noisy estimate."""
        return not self.in_grace_ and self.n_kept_ < math.ceil(10.0 / self.target_fpr)

    def summary(self) -> dict:
        """A short JSON-able description (logs, CLI summary, reports)."""
        return {"method": self.method, "trained": self.trained_threshold, "deployed": self.threshold_,
                "undersized": self.undersized_,
                "in_grace": self.in_grace_, "grace_records": self.n_grace_, "kept": self.n_kept_,
                "trimmed_entities": self.trimmed_entities_[:20], "cut_kind": self.cut_kind_,
                "trim_skipped": self.trim_skipped_, "scale": self.scale_}


def flow_entities(table) -> np.ndarray:
    """The entity key the CLI and the daemon use: ``src_ip|dst_port/proto`` of each record of ``table``
    (a pyarrow table or batch of the canonical flow schema; missing columns read as empty)."""
    def col(name):
        if name in table.schema.names:
            return table.column(name).to_pylist()
        return [None] * table.num_rows
    return np.array([f"{a}|{b}/{c}" for a, b, c in zip(col("src_ip"), col("dst_port"), col("proto"))], dtype=object)

"""The promotion gate: may a retrained model (the challenger) replace the live one (the champion)?

A pure function over scored evaluation data: :func:`gate` takes what each model scored on the same
records (:class:`ModelEval`) and a :class:`GateConfig`, and returns a :class:`GateResult` with one
:class:`Check` per rule. Nothing here trains, reads files or touches a registry
(:mod:`training.retrain` does that and calls this).

The rules (issue 18; defaults in :class:`GateConfig`), champion vs challenger on the same records,
strictly later than the challenger's training data:

* ``auprc``: AUPRC non-inferior: a paired bootstrap over time windows (the same resampled windows for
  both models); passes when the lower ``confidence`` bound of ``AUPRC(challenger) - AUPRC(champion)``
  is at least ``-auprc_margin``.
* ``recall_at_fpr``: recall at the target FPR (each model's threshold set so that ``target_fpr`` of the
  benign records of the set score above it), non-inferior by the same paired bootstrap with
  ``recall_margin``.
* ``slices``: per attack class (and ATT&CK technique, when the data names one per record) with at least
  ``slice_min_positives`` positives: recall at the target FPR of the challenger is not more than
  ``slice_max_drop`` below the champion's.
* ``benign_fpr``: the challenger's benign FPR at its own operating threshold is at most
  ``fpr_factor`` x the target FPR (the champion's is reported beside it).
* ``alert_volume``: the challenger's alerts on benign records per hour of data are within
  ``alert_budget_per_hour`` (default 60: one alert a minute for the whole stream; ``null`` switches the
  check off, and the report says so).
* ``score_drift``: the challenger's scores on the benign records stay where the champion's are: the
  population stability index (PSI) of the challenger's benign scores over ten bins cut at the deciles
  of the champion's is at most ``drift_max_psi`` (default 0.25, the usual "significant shift" line;
  shares floored at 1e-4); the Kolmogorov-Smirnov distance and both models' 10/50/90 % quantiles are
  reported beside it. The alerts, their evidence ("score vs threshold"), dashboards and SIEM rules
  read the raw score, so a retrained model that moves it is a change someone must look at first.
* ``speed``: the challenger scores at least ``speed_ratio`` x the champion's records per second.

The first three are *labelled* checks: they need records labelled malicious and benign. They run on
every labelled set given (the later archive slice when it holds labels, the ``--eval`` data when
given); a set without labels gets them ``skipped`` with the reason. ``benign_fpr``,
``alert_volume`` and ``score_drift`` run on the later archive slice (every record not labelled
malicious counts as benign there: an archive is mostly unlabelled), or on the benign records of the
labelled data when there is no archive slice. :attr:`GateResult.data_sources` names, per check, the
sets it ran on (``holdout``: archive labels and verdicts; ``eval``: the ``--eval`` replay data).

A check is ``passed``, ``failed`` or ``skipped`` (with why). The gate passes when no check failed
(and, with ``require_labels``, at least one labelled check ran). The bootstrap is seeded: the same
inputs and config give the same result.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
HOLDOUT, EVAL = "holdout", "eval"


class GateConfig(BaseModel):
    """Thresholds of the promotion gate (the ``gate:`` section of ``retrain.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_fpr: float | None = Field(None, gt=0, lt=1, description="benign FPR the models are calibrated to; "
                                     "None: the challenger's calibration target")
    auprc_margin: float = Field(0.01, ge=0, le=1, description="AUPRC non-inferiority margin")
    recall_margin: float = Field(0.01, ge=0, le=1, description="recall-at-target-FPR non-inferiority margin")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided bootstrap confidence")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="bootstrap replicates")
    min_windows: int = Field(10, ge=2, description="fewer windows than this: records are resampled instead")
    seed: int = Field(0, description="bootstrap seed")
    fpr_factor: float = Field(1.5, ge=1, description="challenger benign FPR <= fpr_factor x target FPR")
    slice_min_positives: int = Field(30, ge=1, description="slices with fewer positives are not checked")
    slice_max_drop: float = Field(0.05, ge=0, le=1, description="largest allowed drop of a slice's recall")
    alert_budget_per_hour: float | None = Field(60.0, gt=0, description="alerts on benign records per hour of "
                                                "data the analysts can take; null: check switched off")
    drift_max_psi: float | None = Field(0.25, gt=0, description="largest PSI of the challenger's benign scores "
                                        "over the champion's deciles; null: check switched off")
    speed_ratio: float = Field(0.9, gt=0, le=1, description="challenger records/s >= speed_ratio x champion's")
    min_labelled: int = Field(10, ge=1, description="a set needs this many malicious and benign records for "
                              "the labelled checks")
    require_labels: bool = Field(False, description="refuse when no labelled check could run")


@dataclass
class EvalSet:
    """Records both models scored, and what is known about them.

    Attributes:
        name: ``holdout`` (the later archive slice) or ``eval`` (labelled ``--eval`` inputs).
        scores: one score per record (NaN: not scored; never an alert).
        labels: 1 malicious, 0 benign, -1 unknown (background, unlabelled).
        windows: the time window of each record (the bootstrap resamples windows).
        hours: the time the records span, in hours (alert volume).
        slices: ``{"attack": class per record, "technique": ...}`` (None where the record names none).
    """

    name: str
    scores: np.ndarray
    labels: np.ndarray
    windows: np.ndarray
    hours: float = 0.0
    slices: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.windows = np.asarray(self.windows, dtype=np.int64)
        n = len(self.scores)
        if len(self.labels) != n or len(self.windows) != n:
            raise ValueError(f"EvalSet {self.name!r}: scores, labels and windows must have one value per record, "
                             f"got {n}, {len(self.labels)}, {len(self.windows)}")
        for k, v in self.slices.items():
            if len(v) != n:
                raise ValueError(f"EvalSet {self.name!r}: slice {k!r} has {len(v)} values for {n} records")

    def labelled(self, min_each: int) -> bool:
        return int((self.labels == 1).sum()) >= min_each and int((self.labels == 0).sum()) >= min_each


@dataclass
class ModelEval:
    """One model's scores on the evaluation sets, its operating threshold and its scoring speed."""

    name: str
    threshold: float
    sets: dict[str, EvalSet]
    records_per_second: float | None = None
    target_fpr: float | None = None


@dataclass
class Check:
    name: str
    status: str
    reason: str
    data: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateResult:
    passed: bool
    checks: list[Check]
    config: dict
    notes: list[str] = field(default_factory=list)

    @property
    def data_sources(self) -> dict[str, list[str]]:
        """Per check, the sets it ran on (passed or failed): ``holdout`` (the archive's later slice, its labels
        and verdicts) and/or ``eval`` (the ``--eval`` replay data); [] when it was skipped everywhere."""
        out: dict[str, list[str]] = {}
        for c in self.checks:
            out.setdefault(c.name, [])
            if c.status != SKIPPED and c.data and c.data not in out[c.name]:
                out[c.name].append(c.data)
        return out

    @property
    def decision(self) -> str:
        return "promote" if self.passed else "refuse"

    @property
    def reasons(self) -> list[str]:
        """Why it was refused: one line per failed check (empty when it passed)."""
        out = [f"{c.name}{f' [{c.data}]' if c.data else ''}: {c.reason}" for c in self.checks if c.status == FAILED]
        if not self.passed and not out:
            out = [n for n in self.notes if n.startswith("refused")]
        return out

    def to_dict(self) -> dict:
        return {"decision": self.decision, "passed": self.passed, "reasons": self.reasons, "notes": self.notes,
                "data_sources": self.data_sources, "checks": [c.to_dict() for c in self.checks],
                "config": self.config}


# -- metrics on presorted arrays (one sort per model, O(n) per bootstrap replicate) ---------------------


class _Sorted:
    """One model's scores on one set, sorted descending once; metrics under record weights."""

    def __init__(self, scores: np.ndarray, y: np.ndarray) -> None:
        s = np.where(np.isnan(scores), -np.inf, scores)  # unscored: ranked last, never flagged
        self.order = np.argsort(-s, kind="stable")
        self.s = s[self.order]
        self.y = y[self.order]
        # last index of each group of tied scores: precision/recall are read there (as sklearn does)
        self.ends = np.flatnonzero(np.r_[self.s[1:] != self.s[:-1], True])

    def auprc(self, w: np.ndarray) -> float:
        ws = w[self.order]
        tp = np.cumsum(ws * self.y)[self.ends]
        fp = np.cumsum(ws * (1 - self.y))[self.ends]
        pos = tp[-1]
        if pos <= 0 or fp[-1] <= 0:
            return float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / pos
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def recall_at_fpr(self, w: np.ndarray, fpr: float) -> float:
        ws = w[self.order]
        pos_w, neg_w = ws * self.y, ws * (1 - self.y)
        P, N = pos_w.sum(), neg_w.sum()
        if P <= 0 or N <= 0:
            return float("nan")
        fp = np.cumsum(neg_w)[self.ends]
        tp = np.cumsum(pos_w)[self.ends]
        ok = fp <= fpr * N + 1e-12       # cut points (after a whole tie group) within the FPR budget
        if not ok.any():
            return 0.0
        return float(tp[np.flatnonzero(ok)[-1]] / P)


def threshold_at_fpr(scores: np.ndarray, benign: np.ndarray, fpr: float) -> float:
    """The lowest threshold with at most ``fpr`` of the benign scores strictly above it."""
    b = np.sort(np.where(np.isnan(scores[benign]), -np.inf, scores[benign]))
    if len(b) == 0:
        return float("inf")
    k = int(np.floor(fpr * len(b)))           # this many benign may lie above
    return float(b[len(b) - 1 - k])


def _flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf) > threshold


def _window_weights(windows: np.ndarray, n_boot: int, rng: np.random.Generator, min_windows: int):
    """Per replicate, a weight per record: how often its window (or, with few windows, itself) was drawn."""
    uniq, inv = np.unique(windows, return_inverse=True)
    if len(uniq) >= min_windows:
        unit, n_units, how = inv, len(uniq), f"{len(uniq)} windows resampled"
    else:
        unit, n_units = np.arange(len(windows)), len(windows)
        how = f"only {len(uniq)} windows (< min_windows): {n_units} records resampled"
    def gen():
        for _ in range(n_boot):
            counts = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units)
            yield counts[unit].astype(np.float64)
    return gen(), how


def paired_bootstrap(champ: np.ndarray, chall: np.ndarray, y: np.ndarray, windows: np.ndarray, metric: str,
                     cfg: GateConfig, fpr: float | None = None) -> dict:
    """Point estimates and the lower one-sided ``cfg.confidence`` bound of ``metric(chall) - metric(champ)``
    over ``cfg.bootstrap`` window resamples (the same resample for both models)."""
    a, b = _Sorted(champ, y), _Sorted(chall, y)
    f = (lambda s, w: s.auprc(w)) if metric == "auprc" else (lambda s, w: s.recall_at_fpr(w, fpr))
    ones = np.ones(len(y))
    va, vb = f(a, ones), f(b, ones)
    rng = np.random.default_rng(cfg.seed)
    weights, how = _window_weights(windows, cfg.bootstrap, rng, cfg.min_windows)
    diffs = []
    for w in weights:
        d = f(b, w) - f(a, w)
        if np.isfinite(d):
            diffs.append(d)
    diffs = np.asarray(diffs)
    lower = float(np.quantile(diffs, 1 - cfg.confidence)) if len(diffs) else float("nan")
    return {"champion": va, "challenger": vb, "difference": vb - va, "lower_bound": lower,
            "confidence": cfg.confidence, "replicates": int(len(diffs)), "resampling": how}


def _r(x: Any, nd: int = 4) -> Any:
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), nd)


# -- the checks ----------------------------------------------------------------------------------------


def _labelled_checks(name: str, a: EvalSet, b: EvalSet, fpr: float, cfg: GateConfig) -> list[Check]:
    y = (a.labels == 1).astype(np.int64)
    m = (a.labels == 0) | (a.labels == 1)
    ya, sa, sb, win = y[m], a.scores[m], b.scores[m], a.windows[m]
    out = []
    r = paired_bootstrap(sa, sb, ya, win, "auprc", cfg)
    ok = r["lower_bound"] >= -cfg.auprc_margin
    out.append(Check("auprc", PASSED if ok else FAILED,
                     f"AUPRC challenger {r['challenger']:.4f} vs champion {r['champion']:.4f}; lower "
                     f"{cfg.confidence:.0%} bound of the difference {r['lower_bound']:+.4f} "
                     f"{'>=' if ok else '<'} -{cfg.auprc_margin:g} ({r['resampling']})", name,
                     {k: _r(v) if isinstance(v, float) else v for k, v in r.items()}))
    r = paired_bootstrap(sa, sb, ya, win, "recall", cfg, fpr=fpr)
    ok = r["lower_bound"] >= -cfg.recall_margin
    out.append(Check("recall_at_fpr", PASSED if ok else FAILED,
                     f"recall at FPR {fpr:g}: challenger {r['challenger']:.4f} vs champion {r['champion']:.4f}; "
                     f"lower {cfg.confidence:.0%} bound of the difference {r['lower_bound']:+.4f} "
                     f"{'>=' if ok else '<'} -{cfg.recall_margin:g} ({r['resampling']})", name,
                     {**{k: _r(v) if isinstance(v, float) else v for k, v in r.items()}, "target_fpr": fpr}))
    out.append(_slice_check(name, a, b, fpr, cfg))
    return out


def _slice_check(name: str, a: EvalSet, b: EvalSet, fpr: float, cfg: GateConfig) -> Check:
    benign = a.labels == 0
    ta, tb = threshold_at_fpr(a.scores, benign, fpr), threshold_at_fpr(b.scores, benign, fpr)
    fa, fb = _flagged(a.scores, ta), _flagged(b.scores, tb)
    rows, small = [], 0
    for kind, values in sorted(a.slices.items()):
        vals = np.asarray(values, dtype=object)
        pos = a.labels == 1
        names = sorted({v for v in vals[pos] if v is not None and v == v and str(v) != ""}, key=str)
        for s in names:
            sel = pos & (vals == s)
            n = int(sel.sum())
            if n < cfg.slice_min_positives:
                small += 1
                continue
            ra, rb = float(fa[sel].mean()), float(fb[sel].mean())
            rows.append({"kind": kind, "slice": str(s), "positives": n, "champion": _r(ra), "challenger": _r(rb),
                         "drop": _r(ra - rb), "failed": bool(ra - rb > cfg.slice_max_drop)})
    values = {"target_fpr": fpr, "slices": rows, "slices_below_min_positives": small}
    if not rows:
        why = (f"no attack class / technique slice with >= {cfg.slice_min_positives} positives"
               + (f" ({small} smaller slices)" if small else "")
               + ("" if a.slices else ": the data names no attack class or technique per record"))
        return Check("slices", SKIPPED, why, name, values)
    bad = [r for r in rows if r["failed"]]
    if bad:
        worst = max(bad, key=lambda r: r["drop"])
        return Check("slices", FAILED, f"{len(bad)} of {len(rows)} slices lose more than {cfg.slice_max_drop:g} "
                     f"recall at FPR {fpr:g}; worst {worst['kind']} {worst['slice']!r} ({worst['positives']} "
                     f"positives): {worst['champion']} -> {worst['challenger']}", name, values)
    worst = max(rows, key=lambda r: r["drop"])
    return Check("slices", PASSED, f"{len(rows)} slices with >= {cfg.slice_min_positives} positives; largest "
                 f"recall drop {worst['drop']:+.4f} ({worst['kind']} {worst['slice']!r}) <= {cfg.slice_max_drop:g}",
                 name, values)


def _benign_of(s: EvalSet) -> np.ndarray:
    """Benign records: in the archive slice every record not labelled malicious (mostly unlabelled);
    in labelled data the records labelled benign."""
    return s.labels != 1 if s.name == HOLDOUT else s.labels == 0


def _fpr_check(name: str, a: EvalSet, b: EvalSet, ta: float, tb: float, fpr: float, cfg: GateConfig) -> Check:
    benign = _benign_of(a)
    n = int(benign.sum())
    if n == 0:
        return Check("benign_fpr", SKIPPED, "no benign records to measure a false-positive rate on", name)
    fa, fb = float(_flagged(a.scores[benign], ta).mean()), float(_flagged(b.scores[benign], tb).mean())
    limit = cfg.fpr_factor * fpr
    ok = fb <= limit
    return Check("benign_fpr", PASSED if ok else FAILED,
                 f"challenger benign FPR {fb:.4f} at its threshold {tb:.6g} {'<=' if ok else '>'} {cfg.fpr_factor:g} x "
                 f"target {fpr:g} = {limit:.4f} (champion {fa:.4f} at {ta:.6g}; {n} benign records)", name,
                 {"champion": _r(fa), "challenger": _r(fb), "limit": _r(limit), "benign_records": n,
                  "champion_threshold": ta, "challenger_threshold": tb})


def _volume_check(name: str, a: EvalSet, b: EvalSet, ta: float, tb: float, cfg: GateConfig) -> Check:
    benign = _benign_of(a)
    if a.hours <= 0:
        return Check("alert_volume", SKIPPED, "the data spans no time: alerts per hour undefined", name)
    va = float(_flagged(a.scores[benign], ta).sum()) / a.hours
    vb = float(_flagged(b.scores[benign], tb).sum()) / a.hours
    values = {"champion_per_hour": _r(va, 3), "challenger_per_hour": _r(vb, 3), "hours": _r(a.hours, 3),
              "budget_per_hour": cfg.alert_budget_per_hour}
    if cfg.alert_budget_per_hour is None:
        return Check("alert_volume", SKIPPED, f"switched off (gate.alert_budget_per_hour: null); "
                     f"challenger {vb:.2f} vs champion {va:.2f} benign alerts per hour", name, values)
    ok = vb <= cfg.alert_budget_per_hour
    return Check("alert_volume", PASSED if ok else FAILED,
                 f"challenger {vb:.2f} alerts on benign records per hour {'<=' if ok else '>'} budget "
                 f"{cfg.alert_budget_per_hour:g} (champion {va:.2f}; {a.hours:.2f} h of data)", name, values)


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected``: ``sum((q - p) ln(q / p))`` over ``bins``
    bins cut at the quantiles of ``expected`` (open at both ends; tied quantiles merged), shares floored at
    ``eps``."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / len(e)
    q = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Largest gap between the empirical CDFs of ``x`` and ``y`` (two-sample Kolmogorov-Smirnov statistic)."""
    x, y = np.sort(np.asarray(x, np.float64)), np.sort(np.asarray(y, np.float64))
    grid = np.concatenate([x, y])
    return float(np.max(np.abs(np.searchsorted(x, grid, side="right") / len(x)
                                - np.searchsorted(y, grid, side="right") / len(y))))


def _drift_check(name: str, a: EvalSet, b: EvalSet, cfg: GateConfig) -> Check:
    benign = _benign_of(a)
    both = benign & np.isfinite(a.scores) & np.isfinite(b.scores)
    n = int(both.sum())
    if n < 20:
        return Check("score_drift", SKIPPED, f"{n} benign records scored by both models (< 20): no score "
                     f"distribution to compare", name)
    sa, sb = a.scores[both], b.scores[both]
    value, ks = psi(sa, sb), ks_distance(sa, sb)
    q = [0.1, 0.5, 0.9]
    values = {"psi": _r(value), "ks": _r(ks), "benign_records": n, "max_psi": cfg.drift_max_psi,
              "champion_quantiles": [_r(v, 6) for v in np.quantile(sa, q)],
              "challenger_quantiles": [_r(v, 6) for v in np.quantile(sb, q)], "quantiles": q}
    if cfg.drift_max_psi is None:
        return Check("score_drift", SKIPPED, f"switched off (gate.drift_max_psi: null); PSI {value:.3f}, KS "
                     f"{ks:.3f}", name, values)
    ok = value <= cfg.drift_max_psi
    return Check("score_drift", PASSED if ok else FAILED,
                 f"PSI of the challenger's benign scores over the champion's deciles {value:.3f} "
                 f"{'<=' if ok else '>'} {cfg.drift_max_psi:g} (KS {ks:.3f}; median {np.median(sa):.4g} -> "
                 f"{np.median(sb):.4g}; {n} benign records)", name, values)


def _speed_check(a: ModelEval, b: ModelEval, cfg: GateConfig) -> Check:
    if not a.records_per_second or not b.records_per_second:
        return Check("speed", SKIPPED, "scoring speed not measured for both models")
    ratio = b.records_per_second / a.records_per_second
    ok = ratio >= cfg.speed_ratio
    return Check("speed", PASSED if ok else FAILED,
                 f"challenger {b.records_per_second:.0f} records/s = {ratio:.2f} x champion "
                 f"{a.records_per_second:.0f} records/s ({'>=' if ok else '<'} {cfg.speed_ratio:g})", None,
                 {"champion": _r(a.records_per_second, 1), "challenger": _r(b.records_per_second, 1),
                  "ratio": _r(ratio), "min_ratio": cfg.speed_ratio})


def gate(champion_eval: ModelEval, challenger_eval: ModelEval, cfg: GateConfig | None = None) -> GateResult:
    """Apply every rule of ``cfg`` to the two models' evaluations (the same records in each set)."""
    cfg = cfg or GateConfig()
    a, b = champion_eval, challenger_eval
    if set(a.sets) != set(b.sets):
        raise ValueError(f"champion and challenger were scored on different sets: {sorted(a.sets)} vs {sorted(b.sets)}")
    for k in a.sets:
        if len(a.sets[k].scores) != len(b.sets[k].scores) or not np.array_equal(a.sets[k].labels, b.sets[k].labels):
            raise ValueError(f"set {k!r}: champion and challenger must score the same records")
    fpr = cfg.target_fpr or b.target_fpr or a.target_fpr
    if fpr is None:
        raise ValueError("no target FPR: set gate.target_fpr or give the challenger's calibration target")
    checks: list[Check] = []
    notes: list[str] = []
    labelled = [k for k in (HOLDOUT, EVAL) if k in a.sets and a.sets[k].labelled(cfg.min_labelled)]
    others = sorted(k for k in a.sets if k not in (HOLDOUT, EVAL) and a.sets[k].labelled(cfg.min_labelled))
    labelled += others
    need = f">= {cfg.min_labelled} records labelled malicious and >= {cfg.min_labelled} labelled benign"
    if HOLDOUT in a.sets and HOLDOUT not in labelled:
        why = ("no labels in the recent archive: labelled checks ran on --eval data" if EVAL in labelled else
               "no labels in the recent archive and no labelled --eval data: labelled checks skipped"
               if EVAL not in a.sets else
               "no labels in the recent archive, and the --eval data is not labelled either: labelled checks skipped")
        notes.append(f"{why} (a set needs {need})")
        for name in ("auprc", "recall_at_fpr", "slices"):
            checks.append(Check(name, SKIPPED, why, HOLDOUT))
    if EVAL in a.sets and EVAL not in labelled:
        why = f"the --eval data has not {need}: labelled checks skipped on it"
        notes.append(why)
        for name in ("auprc", "recall_at_fpr", "slices"):
            checks.append(Check(name, SKIPPED, why, EVAL))
    if not a.sets:
        notes.append("no evaluation data at all: every data check skipped")
    for k in labelled:
        checks += _labelled_checks(k, a.sets[k], b.sets[k], fpr, cfg)
    base = HOLDOUT if HOLDOUT in a.sets else (labelled[0] if labelled else None)
    if base is None:
        for name in ("benign_fpr", "alert_volume", "score_drift"):
            checks.append(Check(name, SKIPPED, "no archive slice and no labelled benign records"))
    else:
        checks.append(_fpr_check(base, a.sets[base], b.sets[base], a.threshold, b.threshold, fpr, cfg))
        checks.append(_volume_check(base, a.sets[base], b.sets[base], a.threshold, b.threshold, cfg))
        checks.append(_drift_check(base, a.sets[base], b.sets[base], cfg))
    checks.append(_speed_check(a, b, cfg))
    failed = any(c.status == FAILED for c in checks)
    ran_labelled = any(c.status != SKIPPED for c in checks if c.name in ("auprc", "recall_at_fpr"))
    passed = not failed
    if cfg.require_labels and not ran_labelled:
        passed = False
        notes.append("refused: gate.require_labels is set and no labelled check could run")
    return GateResult(passed, checks, {**cfg.model_dump(), "target_fpr_used": fpr}, notes)


__all__ = ["Check", "EvalSet", "GateConfig", "GateResult", "ModelEval", "gate", "ks_distance", "paired_bootstrap",
           "psi", "threshold_at_fpr"]

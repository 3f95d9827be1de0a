"""Behaviour predicates over long-horizon per-flow features (:mod:`ingest.behaviour`), mapped to ATT&CK.

The same shape as :mod:`knowledge.predicates` (a registry of :class:`~knowledge.predicates.Predicate`,
each ``fn -> float [E]`` in [0, 1] with soft thresholds from :func:`~knowledge.predicates.ramp`), but
``fn`` takes the behaviour features of a batch (``BehaviourState.update(table)``: a pyarrow Table or a
dict of numpy columns) instead of one window's :class:`~knowledge.predicates.WindowContext`. They are
kept apart from :data:`knowledge.predicates.PREDICATES` on purpose: that registry fixes the model's
knowledge columns, and adding to it would change the input width of every trained model.

Each predicate links to ATT&CK techniques with a confidence (:data:`TECHNIQUE_LINKS`); a flow's score for
a technique is the max over its predicates of activation x confidence, and a technique *fires* for a flow
at score >= :data:`FIRE_THRESHOLD`. Thresholds are fixed operational constants (documented per predicate),
never fitted on labels.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa

from knowledge.predicates import Predicate, ramp

__all__ = ["BEHAVIOUR_PREDICATES", "BEHAVIOUR_PREDICATE_NAMES", "TECHNIQUE_LINKS", "TECHNIQUES", "FIRE_THRESHOLD",
           "compute_behaviour_predicates", "technique_scores", "fired"]

FIRE_THRESHOLD = 0.5
KiB = 1024.0
MiB = 1024.0 * 1024.0

Features = Mapping[str, np.ndarray]


class _Columns(dict):
    """Feature columns as float64 numpy arrays, converted on first use (predicates read a few of them)."""

    def __init__(self, features: pa.Table | Mapping):
        super().__init__()
        self.src = features
        self.n = features.num_rows if isinstance(features, (pa.Table, pa.RecordBatch)) else \
            (len(next(iter(features.values()))) if len(features) else 0)

    def __missing__(self, name: str) -> np.ndarray:
        src = self.src
        col = src.column(name).to_numpy() if isinstance(src, (pa.Table, pa.RecordBatch)) else src[name]
        v = self[name] = np.asarray(col, dtype=np.float64)
        return v


def _up_ratio(f: Features, prefix: str = "pair") -> np.ndarray:
    up, down = f[f"{prefix}_up_1h"], f[f"{prefix}_down_1h"]
    return np.divide(up, up + down, out=np.zeros(len(up)), where=(up + down) > 0)


def periodic_beacon(f: Features) -> np.ndarray:
    """A source->destination pair whose arrivals are regular over minutes to hours: >= 6 gaps (full at 12)
    whose coefficient of variation, or mean deviation from the gap 1-4 arrivals earlier relative to the mean
    gap (a repeating retry pattern), is <= 0.1 (none above 0.35; Poisson arrivals have ~1 and ~0.63),
    spanning >= 5 min (full at 15 min)."""
    regularity = np.minimum(f["pair_gap_cv"], f["pair_gap_pattern"])
    return (ramp(f["pair_gaps"], 5, 12) * (1.0 - ramp(regularity, 0.1, 0.35))
            * ramp(f["pair_age_s"], 300, 900))


def rare_port_for_host(f: Features) -> np.ndarray:
    """A host with a port habit (>= 20 flows of history, full at 50; its top ports cover >= 80% of them,
    full at 95%) uses a destination port it has (almost) never used: decayed share <= 0.5% (none above 2%)."""
    return (ramp(f["src_port_history"], 20, 50) * ramp(f["src_port_coverage"], 0.8, 0.95)
            * (1.0 - ramp(f["src_port_share"], 0.005, 0.02)))


def sustained_upload(f: Features) -> np.ndarray:
    """A pair uploading steadily for a long time: decayed upload >= 256 KiB/h (full at 2 MiB/h), >= 70% of
    the pair's bytes upstream (full at 90%), the pair active >= 15 min (full at 30 min)."""
    return (ramp(f["pair_up_1h"], 256 * KiB, 2 * MiB) * ramp(_up_ratio(f), 0.7, 0.9)
            * ramp(f["pair_age_s"], 900, 1800))


def periodic_upload(f: Features) -> np.ndarray:
    """A periodic beacon (as :func:`periodic_beacon`) whose flows carry data out: mean upload per flow
    >= 512 B (full at 4 KiB), >= 60% of the pair's bytes upstream (full at 80%)."""
    return periodic_beacon(f) * ramp(f["pair_size_mean"], 512, 4 * KiB) * ramp(_up_ratio(f), 0.6, 0.8)


def regular_size_upload(f: Features) -> np.ndarray:
    """Uploads cut into equal chunks: >= 8 flows on the pair (full at 16) whose src_bytes have a coefficient
    of variation <= 1% (none above 5%), mean >= 1 KiB (full at 8 KiB), >= 70% of bytes upstream (full at 90%)."""
    return (ramp(f["pair_flows"], 7, 16) * (1.0 - ramp(f["pair_size_cv"], 0.01, 0.05))
            * ramp(f["pair_size_mean"], KiB, 8 * KiB) * ramp(_up_ratio(f), 0.7, 0.9))


def failure_streak(f: Features) -> np.ndarray:
    """Repeated failed attempts to one destination: >= 5 consecutive failed flows (S0, REJ, RSTO, RSTR, SH,
    OTH...) on the pair (full at 20), whatever their pace (a RAT retrying a refused server)."""
    return ramp(f["pair_fail_streak"], 4, 20)


def fallback_after_failures(f: Features) -> np.ndarray:
    """A host turns to a new destination shortly after a failure streak: the flow opens a pair new to the
    host, the host's last streak had >= 5 failures (full at 20) and ended <= 5 min ago (none after 15 min)."""
    return (f["pair_new"] * ramp(f["src_streak_len"], 4, 20)
            * (1.0 - ramp(f["src_streak_age_s"], 300, 900)))


BEHAVIOUR_PREDICATES: dict[str, Predicate] = {}
# predicate -> {technique: link confidence}
TECHNIQUE_LINKS: dict[str, dict[str, float]] = {}


def _reg(fn: Callable, scope: str, links: dict[str, float], tags: tuple[str, ...]) -> None:
    doc = " ".join((fn.__doc__ or "").split())
    BEHAVIOUR_PREDICATES[fn.__name__] = Predicate(fn.__name__, doc, scope, fn, (), (), tags)
    TECHNIQUE_LINKS[fn.__name__] = dict(links)


# T1071 Application Layer Protocol (C2 beaconing); T1571 Non-Standard Port; T1041 Exfiltration Over C2
# Channel; T1029 Scheduled Transfer; T1030 Data Transfer Size Limits; T1008 Fallback Channels.
_reg(periodic_beacon, "src,dst", {"T1071": 0.7}, ("c2",))
_reg(rare_port_for_host, "src,dst_port", {"T1571": 0.7}, ("c2",))
_reg(sustained_upload, "src,dst", {"T1041": 0.7}, ("exfil",))
_reg(periodic_upload, "src,dst", {"T1029": 0.8, "T1041": 0.6}, ("exfil",))
_reg(regular_size_upload, "src,dst", {"T1030": 0.8}, ("exfil",))
# a streak alone is evidence but names nothing (0.4 < FIRE_THRESHOLD): a dead server refuses benign clients too
_reg(failure_streak, "src,dst", {"T1008": 0.4}, ("c2",))
_reg(fallback_after_failures, "src", {"T1008": 0.8}, ("c2",))

BEHAVIOUR_PREDICATE_NAMES: tuple[str, ...] = tuple(BEHAVIOUR_PREDICATES)
TECHNIQUES: tuple[str, ...] = tuple(sorted({t for links in TECHNIQUE_LINKS.values() for t in links}))
_LINK = np.zeros((len(BEHAVIOUR_PREDICATE_NAMES), len(TECHNIQUES)), dtype=np.float32)
for _i, _p in enumerate(BEHAVIOUR_PREDICATE_NAMES):
    for _t, _w in TECHNIQUE_LINKS[_p].items():
        _LINK[_i, TECHNIQUES.index(_t)] = _w


def compute_behaviour_predicates(features: pa.Table | Mapping) -> np.ndarray:
    """Activations ``float32 [E, len(BEHAVIOUR_PREDICATE_NAMES)]`` in [0, 1]."""
    f = _Columns(features)
    n = f.n
    out = np.empty((len(BEHAVIOUR_PREDICATE_NAMES), n), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, name in enumerate(BEHAVIOUR_PREDICATE_NAMES):
            out[j] = BEHAVIOUR_PREDICATES[name].fn(f)
    np.fmax(out, 0.0, out=out)
    np.fmin(out, 1.0, out=out)
    return np.ascontiguousarray(out.T)


def technique_scores(features: pa.Table | Mapping | np.ndarray) -> np.ndarray:
    """``float32 [E, len(TECHNIQUES)]``: max over predicates of activation x link confidence. Takes the
    features, or activations already computed by :func:`compute_behaviour_predicates`."""
    act = features if isinstance(features, np.ndarray) else compute_behaviour_predicates(features)
    if act.shape[0] == 0:
        return np.zeros((0, len(TECHNIQUES)), dtype=np.float32)
    out = np.zeros((act.shape[0], len(TECHNIQUES)), dtype=np.float32)
    for p, t in zip(*np.nonzero(_LINK)):
        np.maximum(out[:, t], act[:, p] * _LINK[p, t], out=out[:, t])
    return out


def fired(features: pa.Table | Mapping | np.ndarray, threshold: float = FIRE_THRESHOLD) -> pa.ListArray:
    """Per flow, the ATT&CK technique ids whose score reaches ``threshold`` (``list<string>``, in
    :data:`TECHNIQUES` order; an empty list where none does)."""
    hit = technique_scores(features) >= threshold
    rows, cols = np.nonzero(hit)  # row-major: grouped by flow, techniques in order
    offsets = np.zeros(hit.shape[0] + 1, dtype=np.int32)
    np.cumsum(hit.sum(axis=1), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.asarray(TECHNIQUES, dtype=object)[cols],
                                                                type=pa.string()))

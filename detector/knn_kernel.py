"""The k smallest distances of each row, averaged: the second half of the kNN detector's search.

:class:`detector.detectors.KNNDetector` gets ``d[i, j] = |b_j|^2 - 2 x_i . b_j`` from one matrix
product per block of rows; :func:`kmean` adds ``|x_i|^2``, keeps the ``k`` smallest per row in one
pass (insertion into a sorted list of ``k``: a bank of 512 rows costs 512 comparisons per row and
~30 insertions on LUFlow embeddings, about twice as fast as ``torch.topk`` here for ``k`` = 5), clamps
rounding below zero and writes the mean of their square roots. ``self_col[i] >= 0`` names a column
row ``i`` may not use (leave-one-out training scores).
"""
from __future__ import annotations

import numpy as np

from detector.runtime import compiled


def _kmean(d, q, k, self_col, has_self, out):  # pragma: no cover - compiled by numba
    best = np.empty(k, dtype=np.float32)
    for i in range(d.shape[0]):
        out[i] = _row_kmean(d[i], q[i], k, self_col[i] if has_self else -1, best)


def _kmean_gathered(d, q, k, P, qP, gi, out):  # pragma: no cover - compiled by numba
    n, m = d.shape
    best = np.empty(k, dtype=np.float32)
    row = np.empty(m, dtype=np.float32)
    for i in range(n):
        if gi.shape[1] == 0:  # nothing shared: the row as it is
            out[i] = _row_kmean(d[i], q[i], k, -1, best)
            continue
        for j in range(m):
            row[j] = d[i, j]
        qi = q[i]
        for t in range(gi.shape[1]):  # the row's shared partial products (one per gathered block)
            p = P[gi[i, t]]
            for j in range(m):
                row[j] += p[j]
            qi += qP[gi[i, t]]
        out[i] = _row_kmean(row, qi, k, -1, best)


def _row_kmean(row, qi, k, skip, best):  # pragma: no cover - compiled by numba
    """Mean square root of the ``k`` smallest ``row[j] + qi`` (``j != skip``); ``best``: scratch of ``k``."""
    m = row.shape[0]
    filled = 0
    j = 0
    while filled < k and j < m:  # the first k usable columns, sorted by insertion
        if j != skip:
            _insert(best, filled, row[j])
            filled += 1
        j += 1
    worst = best[k - 1] if filled == k else np.inf
    start = j
    for j in range(start, m):  # the hot loop: one comparison per column, rarely taken
        v = row[j]
        if v < worst and j != skip:
            _insert(best, k - 1, v)
            worst = best[k - 1]
    acc = 0.0
    for t in range(filled):
        s = np.float64(best[t]) + qi
        acc += np.sqrt(s) if s > 0.0 else 0.0
    return acc / filled if filled else 0.0


def _insert(best, p, v):  # pragma: no cover - compiled by numba
    """Put ``v`` at position ``p`` of the sorted ``best[:p + 1]`` and move it down to its place."""
    while p > 0 and best[p - 1] > v:
        best[p] = best[p - 1]
        p -= 1
    best[p] = v


_insert = compiled(_insert)  # numba resolves these as compiled callees of _kmean
_row_kmean = compiled(_row_kmean)
_compiled = compiled(_kmean)
_compiled_gathered = compiled(_kmean_gathered)
_NO_SELF = np.zeros(1, dtype=np.int64)


def kmean(d: np.ndarray, q: np.ndarray, k: int, self_col: np.ndarray | None, out: np.ndarray) -> None:
    """``out[i]`` = mean over the ``k`` smallest ``d[i, j] + q[i]`` (``j != self_col[i]``) of their square
    roots (negative rounding read as 0). ``d``: [n, m] float32, ``q``: [n] float32, ``out``: [n] float64."""
    if _compiled is not None:
        has_self = self_col is not None
        _compiled(d, q, k, self_col if has_self else _NO_SELF, has_self, out)
        return
    kmean_numpy(d, q, k, self_col, out)  # pragma: no cover - where numba is missing


def kmean_numpy(d: np.ndarray, q: np.ndarray, k: int, self_col: np.ndarray | None, out: np.ndarray) -> None:
    """:func:`kmean` in NumPy (no numba): the same values; a row with fewer than ``k`` usable columns
    averages those it has (0 when none)."""
    d = d.astype(np.float64)
    if self_col is not None:
        rows = np.flatnonzero(self_col >= 0)
        d[rows, self_col[rows]] = np.inf
    kk = min(k, d.shape[1])
    part = np.partition(d, kk - 1, axis=1)[:, :kk] + q[:, None]
    usable = np.isfinite(part)
    vals = np.sqrt(np.clip(np.where(usable, part, 0.0), 0.0, None))
    out[:] = vals.sum(axis=1) / np.maximum(usable.sum(axis=1), 1)


def kmean_gathered(d: np.ndarray, q: np.ndarray, k: int, P: np.ndarray, qP: np.ndarray, gi: np.ndarray,
                   out: np.ndarray) -> None:
    """:func:`kmean` of ``d[i] + sum_t P[gi[i, t]]`` with ``q[i] + sum_t qP[gi[i, t]]`` (no self column):
    rows whose distance matrix has parts shared by many rows — the partial products of an endpoint's
    embedding with the bank and its squared norm, computed once per endpoint
    (:meth:`detector.detectors.KNNDetector.decision_function` on :class:`detector.tensors.FactoredRows`).
    ``P``: [p, m] float32, ``qP``: [p] float32, ``gi``: [n, g] int64 rows of ``P``."""
    if _compiled_gathered is not None:
        _compiled_gathered(d, q, k, P, qP, gi, out)
        return
    kmean_gathered_numpy(d, q, k, P, qP, gi, out)  # pragma: no cover - where numba is missing


def kmean_gathered_numpy(d: np.ndarray, q: np.ndarray, k: int, P: np.ndarray, qP: np.ndarray, gi: np.ndarray,
                         out: np.ndarray) -> None:
    """:func:`kmean_gathered` in NumPy (no numba): the same values."""
    if gi.shape[1]:
        d = d + P[gi].sum(axis=1, dtype=np.float32)
        q = q + qP[gi].sum(axis=1, dtype=np.float32)
    kmean_numpy(d, q, k, None, out)

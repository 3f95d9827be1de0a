"""Compiled propagation (numba): the featurizer's row kernels (distinct rows, log keep, finish), the same
float32 operations as its NumPy path in the same order, so the two give the same blocks bit for bit.
"""
from __future__ import annotations

import numpy as np

from knowledge.predicates.kernels import numba_kernels

# The same float32 operations as the NumPy path (KnowledgeFeaturizer._propagate_rows_numpy), in the same
# order, row by row, so the blocks are equal bit for bit (tests/knowledge/test_features.py):
# * log keep: per row, ``acc[j] = 0; acc[j] += a_p * log_keep[p, j]`` over non-zero a_p in ascending p,
#   as scipy's CSR product does. Terms with ``log_keep[p, j] == 0`` are skipped: they add a signed
#   zero, which leaves any sum unchanged (the sum starts at +0 and is never -0). Needs finite
#   activations (inf * 0 is NaN); a non-finite one sends the rows to the NumPy path.
# * exp stays NumPy's (its SIMD exp is not libm's expf); exp(0) = 1, so only the non-zero entries
#   go through it.
# * no fastmath: LLVM then neither reassociates nor contracts a * b + c into an FMA.
# * maxima start at 0 (the padded column / the tactic floor of the NumPy path); inputs are never NaN.

_BLOCK = 8  # rows finished together: inner loops run across the block (no max-latency chain per row)


def _distinct_rows(words, mult):  # pragma: no cover - compiled by numba
    """``(first, inv)``: index of each distinct row's first occurrence, and each row's distinct id
    (rows compared word by word: exact, a hash only picks the slot)."""
    R, W = words.shape
    size = 1
    while size < 2 * R:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    first = np.empty(R, np.int64)
    inv = np.empty(R, np.int64)
    U = 0
    for r in range(R):
        h = np.uint64(0)
        for k in range(W):
            h += np.uint64(words[r, k]) * mult[k]
        slot = (h >> np.uint64(32)) & mask
        while True:
            u = table[slot]
            if u < 0:
                table[slot] = U
                first[U] = r
                inv[r] = U
                U += 1
                break
            f = first[u]
            same = True
            for k in range(W):
                if words[f, k] != words[r, k]:
                    same = False
                    break
            if same:
                inv[r] = u
                break
            slot = (slot + np.uint64(1)) & mask
    return first[:U], inv


def _log_keep_rows(act, lk_ptr, lk_col, lk_val, width):  # pragma: no cover - compiled by numba
    """Sparse ``act @ log_keep``: ``(indptr, cols, vals, ok)``, row r's non-skipped entries at
    ``indptr[r]:indptr[r + 1]``; ``ok`` False (nothing computed) when an activation is not finite."""
    R, P = act.shape
    indptr = np.zeros(R + 1, np.int64)
    cap = 0
    for r in range(R):
        n = 0
        for p in range(P):
            a = act[r, p]
            if a != 0:
                if not np.isfinite(a):
                    return indptr, np.empty(0, np.int32), np.empty(0, np.float32), False
                n += lk_ptr[p + 1] - lk_ptr[p]
        cap += min(n, width)
    cols = np.empty(cap, np.int32)
    vals = np.empty(cap, np.float32)
    acc = np.zeros(width, np.float32)
    seen = np.zeros(width, np.bool_)
    n = 0
    for r in range(R):
        start = n
        for p in range(P):
            a = act[r, p]
            if a != 0:
                for i in range(lk_ptr[p], lk_ptr[p + 1]):
                    j = lk_col[i]
                    acc[j] += a * lk_val[i]
                    if not seen[j]:
                        seen[j] = True
                        cols[n] = j
                        n += 1
        for i in range(start, n):
            j = cols[i]
            vals[i] = acc[j]
            acc[j] = 0
            seen[j] = False
        indptr[r + 1] = n
    return indptr, cols, vals, True


def _finish_rows(act, indptr, cols, ekeep, T, cf, cf_rest, gate_scale, gate_floor,
                 sig_ptr, sig_members, sig_of, tac_ptr, tac_members, out):  # pragma: no cover - numba
    """Blocks ``out[R, P + T + C]`` from the activations and ``exp`` of the sparse log keep."""
    R, P = act.shape
    C = len(tac_ptr) - 1
    S = len(sig_ptr) - 1
    B = _BLOCK
    act_t = np.zeros((P, B), np.float32)  # lanes past a short last block are computed, never written
    keep = np.ones((2 * T, B), np.float32)  # exp(0) = 1 where nothing was summed
    sig = np.empty((S, B), np.float32)
    tech = np.empty((T, B), np.float32)
    tac = np.empty((C, B), np.float32)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for r0 in range(0, R, B):
        nb = min(B, R - r0)
        for b in range(nb):
            for p in range(P):
                v = act[r0 + b, p]
                act_t[p, b] = v
                out[r0 + b, p] = v
            for i in range(indptr[r0 + b], indptr[r0 + b + 1]):
                keep[cols[i], b] = ekeep[i]
        for s in range(S):  # signature gate, once per distinct signature set
            sg = sig[s]
            for b in range(B):
                sg[b] = zero
            for i in range(sig_ptr[s], sig_ptr[s + 1]):
                at = act_t[sig_members[i]]
                for b in range(B):
                    sg[b] = at[b] if at[b] > sg[b] else sg[b]
            for b in range(B):
                sg[b] = sg[b] * gate_scale + gate_floor
        for t in range(T):  # s = 1 - keep_b * (cf * keep_c + (1 - cf)), times the gate
            kb, kc, sg, tt = keep[t], keep[T + t], sig[sig_of[t]], tech[t]
            for b in range(B):
                tt[b] = (one - kb[b] * (kc[b] * cf + cf_rest)) * sg[b]
        for c in range(C):  # tactic = max(0, its techniques' scores)
            tc = tac[c]
            for b in range(B):
                tc[b] = zero
            for i in range(tac_ptr[c], tac_ptr[c + 1]):
                tt = tech[tac_members[i]]
                for b in range(B):
                    tc[b] = tt[b] if tt[b] > tc[b] else tc[b]
        for b in range(nb):
            for t in range(T):
                out[r0 + b, P + t] = tech[t, b]
            for c in range(C):
                out[r0 + b, P + T + c] = tac[c, b]
            for i in range(indptr[r0 + b], indptr[r0 + b + 1]):
                keep[cols[i], b] = one
    return out


_KERNELS: list = []


def _kernels():
    """``(distinct_rows, log_keep_rows, finish_rows)`` compiled (numba), or None without numba; compiled
    (or loaded from numba's disk cache) on first use."""
    if not _KERNELS:
        _KERNELS.append(numba_kernels(_distinct_rows, _log_keep_rows, _finish_rows))
    return _KERNELS[0]

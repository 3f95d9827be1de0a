"""IsolationForest scoring as one compiled loop over complete binary trees (numba).

An isolation tree of ``max_samples`` = 256 is at most 8 levels deep. :func:`complete_forest`
re-lays each fitted tree as a *complete* binary tree of that depth, stored level by level
(children of slot ``k`` at ``2k + 1`` and ``2k + 2``): a leaf above the bottom level becomes a
chain of pass-through splits (threshold ``+inf``) whose every bottom slot holds the leaf's depth
value. Walking a row is then exactly ``depth`` steps with no branch on "is this a leaf", so
:func:`walk` advances a block of rows through one tree level by level — independent rows, one small
tree in L1 cache — which is ~2.5x faster per row than scikit-learn's ``tree.apply`` per tree
(measured on LUFlow embeddings, 192 features, 100 trees).

Bit for bit scikit-learn's result: the same comparison (float32 feature value promoted to float64,
``x <= threshold`` goes left, anything else — NaN included — right; both sides of a pass-through
slot lead to the same value), and per row the leaf depths are added tree by tree in tree order.
"""
from __future__ import annotations

import numpy as np

from detector.runtime import compiled


# Deeper trees (max_samples > 4096) would make the complete layout large (2 ** depth slots per tree);
# the caller then keeps scikit-learn's walk.
MAX_DEPTH = 12
BLOCK = 256  # rows advanced together: a scaled block (256 x 192 float32 = 196 KB) stays in L2


def available() -> bool:
    """Whether the compiled walk can run here (numba imported)."""
    return walk is not None


def complete_forest(trees, leaf_depth, features) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(feature [T, 2**D - 1] int32, threshold [T, 2**D - 1] float64, value [T, 2**D] float64)``.

    ``trees``: fitted sklearn ``Tree`` objects; ``leaf_depth[t][node]``: the depth value sklearn adds
    for a row ending in ``node``; ``features[t]``: the tree's column subset (or None = all columns),
    folded into ``feature`` so the walk reads the input's own columns. ``None`` when a tree is deeper
    than :data:`MAX_DEPTH`.
    """
    depth = max(int(t.max_depth) for t in trees)
    if depth > MAX_DEPTH:
        return None
    depth = max(depth, 1)
    inner, T = 2 ** depth - 1, len(trees)
    feat = np.zeros((T, inner), dtype=np.int32)
    thr = np.full((T, inner), np.inf)  # pass-through: every finite value goes left
    value = np.zeros((T, inner + 1))
    for t, (tree, ld, sub) in enumerate(zip(trees, leaf_depth, features)):
        left, right, f, th = tree.children_left, tree.children_right, tree.feature, tree.threshold
        stack = [(0, 0, 0)]  # (node, slot, level)
        while stack:
            node, slot, level = stack.pop()
            if left[node] != -1:
                feat[t, slot] = f[node] if sub is None else sub[f[node]]
                thr[t, slot] = th[node]
                stack.append((left[node], 2 * slot + 1, level + 1))
                stack.append((right[node], 2 * slot + 2, level + 1))
                continue
            # a leaf at `level`: its 2 ** (depth - level) bottom slots all carry its value
            first = slot
            for _ in range(depth - level):
                first = 2 * first + 1
            value[t, first - inner:first - inner + 2 ** (depth - level)] = ld[node]
    return feat, thr, value


def _walk(X, mean, scale, scaled, feat, thr, value, depths):  # pragma: no cover - compiled by numba
    """Add each row's leaf depth in every tree to ``depths`` (rows of ``X``, scaled here unless ``scaled``)."""
    n, d = X.shape
    T, inner = feat.shape
    levels = 0
    while (1 << levels) - 1 < inner:
        levels += 1
    xb = np.empty((BLOCK, d), dtype=np.float32)
    slot = np.empty(BLOCK, dtype=np.int64)
    for s in range(0, n, BLOCK):
        m = min(BLOCK, n - s)
        for r in range(m):
            for j in range(d):
                # the same float32 arithmetic as (X - mean) / scale in numpy
                xb[r, j] = X[s + r, j] if scaled else (X[s + r, j] - mean[j]) / scale[j]
        for t in range(T):
            ft, th, val = feat[t], thr[t], value[t]
            for r in range(m):
                slot[r] = 0
            for _ in range(levels):
                for r in range(m):
                    k = slot[r]
                    slot[r] = 2 * k + (1 if xb[r, ft[k]] <= th[k] else 2)
            for r in range(m):
                depths[s + r] += val[slot[r] - inner]


walk = compiled(_walk)

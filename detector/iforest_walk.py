"""IsolationForest scoring from plain node arrays: checked layout, compiled walk, NumPy walk.

A fitted forest is six arrays (:data:`NODE_ARRAYS`), every tree's nodes concatenated in tree order:
``offsets`` [T + 1] (tree ``t`` holds nodes ``offsets[t]:offsets[t + 1]``), and per node
``children_left`` / ``children_right`` (indices within the tree, -1 at a leaf), ``feature`` (the input
column a split reads), ``threshold`` (``x <= threshold`` goes left) and ``value`` (the depth a row ending
in that leaf adds: scikit-learn's ``decision_path_length + average_path_length - 1``). They hold numbers
only, so a saved forest is loaded without running code; :func:`check_nodes` refuses arrays that are not
a forest of proper trees (a child before its parent, two parents, a column out of range) before a walk
reads them.

An isolation tree of ``max_samples`` = 256 is at most 8 levels deep. :func:`complete_forest`
re-lays each tree as a *complete* binary tree of the forest's depth, stored level by level
(children of slot ``k`` at ``2k + 1`` and ``2k + 2``): a leaf above the bottom level becomes a
chain of pass-through splits (threshold ``+inf``) whose every bottom slot holds the leaf's value.
Walking a row is then exactly ``depth`` steps with no branch on "is this a leaf", so :func:`walk`
(numba) advances a block of rows through one tree level by level — independent rows, one small tree in
L1 cache — ~2.5x faster per row than scikit-learn's ``tree.apply`` per tree (measured on LUFlow
embeddings, 192 features, 100 trees). Forests deeper than :data:`MAX_DEPTH`, or where numba is
missing, take :func:`walk_nodes` (NumPy, all trees of a block of rows at once).

Bit for bit scikit-learn's result on both walks: the same comparison (float32 feature value promoted
to float64, ``x <= threshold`` goes left, anything else — NaN included — right), and per row the leaf
values are added tree by tree in tree order.
"""
from __future__ import annotations

import numpy as np

from detector.runtime import compiled

NODE_ARRAYS = ("offsets", "children_left", "children_right", "feature", "threshold", "value")
# Deeper trees (max_samples > 4096) would make the complete layout large (2 ** depth slots per tree);
# the caller then takes walk_nodes.
MAX_DEPTH = 12
BLOCK = 256  # rows advanced together: a scaled block (256 x 192 float32 = 196 KB) stays in L2
_INT, _FLOAT = ("offsets", "children_left", "children_right", "feature"), ("threshold", "value")


def available() -> bool:
    """Whether the compiled walk can run here (numba imported)."""
    return walk is not None


def check_nodes(nodes: dict, n_features: int) -> tuple[dict, np.ndarray]:
    """``(nodes as int64 / float64 arrays, depth of each tree)``; ValueError naming the first array that
    does not describe a forest of proper binary trees over ``n_features`` input columns."""
    missing = [k for k in NODE_ARRAYS if k not in nodes]
    if missing:
        raise ValueError(f"forest arrays missing: {', '.join(missing)}")
    out = {}
    for name in NODE_ARRAYS:
        a = np.asarray(nodes[name])
        kind = "iu" if name in _INT else "f"
        if a.ndim != 1 or a.dtype.kind not in kind:
            raise ValueError(f"forest array {name!r} must be 1-D {'integer' if name in _INT else 'float'}, "
                             f"got {a.dtype} of shape {a.shape}")
        out[name] = np.ascontiguousarray(a, dtype=np.int64 if name in _INT else np.float64)
    off, left, right, feat = out["offsets"], out["children_left"], out["children_right"], out["feature"]
    n = len(left)
    sizes = np.diff(off)
    if len(off) < 2 or off[0] != 0 or off[-1] != n or (sizes < 1).any():
        raise ValueError(f"forest array 'offsets' must rise from 0 to the node count {n}, one step per tree")
    for name in NODE_ARRAYS[2:]:
        if len(out[name]) != n:
            raise ValueError(f"forest array {name!r} has {len(out[name])} nodes, 'children_left' {n}")
    start = np.repeat(off[:-1], sizes)  # first node of each node's tree
    local, size = np.arange(n) - start, np.repeat(sizes, sizes)
    leaf = left == -1
    if (leaf != (right == -1)).any():
        raise ValueError("forest arrays: a node has one child (a leaf has -1 on both sides)")
    inner = ~leaf
    for side in (left, right):  # scikit-learn numbers a child after its parent, inside the tree
        if ((side[inner] <= local[inner]) | (side[inner] >= size[inner])).any():
            raise ValueError("forest arrays: a child index is not after its parent within its tree")
    parents = np.bincount(np.concatenate([left[inner], right[inner]]) + np.concatenate([start[inner]] * 2),
                          minlength=n)
    roots = off[:-1]
    if (parents[roots] != 0).any() or (np.delete(parents, roots) != 1).any():
        raise ValueError("forest arrays: not trees (a node below the root needs exactly one parent)")
    if ((feat[inner] < 0) | (feat[inner] >= n_features)).any():
        raise ValueError(f"forest array 'feature' reads a column outside 0..{n_features - 1}")
    if not np.isfinite(out["value"][leaf]).all():
        raise ValueError("forest array 'value' holds a non-finite leaf value")
    depth, frontier, level = np.zeros(n, np.int64), roots, 0
    while frontier.size:  # level by level from the roots: every node once (one parent each)
        depth[frontier] = level
        f = frontier[inner[frontier]]
        frontier = np.concatenate([left[f] + start[f], right[f] + start[f]])
        level += 1
    return out, np.maximum.reduceat(depth, roots)


def complete_forest(nodes: dict, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(feature [T, 2**D - 1] int32, threshold [T, 2**D - 1] float64, value [T, 2**D] float64)`` from
    checked ``nodes`` (:func:`check_nodes`) and tree ``depths``; ``None`` when a tree is deeper than
    :data:`MAX_DEPTH`."""
    depth = int(depths.max())
    if depth > MAX_DEPTH:
        return None
    depth = max(depth, 1)
    off = nodes["offsets"]
    inner, T = 2 ** depth - 1, len(off) - 1
    feat = np.zeros((T, inner), dtype=np.int32)
    thr = np.full((T, inner), np.inf)  # pass-through: every finite value goes left
    value = np.zeros((T, inner + 1))
    for t in range(T):
        o = off[t]
        left, right = nodes["children_left"][o:off[t + 1]], nodes["children_right"][o:off[t + 1]]
        f, th, ld = nodes["feature"][o:], nodes["threshold"][o:], nodes["value"][o:]
        stack = [(0, 0, 0)]  # (node, slot, level)
        while stack:
            node, slot, level = stack.pop()
            if left[node] != -1:
                feat[t, slot], thr[t, slot] = f[node], th[node]
                stack.append((left[node], 2 * slot + 1, level + 1))
                stack.append((right[node], 2 * slot + 2, level + 1))
                continue
            # a leaf at `level`: its 2 ** (depth - level) bottom slots all carry its value
            first = slot
            for _ in range(depth - level):
                first = 2 * first + 1
            value[t, first - inner:first - inner + 2 ** (depth - level)] = ld[node]
    return feat, thr, value


def node_walk(nodes: dict, depths: np.ndarray) -> tuple:
    """The layout :func:`walk_nodes` reads: children in forest-wide indices, a leaf leading to itself
    (its feature 0, so every step reads a valid column), the roots and the number of steps."""
    off = nodes["offsets"]
    start = np.repeat(off[:-1], np.diff(off))
    here = np.arange(len(start))
    leaf = nodes["children_left"] == -1
    left = np.where(leaf, here, nodes["children_left"] + start)
    right = np.where(leaf, here, nodes["children_right"] + start)
    feat = np.where(leaf, 0, nodes["feature"])
    return left, right, feat, nodes["threshold"], nodes["value"], off[:-1], int(depths.max())


def walk_nodes(block: np.ndarray, layout: tuple, acc: np.ndarray) -> None:
    """Add each row's leaf value in every tree to ``acc``, tree by tree (``block``: scaled float32 rows)."""
    left, right, feat, thr, value, roots, steps = layout
    node = np.repeat(roots[None, :], len(block), axis=0)
    rows = np.arange(len(block))[:, None]
    for _ in range(steps):
        node = np.where(block[rows, feat[node]] <= thr[node], left[node], right[node])
    leaf_value = value[node]
    for t in range(leaf_value.shape[1]):  # tree order, as scikit-learn adds them
        acc += leaf_value[:, t]


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

"""Array kernels the predicates and node features are built from: group ids and distinct counts over
integer codes (a table over the key range; else a compiled hash table, or a sort without numba), port-set
lookups, and the per-node max of edge activations (compiled by numba, else torch's ``scatter_reduce``, else
NumPy).
"""
from __future__ import annotations

import importlib.util

import numpy as np

from ingest.jit import jit

__all__ = ["node_activations", "numba_kernels"]

# A key range up to this many slots per row (plus a fixed 64k) is ranked with a table over the range
# (two linear passes) instead of a sort: both give np.unique's inverse.
_DENSE_PER_ROW = 4
_DENSE_FIXED = 1 << 16


def _dense(kmax: int, n: int) -> bool:
    return kmax < _DENSE_PER_ROW * n + _DENSE_FIXED


def _rank(key: np.ndarray, kmax: int, nonneg: bool = True) -> tuple[np.ndarray, int]:
    """``(np.unique(key, return_inverse=True)[1] as int64, number of distinct keys)``; ``kmax`` bounds
    the keys, ``nonneg`` says they are >= 0 (the table needs both)."""
    if nonneg and _dense(kmax, len(key)):
        seen = np.zeros(kmax + 1, dtype=bool)
        seen[key] = True
        rank = np.cumsum(seen, dtype=np.int64)  # rank[v] - 1 = number of present keys below v
        return rank[key] - 1, int(rank[-1])
    hashed = _hash_kernels()
    if hashed is not None and len(key):
        # distinct keys by a hash table (in order of first appearance), then only those sorted: the same
        # inverse as np.unique's sort of every key, ~5x less time on a 50,000-flow window
        first, uniq = hashed[0](np.ascontiguousarray(key, dtype=np.int64))
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(uniq, kind="stable")] = np.arange(len(uniq))
        return rank[first], len(uniq)
    _, inv = np.unique(key, return_inverse=True)
    return inv.astype(np.int64).ravel(), int(inv.max(initial=-1)) + 1


def _group(*codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Group id per row for the combination of non-negative integer code arrays: the rank of the row's
    code tuple among the window's tuples in lexicographic order (so any order-preserving recoding of a
    code array gives the same ids)."""
    key = np.zeros(len(codes[0]), dtype=np.int64)
    kmax = 0
    nonneg = True
    for c in codes:
        cmax = int(c.max(initial=0))
        nonneg = nonneg and int(c.min(initial=0)) >= 0
        if kmax and kmax * (cmax + 1) + cmax >= 2 ** 62:  # the mixed key would overflow: densify first
            key, k = _rank(key, kmax, nonneg)
            kmax = max(k - 1, 0)
        key = key * (cmax + 1) + c
        kmax = kmax * (cmax + 1) + cmax
    return _rank(key, kmax, nonneg)


def _distinct(group: np.ndarray, n_groups: int, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Number of distinct ``values`` per group (optionally only over rows in ``mask``)."""
    if mask is not None:
        group, values = group[mask], values[mask]
    if len(group) == 0:
        return np.zeros(n_groups, dtype=np.float64)
    base = int(values.max()) + 1
    if int(values.min()) >= 0 and _dense(n_groups * base, len(group)):
        # mark the (group, value) pairs present in a table over all pairs: no sort
        seen = np.zeros(n_groups * base, dtype=bool)
        seen[group * base + values] = True
        return np.bincount(np.flatnonzero(seen) // base, minlength=n_groups).astype(np.float64)
    hashed = _hash_kernels()
    if hashed is not None and int(values.min()) >= 0 and n_groups * base < 2 ** 62:
        # each (group, value) pair counted once through a hash table (a compiled pass, no sort)
        return hashed[1](np.ascontiguousarray(group * base + values, dtype=np.int64), base, n_groups)
    # sort + "differs from the previous" instead of np.unique: numpy 2's hash-based unique was 3x slower here
    pairs = np.sort(group * base + values)
    first = np.empty(len(pairs), dtype=bool)
    first[0] = True
    np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
    return np.bincount(pairs[first] // base, minlength=n_groups).astype(np.float64)


def _first_ids(key):  # pragma: no cover - compiled by numba
    """``(id of each key's distinct value in order of first appearance, the distinct values in that order)``."""
    n = len(key)
    bits = 1
    while (1 << bits) < 2 * n:  # open addressing: a power of two, at least twice the keys
        bits += 1
    size, shift = 1 << bits, 64 - bits
    mask = size - 1
    slot_key = np.empty(size, dtype=np.int64)
    slot_id = np.full(size, -1, dtype=np.int64)
    ids = np.empty(n, dtype=np.int64)
    uniq = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        v = key[i]
        h = np.int64((np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))
        while slot_id[h] >= 0 and slot_key[h] != v:
            h = (h + 1) & mask
        if slot_id[h] < 0:
            slot_key[h] = v
            slot_id[h] = k
            uniq[k] = v
            k += 1
        ids[i] = slot_id[h]
    return ids, uniq[:k]


def _pair_counts(pairs, base, n_groups):  # pragma: no cover - compiled by numba
    """Distinct ``pairs`` (``group * base + value``) per group, float64 ``[n_groups]``."""
    n = len(pairs)
    bits = 1
    while (1 << bits) < 2 * n:  # open addressing: a power of two, at least twice the keys
        bits += 1
    size, shift = 1 << bits, 64 - bits
    mask = size - 1
    slot_key = np.empty(size, dtype=np.int64)
    used = np.zeros(size, dtype=np.bool_)
    out = np.zeros(n_groups, dtype=np.float64)
    for i in range(n):
        v = pairs[i]
        h = np.int64((np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))
        while used[h] and slot_key[h] != v:
            h = (h + 1) & mask
        if not used[h]:
            used[h] = True
            slot_key[h] = v
            out[v // base] += 1.0
    return out


_HASH_KERNELS: list = []


def _hash_kernels():
    """``(_first_ids, _pair_counts)`` compiled, or None without numba (the callers sort instead)."""
    if not _HASH_KERNELS:
        _HASH_KERNELS.append(numba_kernels(_first_ids, _pair_counts))
    return _HASH_KERNELS[0]


_PORT_TABLES: dict[bytes, np.ndarray] = {}


def _port_lut(values: np.ndarray) -> np.ndarray:
    """65537-entry membership table for a port set (index port + 1; -1 = unknown port), cached."""
    key = np.asarray(values, dtype=np.int64).tobytes()
    lut = _PORT_TABLES.get(key)
    if lut is None:
        lut = np.zeros(65537, dtype=bool)
        v = np.asarray(values, dtype=np.int64)
        lut[v[(v >= -1) & (v <= 65535)] + 1] = True
        _PORT_TABLES[key] = lut
    return lut


def _isin(a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Port membership through a lookup table."""
    return _port_lut(values)[np.clip(a, -1, 65535) + 1]


def node_activations(edge_act: np.ndarray, edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Per-node activation ``[N, K]``: max over the node's incident edges (as source or destination), 0
    for a node without edges. The max is exact, so neither order nor batching changes the result.

    float32 activations go through a compiled loop (numba) when it is importable: on 136k LUFlow edges
    ~3x less CPU than torch's ``scatter_reduce`` (amax), which needs the activations twice and an
    expanded index. The loop applies torch's rule (``src`` if it is NaN, else ``max(self, src)`` with
    ``self`` kept on ties), so the two give the same bits. Otherwise torch's ``scatter_reduce`` when
    torch is importable (32 ms vs 255 ms for NumPy's ``maximum.at``/``maximum.reduceat`` on 65,536
    LUFlow edges), else NumPy.
    """
    K = edge_act.shape[1]
    E = edge_act.shape[0]
    ei = np.asarray(edge_index, dtype=np.int64).reshape(2, -1) if E else np.zeros((2, 0), np.int64)
    if E and num_nodes and edge_act.dtype == np.float32 and _node_kernel() is not None:
        if ei.min() < 0 or ei.max() >= num_nodes:
            raise IndexError(f"edge_index holds a node id outside [0, {num_nodes})")
        node = np.zeros((num_nodes, K), dtype=np.float32)
        return _node_kernel()(np.ascontiguousarray(edge_act), np.ascontiguousarray(ei[0]),
                              np.ascontiguousarray(ei[1]), node)
    if E and num_nodes and _torch() is not None:
        torch = _torch()
        if ei.min() < 0 or ei.max() >= num_nodes:
            raise IndexError(f"edge_index holds a node id outside [0, {num_nodes})")
        node_t = torch.zeros((num_nodes, K), dtype=torch.float32)
        src = torch.from_numpy(np.concatenate([edge_act, edge_act]).astype(np.float32, copy=False))
        idx = torch.from_numpy(np.concatenate([ei[0], ei[1]])).view(-1, 1).expand(-1, K)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # intra-op threads cost 10x on a busy 2-core box (as detector/runtime.py)
        try:
            node_t.scatter_reduce_(0, idx, src, reduce="amax", include_self=True)
        finally:
            torch.set_num_threads(threads)
        return node_t.numpy().astype(edge_act.dtype, copy=False)
    node = np.zeros((num_nodes, K), dtype=edge_act.dtype)
    if E and num_nodes:
        np.maximum.at(node, ei[0], edge_act)
        np.maximum.at(node, ei[1], edge_act)
    return node


def _node_max(edge_act, src, dst, node):  # pragma: no cover - compiled by numba
    """``node[n] = max(node[n], edge_act[e])`` over the edges' sources, then their destinations, with
    torch's amax rule: a NaN ``src`` wins, else the larger, ``self`` on ties (so +0 stays over -0)."""
    E, K = edge_act.shape
    for ends in (src, dst):
        for e in range(E):
            n = ends[e]
            for k in range(K):
                v = edge_act[e, k]
                cur = node[n, k]
                if v != v or cur < v:
                    node[n, k] = v
    return node


_NODE_KERNEL: list = []


def _node_kernel():
    """:func:`_node_max` compiled, or None without numba; compiled on first use."""
    if not _NODE_KERNEL:
        _NODE_KERNEL.append(numba_kernels(_node_max))
    return _NODE_KERNEL[0] and _NODE_KERNEL[0][0]


def numba_kernels(*fns) -> tuple | None:
    """The functions compiled by :func:`ingest.jit.jit`, or None without numba (the callers then take
    their NumPy/torch paths, not the ~100x slower Python loops). Compiled on first use, not at module
    import: loading numba costs ~0.4 s that a caller without features never pays."""
    if importlib.util.find_spec("numba") is None:  # pragma: no cover - a platform without a numba wheel
        return None
    return tuple(jit(f) for f in fns)


_TORCH: list = []


def _torch():
    """torch if importable (it is wherever graphs are built), else None; imported once, on first use."""
    if not _TORCH:
        try:
            import torch
        except ImportError:  # pragma: no cover - knowledge features without the model stack
            torch = None
        _TORCH.append(torch)
    return _TORCH[0]

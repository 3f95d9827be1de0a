"""The knowledge features of one window (:class:`KnowledgeBlock`: edge and node rows, top technique per
flow) and the stacking of several windows' blocks (shared rows gathered once).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

TOP_MIN_SCORE = 0.35  # context-only evidence stays <= 0.3; below this, a flow has no top technique (None)


class _Rows:
    """Distinct block rows shared by the windows of one ``transform_many`` call, and each row's best
    technique (computed once, on first use, for all windows)."""

    def __init__(self, rows: np.ndarray, tech: slice) -> None:
        self.rows = rows
        self.tech = tech
        self._best: tuple[np.ndarray, np.ndarray] | None = None

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        if self._best is None:
            s = self.rows[:, self.tech]
            j = s.argmax(axis=1) if s.shape[1] else np.zeros(len(s), np.int64)
            self._best = (j, s[np.arange(len(s)), j] if s.shape[1] else np.full(len(s), -np.inf, np.float32))
        return self._best


class KnowledgeBlock:
    """Fixed-width named knowledge features of one window.

    ``edge`` float32 [E, K]; ``node`` float32 [N, K], computed on first access (a consumer that only
    uses edge features does not pay for it) and cached. A block from ``transform_many`` keeps its
    edge rows as indices into rows shared by the call (most flows repeat another flow's block) and
    builds ``edge`` on first access; :meth:`top_technique` works on the shared rows directly.
    """

    def __init__(self, edge: np.ndarray | Callable[[], np.ndarray] | None,
                 node: np.ndarray | Callable[[], np.ndarray], names: list[str],
                 n_pred: int, n_tech: int, technique_ids: list[str],
                 rows: tuple[_Rows, np.ndarray] | None = None):
        self._edge = edge
        self._rows = rows
        self._node = node
        self._node_span: tuple[Callable, int, int] | None = None  # set by transform_many (see stack_nodes)
        self.names = names
        self.n_pred = n_pred
        self.n_tech = n_tech
        self.technique_ids = technique_ids

    @property
    def edge(self) -> np.ndarray:
        if self._edge is None and self._rows is not None:
            shared, idx = self._rows
            self._edge = shared.rows[idx]
        elif callable(self._edge):
            self._edge = self._edge()
        return self._edge

    @edge.setter
    def edge(self, value: np.ndarray) -> None:
        self._edge, self._rows = value, None

    def edge_row(self, k: int) -> np.ndarray:
        """``edge[k]`` without building ``edge`` (one row of the shared rows when it is not built)."""
        if self._edge is None and self._rows is not None:
            shared, idx = self._rows
            return shared.rows[idx[k]]
        return self.edge[k]

    @property
    def node(self) -> np.ndarray:
        if callable(self._node):
            self._node = self._node()
        return self._node

    def __repr__(self) -> str:
        n = len(self._rows[1]) if self._edge is None and self._rows is not None else self.edge.shape[0]
        return f"KnowledgeBlock(edges={n}, width={len(self.names)})"

    @property
    def tech_slice(self) -> slice:
        return slice(self.n_pred, self.n_pred + self.n_tech)

    def top_technique(self, edge_ids=None, min_score: float = TOP_MIN_SCORE) -> list[str | None]:
        """Highest-scoring technique per edge (None when its score is below ``min_score``)."""
        return self.top_technique_array(edge_ids, min_score).tolist()

    def top_technique_array(self, edge_ids=None, min_score: float = TOP_MIN_SCORE) -> np.ndarray:
        """:meth:`top_technique` as an object array ``[E]`` (no Python loop over the edges)."""
        if self._rows is not None:  # built or not, edge == shared.rows[idx]: one argmax per shared row
            shared, idx = self._rows
            if edge_ids is not None:
                idx = idx[np.asarray(edge_ids, dtype=np.int64)]
            if self.n_tech == 0:
                return np.full(len(idx), None, dtype=object)
            j_all, best_all = shared.best()
            j, best = j_all[idx], best_all[idx]
        else:
            s = self.edge[:, self.tech_slice] if edge_ids is None else \
                self.edge[np.asarray(edge_ids, dtype=np.int64), self.tech_slice]
            if s.shape[1] == 0:
                return np.full(s.shape[0], None, dtype=object)
            j = s.argmax(axis=1)
            best = s[np.arange(s.shape[0]), j]
        names = np.empty(len(self.technique_ids) + 1, dtype=object)  # the last one: None (below min_score)
        names[:-1] = self.technique_ids
        return names[np.where(best >= min_score, j, len(self.technique_ids))]


def stack_edges(blocks, out: np.ndarray | None = None) -> np.ndarray:
    """``np.concatenate([b.edge for b in blocks])`` (float32); one gather of the shared rows when the
    blocks come from one ``transform_many`` call, without building each window's block first.
    ``out``: a float32 ``[sum E, K]`` array (a view into a wider one is fine) written in place."""
    blocks = list(blocks)
    shared = shared_edge_rows(blocks)
    if shared is not None:
        return _gather(*shared, out)
    return _put(np.concatenate([np.asarray(b.edge, dtype=np.float32) for b in blocks]), out)


def shared_edge_rows(blocks) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows [R, K], index [sum E] int64)`` when the blocks' edges index rows shared by one
    ``transform_many`` call (``rows[index]`` is then their stacked edge block), else None."""
    blocks = list(blocks)
    refs = [b._rows if b._edge is None else None for b in blocks]
    if not refs or any(r is None or r[0] is not refs[0][0] for r in refs):
        return None
    return refs[0][0].rows, np.concatenate([np.asarray(r[1], dtype=np.int64) for r in refs])


def stack_nodes(blocks, out: np.ndarray | None = None) -> np.ndarray:
    """``np.concatenate([b.node for b in blocks])`` (float32); one gather when the blocks are
    consecutive windows of one ``transform_many`` call. ``out`` as in :func:`stack_edges`."""
    blocks = list(blocks)
    spans = [b._node_span if callable(b._node) else None for b in blocks]
    if blocks and all(s is not None and s[0] is spans[0][0] for s in spans) and \
            all(a[2] == b[1] for a, b in zip(spans, spans[1:])):
        nrows, nidx = spans[0][0]()
        lo, hi = spans[0][1], spans[-1][2]
        return _put(nrows[lo:hi], out) if nidx is None else _gather(nrows, nidx[lo:hi], out)
    return _put(np.concatenate([np.asarray(b.node, dtype=np.float32) for b in blocks]), out)


def _csr_ptr(counts) -> np.ndarray:
    """``[0, *cumsum(counts)]`` as int64 (CSR row pointers)."""
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def _gather(rows: np.ndarray, idx: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return rows[idx]
    if out.shape != (len(idx), rows.shape[1]):
        raise ValueError(f"out has shape {out.shape}, the rows need {(len(idx), rows.shape[1])}")
    if out.flags.c_contiguous:
        np.take(rows, idx, axis=0, out=out, mode="clip")  # "clip" writes straight into out (no buffer)
        return out
    # a view into a wider array (the model inputs' last columns): np.take would gather into a buffer of the
    # whole block and copy it over; a block of rows at a time through a small one stays in cache
    buf = np.empty((min(len(idx), _GATHER_ROWS), rows.shape[1]), dtype=out.dtype)
    for lo in range(0, len(idx), _GATHER_ROWS):
        hi = min(lo + _GATHER_ROWS, len(idx))
        np.take(rows, idx[lo:hi], axis=0, out=buf[:hi - lo], mode="clip")
        out[lo:hi] = buf[:hi - lo]
    return out


_GATHER_ROWS = 2048  # rows per step of _gather into a strided out (2048 x 231 float32: ~1.9 MB)


def _put(block: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return block.copy() if not block.flags.owndata else block
    if out.shape != block.shape:
        raise ValueError(f"out has shape {out.shape}, the block {block.shape}")
    out[...] = block
    return out

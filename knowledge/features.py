"""Knowledge-augmented features for a window: predicate activations + technique and tactic scores.

For a window table (FLOW_SCHEMA, edge i = row i) the featurizer computes

* ``a[e, p]``  predicate activations in [0, 1] (:mod:`knowledge.predicates`);
* ``b[e, t] = 1 - prod_p (1 - w[p, t]) ** a[e, p]`` over behaviour predicates: a noisy-OR over the
  predicates linked to technique t with link confidence ``w``. One fully active predicate with
  confidence 0.8 gives 0.8; partial activations raise the exponent smoothly. Computed as one matrix
  product ``1 - exp(a @ log(1 - w))``. ``c[e, t]`` is the same noisy-OR over *context* predicates
  (single-flow facts such as the port or direction, common in benign traffic); the technique score is
  ``s = 1 - (1 - b) * (1 - context_factor * c)``, so context alone never exceeds ``context_factor``
  (0.3, below the top-technique floor) and only sharpens behaviour evidence;
* signature gate: a technique is defined mostly by its strongest behaviour links (its *signature*:
  non-context links with confidence >= ``SIGNATURE_SHARE`` x its strongest non-context link). The score is multiplied by
  ``GATE_FLOOR + (1 - GATE_FLOOR) * max(a over the signature)``, so many weak, generic links cannot
  outscore a technique whose defining behaviour is actually present (noisy-OR alone saturates);
* ``tac[e, c] = max_{t in tactic c} s[e, t]``  tactic scores.

Node rows use the node's predicate activations (max over incident edges) through the same maps.
Column names: ``pred:<name>``, ``tech:<T-id>``, ``tactic:<TA-id>``.
"""
from __future__ import annotations

import json
from typing import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as _sparse  # comes with scikit-learn, a pinned dependency

from knowledge.predicates import PREDICATES, compute_predicates_many, node_activations
from knowledge.predicates.kernels import numba_kernels

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "default"
SIGNATURE_SHARE = 0.8
GATE_FLOOR = 0.5
TOP_MIN_SCORE = 0.35  # context-only evidence stays <= 0.3; below this, a flow has no top technique (None)


# ---------------------------------------------------------------- compiled propagation (numba)
#
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
        if self._edge is None and self._rows is not None:
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
    np.take(rows, idx, axis=0, out=out, mode="clip")  # "clip" writes straight into out (no buffer)
    return out


def _put(block: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return block.copy() if not block.flags.owndata else block
    out[...] = block
    return out


class KnowledgeFeaturizer:
    """Turns windows into knowledge features using a built artifact (see :mod:`knowledge.artifact`)."""

    # Up to this many rows the signature and tactic maxima are one fancy index each ([R, T, k]
    # temporaries); above, a loop over distinct sets on transposed rows (the temporaries cost more
    # than the calls). Both are exact maxima, so the two give the same block. (NumPy path only.)
    SMALL_ROWS = 2048
    # Propagate with the compiled kernels when numba is importable (same blocks bit for bit as the
    # NumPy path; ~3x less CPU on LUFlow groups); False: always NumPy.
    COMPILED = True

    def __init__(self, spec: dict, manifest: dict | None = None):
        self.spec = spec
        self.manifest = manifest or {}
        self.version = f"{spec.get('artifact_version', '?')}/{spec.get('vocab_version', '?')}"
        self.hash = self.manifest.get("hash", "")
        # Predicates the artifact knows and this code computes (a newer vocabulary never breaks loading).
        self.predicates = [p for p in spec["predicates"] if p in PREDICATES]
        self.techniques = spec["techniques"]
        self.tech_ids = [t["id"] for t in self.techniques]
        self.tactics = spec["tactics"]
        ctx = set(spec.get("context_predicates", []))
        self.context_factor = float(spec.get("context_factor", 1.0))
        P, T = len(self.predicates), len(self.tech_ids)
        w = np.zeros((P, T), dtype=np.float64)
        pidx = {p: i for i, p in enumerate(self.predicates)}
        for j, tid in enumerate(self.tech_ids):
            for p, c in spec["weights"].get(tid, {}).items():
                if p in pidx:
                    w[pidx[p], j] = c
        is_ctx = np.array([p in ctx for p in self.predicates], dtype=bool)
        # Effective weight of each link (what explain() reports): context links scaled by the factor.
        self.weight = w * np.where(is_ctx, self.context_factor, 1.0)[:, None]
        log_keep = np.log1p(-np.clip(w, 0.0, 0.99))
        # [P, 2T], <= 0: behaviour links in the first T columns, context links in the last T (one matmul).
        self.log_keep = np.ascontiguousarray(np.concatenate(
            [np.where(is_ctx[:, None], 0.0, log_keep), np.where(is_ctx[:, None], log_keep, 0.0)], axis=1),
            dtype=np.float32)
        # Signature = behaviour (non-context) links; a port or direction fact cannot define a technique.
        wb = np.where(is_ctx[:, None], 0.0, w)
        top = wb.max(axis=0, keepdims=True) if P else np.zeros((1, T))
        self.signature = ((wb >= SIGNATURE_SHARE * top) & (wb > 0)).astype(np.float32)  # [P, T] 0/1
        # Signature members per technique, padded with P (an all-zero row of the transposed activations).
        k_sig = max(1, int(self.signature.sum(axis=0).max(initial=0)))
        self._sig_idx = np.full((T, k_sig), P, dtype=np.int64)
        for j in range(T):
            ps = np.flatnonzero(self.signature[:, j])
            self._sig_idx[j, : len(ps)] = ps
        # Techniques share signatures (165 techniques, 58 distinct sets in the bundled artifact): the max
        # is taken once per distinct set, then copied to its techniques.
        sets, self._sig_of = np.unique(self._sig_idx, axis=0, return_inverse=True)
        self._sig_of = self._sig_of.ravel()
        self._sig_sets = [np.unique(r[r < P]) for r in sets]
        tac_ids = [t["id"] for t in self.tactics]
        self.tactic_members = [np.array([j for j, t in enumerate(self.techniques) if tid in t["tactics"]], dtype=np.int64)
                               for tid in tac_ids]
        # members padded with T (an all-zero column, which is also every tactic's 0 floor)
        self._tac_idx = np.full((len(tac_ids), max([0] + [len(m) for m in self.tactic_members]) + 1), T, np.int64)
        for c, m in enumerate(self.tactic_members):
            self._tac_idx[c, : len(m)] = m
        self.names = ([f"pred:{p}" for p in self.predicates] + [f"tech:{t}" for t in self.tech_ids]
                      + [f"tactic:{t}" for t in tac_ids])
        self._tech_by_id = {t["id"]: t for t in self.techniques}
        # The compiled path's tables: log_keep by predicate (non-zero links only), signature sets and
        # tactic members as CSR, the float32 constants of the element-wise steps.
        nz_p, nz_j = np.nonzero(self.log_keep)
        self._lk_ptr = _csr_ptr(np.bincount(nz_p, minlength=P))
        self._lk_col, self._lk_val = nz_j.astype(np.int64), np.ascontiguousarray(self.log_keep[nz_p, nz_j])
        self._sig_ptr = _csr_ptr([len(m) for m in self._sig_sets])
        self._sig_members = np.concatenate([np.zeros(0, np.int64), *self._sig_sets]).astype(np.int64)
        self._sig_of64 = np.asarray(self._sig_of, dtype=np.int64)
        self._tac_ptr = _csr_ptr([len(m) for m in self.tactic_members])
        self._tac_members = np.concatenate([np.zeros(0, np.int64), *self.tactic_members]).astype(np.int64)
        # what NumPy computes for `kc * cf`, `+ (1 - cf)`, `sig * (1 - floor)`, `+ floor` on float32 arrays
        self._consts = (np.float32(self.context_factor), np.float32(1.0 - self.context_factor),
                        np.float32(1.0 - GATE_FLOOR), np.float32(GATE_FLOOR))

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, artifact_dir: str | Path) -> "KnowledgeFeaturizer":
        d = Path(artifact_dir)
        spec = json.loads((d / "features.json").read_text())
        manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else {}
        return cls(spec, manifest)

    @classmethod
    def default(cls) -> "KnowledgeFeaturizer":
        """The artifact bundled with the package (built with the lexicon extractor)."""
        return cls.load(DEFAULT_ARTIFACT)

    @property
    def width(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------------ features
    def _log_keep_of(self, act: np.ndarray) -> np.ndarray:
        """``act @ log_keep`` [R, 2T] as a sparse product (scipy CSR, ~7 of 52 activations are non-zero).

        Each row is summed alone, over its non-zero activations in column order, so a row's result
        does not depend on which other rows share the call: a window gives the same block alone or
        batched with others. A dense BLAS product does not promise that (measured with OpenBLAS: rows
        differ in the last bit depending on the number of rows). Measured on 65,536 LUFlow rows:
        0.30 s CPU vs 0.24 s for the dense product.
        """
        nz = act != 0
        rows, cols = np.nonzero(nz)  # row-major: column indices ascend within each row (canonical CSR)
        indptr = np.zeros(act.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=act.shape[0]), out=indptr[1:])
        m = _sparse.csr_matrix((act[rows, cols], cols, indptr), shape=act.shape)
        out = m @ self.log_keep
        return np.ascontiguousarray(out, dtype=np.float32)

    def _propagate(self, act: np.ndarray) -> np.ndarray:
        """[R, P] activations -> [R, K] block (activations | technique scores | tactic scores)."""
        rows, idx = self._propagate_compact(act)
        return rows if idx is None else rows[idx]

    def _propagate_compact(self, act: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(rows, idx)`` with block = ``rows[idx]`` (``idx`` None: ``rows`` is the block itself).

        Rows with the same activations get the same block, so each distinct row is computed once
        (on LUFlow 65,536 flows held ~12,000 distinct rows). Every step is row by row (sparse
        product, element-wise math, exact max), so a row's block never depends on the others.
        """
        R = act.shape[0]
        kernels = self._compiled(act)
        if kernels is not None and R:
            # exact dedup in one compiled pass (a hash table over the rows' bits, rows compared word by word)
            words = act.view(np.uint64) if act.shape[1] % 2 == 0 else act.view(np.uint32)
            first, inv = kernels[0](words, self._row_mult(words.shape[1]))
            if len(first) < 0.8 * R:
                return self._propagate_rows(act[first]), inv
            return self._propagate_rows(act), None
        if R > 64:
            # rows hashed to 64 bits, then checked, so a (never seen) collision only costs the dedup
            act = np.ascontiguousarray(act, dtype=np.float32)
            # each row's bytes as 64-bit words, times odd random multipliers, summed (wrapping): a hash
            words = act.view(np.uint64) if act.shape[1] % 2 == 0 else act.view(np.uint32).astype(np.uint64)
            key = words @ self._row_mult(words.shape[1])
            _, first, inv = np.unique(key, return_index=True, return_inverse=True)
            inv = inv.ravel()
            if len(first) < 0.8 * R:
                uniq = act[first]
                if np.array_equal(uniq[inv], act):
                    return self._propagate_rows(uniq), inv
        return self._propagate_rows(act), None

    def _row_mult(self, P: int) -> np.ndarray:
        if getattr(self, "_mult", None) is None or len(self._mult) != P:
            self._mult = np.random.default_rng(12345).integers(1, 2 ** 63, size=P, dtype=np.uint64) | np.uint64(1)
        return self._mult

    def _compiled(self, act: np.ndarray):
        """The compiled kernels when they apply to ``act`` (C-contiguous float32 with techniques), else None."""
        if not self.COMPILED or act.dtype != np.float32 or not act.flags.c_contiguous or not self.tech_ids:
            return None
        return _kernels()

    def _propagate_rows(self, act: np.ndarray) -> np.ndarray:
        """The block of every row of ``act`` (see :meth:`_propagate`): compiled when possible, else NumPy."""
        kernels = self._compiled(act)
        if kernels is not None and act.shape[0]:
            T = len(self.tech_ids)
            indptr, cols, vals, ok = kernels[1](act, self._lk_ptr, self._lk_col, self._lk_val, 2 * T)
            if ok:  # else a non-finite activation: NumPy's product gives NaN where the sparse one would not
                ekeep = vals[:indptr[-1]]
                np.exp(ekeep, out=ekeep)
                out = np.empty((act.shape[0], self.width), dtype=np.float32)
                return kernels[2](act, indptr, cols, ekeep, T, *self._consts, self._sig_ptr, self._sig_members,
                                  self._sig_of64, self._tac_ptr, self._tac_members, out)
        return self._propagate_rows_numpy(act)

    def _propagate_rows_numpy(self, act: np.ndarray) -> np.ndarray:
        """:meth:`_propagate_rows` with NumPy/scipy (the reference the compiled path is tested against)."""
        R, P, T = act.shape[0], len(self.predicates), len(self.tech_ids)
        C = len(self.tactics)
        out = np.empty((R, P + T + C), dtype=np.float32)
        out[:, :P] = act
        tech = out[:, P:P + T]
        if T:
            keep = self._log_keep_of(act)              # [R, 2T] = log prod (1-w)^a, behaviour | context
            np.exp(keep, out=keep)
            kb, kc = keep[:, :T], keep[:, T:]
            # s = 1 - keep_b * (1 - cf * (1 - keep_c))  =  1 - keep_b * ((1 - cf) + cf * keep_c)
            np.multiply(kc, self.context_factor, out=kc)
            np.add(kc, 1.0 - self.context_factor, out=kc)
            np.multiply(kb, kc, out=tech)
            np.subtract(1.0, tech, out=tech)
            # signature gate: max activation over each technique's signature predicates. Gathered as
            # whole rows of the transposed activations (a [R, T, k] fancy index cost 4x more).
            if R <= self.SMALL_ROWS:  # one fancy index: fewer calls, for a window or two of rows
                act_pad = np.zeros((R, P + 1), dtype=np.float32)  # column P = 0 pads short signatures
                act_pad[:, :P] = act
                sig = act_pad[:, self._sig_idx].max(axis=2)
                np.multiply(sig, 1.0 - GATE_FLOOR, out=sig)
                np.add(sig, GATE_FLOOR, out=sig)
                np.multiply(tech, sig, out=tech)
            else:  # whole rows of the transposed activations, once per distinct signature set
                act_t = np.ascontiguousarray(act.T)
                per_set = np.zeros((len(self._sig_sets), R), dtype=np.float32)  # an empty signature gates at 0
                for k, members in enumerate(self._sig_sets):
                    if len(members):
                        np.max(act_t[members], axis=0, out=per_set[k])
                np.multiply(per_set, 1.0 - GATE_FLOOR, out=per_set)
                np.add(per_set, GATE_FLOOR, out=per_set)
                np.multiply(tech, per_set[self._sig_of].T, out=tech)
        if C:
            # tactic = max(0, its techniques' scores)
            if R <= self.SMALL_ROWS:
                tech_pad = np.zeros((R, T + 1), dtype=np.float32)  # column T = 0: the 0 floor
                tech_pad[:, :T] = tech
                out[:, P + T:] = tech_pad[:, self._tac_idx].max(axis=2)
                return out
            tech_t = np.ascontiguousarray(tech.T)
            tac = np.zeros((C, R), dtype=np.float32)
            for c, m in enumerate(self.tactic_members):
                if len(m):
                    np.max(tech_t[m], axis=0, out=tac[c])
            np.maximum(tac, 0.0, out=tac)
            out[:, P + T:] = tac.T
        return out

    def transform(self, table: pa.Table | pa.RecordBatch, edge_index: np.ndarray | None = None,
                  num_nodes: int | None = None) -> KnowledgeBlock:
        """Knowledge features of one window; ``edge_index`` [2, E] (src, dst node ids) for node rows."""
        return self.transform_many([table], None if edge_index is None else [edge_index],
                                   None if num_nodes is None else [num_nodes])[0]

    def transform_many(self, tables, edge_indices=None, num_nodes=None) -> list[KnowledgeBlock]:
        """Knowledge features of several windows in one call; block ``i`` equals ``transform(tables[i],
        edge_indices[i], num_nodes[i])`` bit for bit (``tests/knowledge/test_features.py``).

        The predicates run once over the concatenated windows with per-window group keys
        (:func:`~knowledge.predicates.compute_predicates_many`), then one propagation over all rows:
        windows hold tens of flows, and per-call overhead was most of the cost. Node blocks of all
        windows are computed together on the first access to any of them.
        """
        tables = list(tables)
        W = len(tables)
        act, sizes = compute_predicates_many(tables, tuple(self.predicates))
        erows, eidx = self._propagate_compact(act)
        shared = _Rows(erows, slice(len(self.predicates), len(self.predicates) + len(self.tech_ids)))
        if eidx is None:
            eidx = np.arange(len(erows))
        off = np.zeros(W + 1, dtype=np.int64)
        np.cumsum(sizes, out=off[1:])
        eis = list(edge_indices) if edge_indices is not None else [None] * W
        nns = [int(n or 0) for n in num_nodes] if num_nodes is not None else [0] * W
        if len(eis) != W or len(nns) != W:
            raise ValueError(f"{W} tables but {len(eis)} edge_index arrays and {len(nns)} node counts")
        has = [eis[i] is not None and nns[i] > 0 for i in range(W)]
        noff = np.zeros(W + 1, dtype=np.int64)
        np.cumsum([n if h else 0 for n, h in zip(nns, has)], out=noff[1:])
        state: dict[str, tuple] = {}

        def all_nodes() -> tuple:
            # one node-activation pass over every window (node ids shifted to a global numbering)
            if "node" not in state:
                live = [i for i in range(W) if has[i]]
                parts = [np.asarray(eis[i], dtype=np.int64).reshape(2, -1) for i in live]
                ei = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), np.int64)
                rows_per = np.where(has, off[1:] - off[:-1], 0)
                if ei.shape[1] != int(rows_per.sum()) or any(p.shape[1] != rows_per[i] for p, i in zip(parts, live)):
                    raise ValueError(f"edge_index has {ei.shape[1]} edges, the windows have {int(rows_per.sum())} rows")
                # every node id must stay inside its own window's [0, num_nodes)
                wid = np.repeat(np.arange(W), rows_per)
                lo, hi = noff[wid], noff[wid + 1]
                ei += lo
                if ((ei < lo) | (ei >= hi)).any():
                    raise IndexError("edge_index holds a node id outside [0, num_nodes)")
                # every window has a graph (the usual case): the activations as they are, no copy
                edge_act = act if len(live) == W else act[np.flatnonzero(np.repeat(has, off[1:] - off[:-1]))]
                state["node"] = self._propagate_compact(node_activations(edge_act, ei, int(noff[-1])))
            return state["node"]

        def node_block(a: int, b: int) -> np.ndarray:
            nrows, nidx = all_nodes()
            return nrows[a:b].copy() if nidx is None else nrows[nidx[a:b]]

        out = []
        for i in range(W):
            if has[i]:
                node: np.ndarray | Callable[[], np.ndarray] = (
                    lambda a=int(noff[i]), b=int(noff[i + 1]): node_block(a, b))
            else:
                node = np.zeros((nns[i], self.width), dtype=np.float32)
            kb = KnowledgeBlock(None, node, self.names, len(self.predicates), len(self.tech_ids),
                                self.tech_ids, rows=(shared, eidx[off[i]:off[i + 1]]))
            if has[i]:
                kb._node_span = (all_nodes, int(noff[i]), int(noff[i + 1]))
            out.append(kb)
        return out

    # ------------------------------------------------------------------ explanations
    def technique_info(self, tid: str) -> dict | None:
        return self._tech_by_id.get(tid)

    def explain(self, kb: KnowledgeBlock, edge: int | None = None, node: int | None = None, k: int = 5,
                min_score: float = 0.05) -> dict:
        """Top techniques for one edge or node, with the predicates that fired and references."""
        if (edge is None) == (node is None):
            raise ValueError("explain() needs exactly one of edge=... or node=...")
        row = kb.edge[edge] if edge is not None else kb.node[node]
        act = row[: kb.n_pred]
        tech = row[kb.tech_slice]
        order = np.argsort(-tech, kind="stable")[:k]
        out = []
        for j in order.tolist():
            if tech[j] < min_score:
                break
            t = self.techniques[j]
            contrib = act * self.weight[:, j]
            preds = [{"name": self.predicates[p], "value": round(float(act[p]), 3),
                      "confidence": round(float(self.weight[p, j]), 3)}
                     for p in np.argsort(-contrib, kind="stable").tolist() if contrib[p] > 0]
            out.append({
                "id": t["id"], "name": t["name"], "score": round(float(tech[j]), 4), "predicates": preds,
                "tactics": t["tactics"],
                "refs": {"attack": t["url"], "d3fend": t["d3fend"][:5], "mitigations": t["mitigations"][:5]},
            })
        fired = [{"name": self.predicates[p], "value": round(float(act[p]), 3)}
                 for p in np.argsort(-act, kind="stable").tolist() if act[p] > 0]
        return {"edge": edge, "node": node, "techniques": out, "predicates": fired, "artifact": self.hash[:12]}

"""The knowledge featurizer: predicate activations propagated through the artifact's links to technique
and tactic scores (noisy-OR, context factor, signature gate; the maths is in :mod:`knowledge.features`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as _sparse  # comes with scikit-learn, a pinned dependency

from knowledge.features.block import KnowledgeBlock, _csr_ptr, _Rows
from knowledge.features.kernels import _kernels
from knowledge.predicates import PREDICATES, compute_predicates_many, node_activations

DEFAULT_ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "default"
SIGNATURE_SHARE = 0.8
GATE_FLOOR = 0.5


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
    def load(cls, artifact_dir: str | Path) -> KnowledgeFeaturizer:
        d = Path(artifact_dir)
        spec = json.loads((d / "features.json").read_text())
        manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else {}
        return cls(spec, manifest)

    @classmethod
    def default(cls) -> KnowledgeFeaturizer:
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
                node: np.ndarray | Callable[[], np.ndarray] = partial(node_block, int(noff[i]), int(noff[i + 1]))
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
        row = kb.edge_row(edge) if edge is not None else kb.node[node]
        act = row[: kb.n_pred]
        tech = row[kb.tech_slice]
        js = []
        for j in np.argsort(-tech, kind="stable")[:k].tolist():
            if tech[j] < min_score:
                break
            js.append(j)
        w = self.weight.T[js]  # [n, P] float64: the links of the listed techniques
        # each technique's predicate contributions act * w, and the activations themselves last
        ranked = _positive_desc(np.vstack([act * w, act[None, :].astype(np.float64)]))
        act_l, w_l = act.tolist(), w.tolist()
        out = []
        for i, j in enumerate(js):
            t = self.techniques[j]
            preds = [{"name": self.predicates[p], "value": round(act_l[p], 3), "confidence": round(w_l[i][p], 3)}
                     for p in ranked[i]]
            out.append({
                "id": t["id"], "name": t["name"], "score": round(float(tech[j]), 4), "predicates": preds,
                "tactics": t["tactics"],
                "refs": {"attack": t["url"], "d3fend": t["d3fend"][:5], "mitigations": t["mitigations"][:5]},
            })
        fired = [{"name": self.predicates[p], "value": round(act_l[p], 3)} for p in ranked[-1]]
        return {"edge": edge, "node": node, "techniques": out, "predicates": fired, "artifact": self.hash[:12]}


def _positive_desc(m: np.ndarray) -> list[list[int]]:
    """Per row of ``m``: the columns with a value above 0, largest first, ties in column order (the ``> 0``
    entries of the row's ``np.argsort(-row, kind="stable")``), all rows sorted in one call."""
    r, c = np.nonzero(m > 0)
    o = np.lexsort((c, -m[r, c], r))
    ends = np.cumsum(np.bincount(r, minlength=len(m))).tolist()
    c = c[o].tolist()
    return [c[a:b] for a, b in zip([0] + ends[:-1], ends)]

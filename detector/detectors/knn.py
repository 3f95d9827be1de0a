"""k-nearest-neighbour detector: the distance to the k-th nearest benign embedding in a bank (all, or a
k-center greedy cover of the fitting data), on standardised input.
"""
from __future__ import annotations

import numpy as np
import torch

from detector import knn_kernel
from detector.detectors.base import _Base, _in_row_ranges
from detector.tensors import FactoredRows


class KNNDetector(_Base):
    """Mean Euclidean distance to the ``k`` nearest rows of a benign memory bank (standardised space).

    .. math::
        s(x) = \\frac{1}{k} \\sum_{j=1}^{k} \\lVert x - b_{(j)}(x) \\rVert_2,
        \\quad b_{(j)}(x) = j\\text{-th nearest bank row}

    The bank holds at most ``max_bank`` of the fitting rows:

    * ``bank="coreset"`` (default): the greedy k-center coreset (PatchCore, Roth et al. 2022) — start
      from a seeded random row, then repeatedly add the row farthest from the bank so far. The bank
      covers the benign embedding space, rare benign modes included, with a radius as small as a greedy
      choice of ``max_bank`` rows allows; a query costs ``max_bank`` distances, not one per fitting row.
    * ``bank="random"``: a seeded uniform subsample (the exact kNN of the fitting rows when
      ``max_bank`` >= their number).

    Training scores are leave-one-out (a bank row is not its own neighbour), so ``threshold_`` is not
    optimistic. Distances come from one matrix product per block of rows (``|x|^2 + |b|^2 - 2 x.b``,
    float32) and a compiled pass that keeps the ``k`` smallest of each row
    (:func:`detector.knn_kernel.kmean`); scores of a row agree whatever rows share the call up to float
    rounding of the product.
    """

    name = "knn"
    BANKS = ("coreset", "random")
    # Rows per matrix product: the block's distance matrix (2048 x 512 float32 = 4 MB) stays in L3.
    SCORE_BLOCK = 2048
    # Threads for large inputs (contiguous row ranges; the scores do not depend on the count).
    SCORE_THREADS = 2

    def __init__(self, k: int = 5, max_bank: int = 512, bank: str = "coreset", contamination: float = 0.01,
                 random_state: int = 0) -> None:
        super().__init__(contamination, random_state, k=(k, 1), max_bank=(max_bank, 2))
        if bank not in self.BANKS:
            raise ValueError(f"bank must be one of {self.BANKS}, got {bank!r}")
        self.bank = bank

    def fit(self, X: np.ndarray) -> KNNDetector:
        Z = np.ascontiguousarray(self._scale_fit(X), dtype=np.float32)
        rng = np.random.default_rng(self.random_state)
        if len(Z) <= self.max_bank:
            idx = np.arange(len(Z))
        elif self.bank == "coreset":
            idx = kcenter_greedy(Z, self.max_bank, int(rng.integers(len(Z))))
        else:
            idx = np.sort(rng.choice(len(Z), self.max_bank, replace=False))
        self.bank_ = Z[idx]
        self.bank_index_ = idx  # rows of the fitting data kept in the bank
        # a bank of one row (every fitting row a copy of it) still answers queries with k = 1
        self.k_ = max(1, min(self.k, len(idx) - 1))
        self.__dict__.pop("_bank_cache", None)
        self_col = np.full(len(Z), -1, dtype=np.int64)
        self_col[idx] = np.arange(len(idx))
        self._finish_fit(self._knn_mean(Z, self_col))  # leave-one-out: a bank row skips itself
        return self

    def decision_function(self, X: np.ndarray | FactoredRows) -> np.ndarray:
        """Scores of the rows of ``X``; a :class:`~detector.tensors.FactoredRows` is searched block by
        block (the shared rows' partial products once per shared row), with the same scores up to
        float rounding of the product."""
        self._check_fitted()
        if not isinstance(X, FactoredRows):
            X = FactoredRows([(self._checked(X), None)])  # a plain matrix: one per-row block
        elif X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"X has shape {X.shape}, the detector was fitted on {self.mean_.shape[0]} features")
        return self._search(X) if len(X) else np.zeros(0)

    def _search(self, X: FactoredRows) -> np.ndarray:
        """Mean distance of each row of ``X`` (raw input) to its ``k_`` nearest bank rows, standardised
        block by block (the arithmetic of :meth:`_scale`, without input-sized temporaries: a block stays in
        cache from scaling to its distances). With ``x = [x_g ‖ x_d]`` (gathered and direct column blocks,
        standardised) ``|x - b|^2 = |x|^2 + |b|^2 - 2 x_d.b_d - 2 sum_g x_g.b_g``: the direct part is one
        matrix product per block of rows; each gathered block's product ``-2 A_g.b_g`` (and ``|A_g|^2``)
        is computed once per row of ``A_g`` — once per endpoint, not once per flow — and added per row
        inside the compiled pass."""
        bank, bank_sq = self._bank()
        n, B, k, m = len(X), self.SCORE_BLOCK, self.k_, bank.shape[0]
        direct, P, qn, gi, col = [], [], [], [], 0
        for a, idx in X.blocks:
            cols = np.arange(col, col + a.shape[1])
            col += a.shape[1]
            if idx is None:
                direct.append((a, cols))
                continue
            za = (a - self.mean_[cols]) / self.scale_[cols]
            gi.append(idx + sum(len(p) for p in P))  # rows of the stacked partial products
            P.append(torch.mm(torch.from_numpy(za), bank[:, cols].T).mul_(-2.0).numpy())
            qn.append(np.einsum("ij,ij->i", za, za))
        Pm = np.concatenate(P) if P else np.zeros((1, m), np.float32)
        qn = np.concatenate(qn) if qn else np.zeros(1, np.float32)
        gi = np.stack(gi, axis=1) if gi else np.zeros((n, 0), np.int64)  # C order: row slices stay contiguous
        dcols = np.concatenate([c for _, c in direct]) if direct else np.zeros(0, np.int64)
        bank_d = bank[:, dcols].contiguous()
        mean_d, scale_d = self.mean_[dcols], self.scale_[dcols]
        out = np.empty(n)

        def run(lo: int, hi: int) -> None:
            buf = np.empty((min(B, hi - lo), len(dcols)), dtype=np.float32)
            dist = torch.empty((len(buf), m))
            for s in range(lo, hi, B):
                e = min(s + B, hi)
                x, c = buf[:e - s], 0
                for a, cols in direct:  # the block's direct columns side by side, centred on the way in
                    np.subtract(a[s:e], mean_d[c:c + len(cols)], out=x[:, c:c + len(cols)])
                    c += len(cols)
                np.divide(x, scale_d, out=x)
                if len(dcols):
                    d = torch.addmm(bank_sq, torch.from_numpy(x), bank_d.T, alpha=-2.0, out=dist[:e - s]).numpy()
                else:
                    d = dist[:e - s].copy_(bank_sq.expand(e - s, m)).numpy()
                q = np.einsum("ij,ij->i", x, x)  # the gathered blocks' |x_g|^2 are added in the kernel
                knn_kernel.kmean_gathered(d, q, k, Pm, qn, gi[s:e], out[s:e])

        _in_row_ranges(run, n, B, self.SCORE_THREADS)
        return out

    def _knn_mean(self, Z: np.ndarray, self_col: np.ndarray) -> np.ndarray:
        """Leave-one-out training scores: mean distance of each row of the standardised fitting data ``Z``
        to its ``k_`` nearest bank rows; ``self_col[i]`` >= 0 names a bank column row ``i`` may not use
        (itself)."""
        bank, bank_sq = self._bank()
        n, B, k = len(Z), self.SCORE_BLOCK, self.k_
        out = np.empty(n)

        def run(lo: int, hi: int) -> None:
            dist = torch.empty((min(B, hi - lo), bank.shape[0]))
            for s in range(lo, hi, B):
                e = min(s + B, hi)
                x = Z[s:e]
                # |b|^2 - 2 x.b per pair; |x|^2 is added per row in the kernel (torch releases the GIL)
                d = torch.addmm(bank_sq, torch.from_numpy(x), bank.T, alpha=-2.0, out=dist[:e - s]).numpy()
                q = np.einsum("ij,ij->i", x, x)
                knn_kernel.kmean(d, q, k, self_col[s:e], out[s:e])

        _in_row_ranges(run, n, B, self.SCORE_THREADS)
        return out

    def _bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank as a float32 tensor and its squared row norms, built at first use (not pickled)."""
        cached = self.__dict__.get("_bank_cache")
        if cached is None:
            b = torch.from_numpy(np.ascontiguousarray(self.bank_, dtype=np.float32))
            cached = self._bank_cache = (b, (b * b).sum(dim=1))
        return cached

    _SCALARS = {**_Base._SCALARS, "k_": int}
    _ARRAYS = {**_Base._ARRAYS, "bank_": (np.float32, 2), "bank_index_": (np.int64, 1)}

    def _check_state(self) -> None:
        super()._check_state()
        m, d = self.bank_.shape
        if m < 1 or d != self.mean_.shape[0] or self.bank_index_.shape != (m,):
            raise ValueError(f"array 'bank_' {self.bank_.shape} must hold >= 1 row of {self.mean_.shape[0]} "
                             f"features, one 'bank_index_' entry each (got {self.bank_index_.shape})")
        if not 1 <= self.k_ <= m:
            raise ValueError(f"parameter 'k_' must be in 1..{m} (the bank rows), got {self.k_}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_bank_cache", None)
        return state

    def __repr__(self) -> str:
        return (f"KNNDetector(k={self.k}, max_bank={self.max_bank}, bank={self.bank!r}, "
                f"contamination={self.contamination})")


def kcenter_greedy(Z: np.ndarray, m: int, first: int) -> np.ndarray:
    """Indices of ``m`` rows of ``Z`` chosen by greedy k-center (farthest point first), in the order
    chosen, starting at row ``first``. Stops early when every row is already in (or a duplicate of) the
    chosen set. Cost: ``m`` passes over ``Z`` (one matrix-vector product each, ~1 ms for 20,000 x 192).

    Squared distances come in the expanded form ``|a|^2 + |b|^2 - 2 a.b`` (float32), whose rounding
    depends on the BLAS: a copy of a chosen row can be ~1e-7 x the squared norms away (OpenBLAS on AMD:
    4.8e-7). A row counts as a duplicate when its squared distance is at most ``1e-5 * (1 + max |z|^2)``.
    """
    X = np.ascontiguousarray(Z, dtype=np.float32)
    sq = np.einsum("ij,ij->i", X, X)
    tol = 1e-5 * (1.0 + float(sq.max()))
    chosen = [first]
    mind = np.maximum(sq + sq[first] - 2.0 * (X @ X[first]), 0.0)  # squared distance to the chosen set
    mind[first] = -1.0
    for _ in range(m - 1):
        j = int(np.argmax(mind))
        if mind[j] <= tol:
            break
        chosen.append(j)
        np.minimum(mind, np.maximum(sq + sq[j] - 2.0 * (X @ X[j]), 0.0), out=mind)
        mind[j] = -1.0
    return np.asarray(chosen, dtype=np.int64)

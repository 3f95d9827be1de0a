"""Anomaly detectors on embeddings (PyOD-style API: fit / decision_function, higher = more anomalous).

kNN and IsolationForest standardise their input with statistics of the fitting data
(benign embeddings), so the embedding scale does not dominate distances; the fusion
runs one of each (embedding columns, raw columns) and adds their standardised scores.
``threshold_`` after ``fit`` is the ``1 - contamination`` quantile of the
training scores; the bundle replaces it by the threshold calibrated on held-back
benign windows (:mod:`detector.calibration`).

Every fitted detector is numbers only: :meth:`~_Base.state` gives its constructor parameters and scalar
fitted attributes (JSON) and its fitted arrays (``np.savez``), :meth:`~_Base.from_state` rebuilds it and
refuses state that does not describe a detector it can score with (:mod:`detector.bundle` stores it so
in ``detector.json`` + ``detector.npz``; nothing is unpickled).
"""
from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sklearn.ensemble import IsolationForest

from detector import iforest_walk, knn_kernel
from detector.tensors import FactoredRows


def _at_least(name: str, value, minimum: int):
    """``value`` when it is an integer >= ``minimum``; otherwise a ValueError quoting it and the rule."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _state_array(arrays: dict, name: str, dtype, ndim: int) -> np.ndarray:
    """``arrays[name]`` as a C-contiguous ``dtype`` array of ``ndim`` dimensions, all finite; ValueError otherwise."""
    if name not in arrays:
        raise ValueError(f"array {name!r} is missing")
    a = np.asarray(arrays[name])
    if a.ndim != ndim or a.dtype.kind not in ("iu" if np.dtype(dtype).kind in "iu" else "f"):
        raise ValueError(f"array {name!r} must be {ndim}-D {np.dtype(dtype).name}, got {a.dtype} of shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"array {name!r} holds non-finite values")
    return a


def _state_number(params: dict, name: str, kind=float):
    """``params[name]`` as ``kind`` (int: an integer; float: any JSON number); ValueError otherwise."""
    v = params.get(name)
    ok = (int,) if kind is int else (int, float)
    if isinstance(v, bool) or not isinstance(v, ok):
        raise ValueError(f"parameter {name!r} must be {'an integer' if kind is int else 'a number'}, got {v!r}")
    return kind(v)


def _in_row_ranges(run, n: int, block: int, threads: int) -> None:
    """``run(lo, hi)`` over rows ``0:n``: in one call, or — for inputs of at least two blocks — on up to
    ``threads`` threads, one contiguous range of whole blocks each (``run`` releases the GIL in its kernels;
    each thread writes only its own rows, so the results do not depend on the count). The threads run
    torch single-threaded: a block's work is too small to split further."""
    threads = min(threads, n // block)
    if threads <= 1:
        run(0, n)
        return
    per = -(-n // threads // block) * block  # whole blocks per thread
    with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(lambda lo: run(lo, min(lo + per, n)), range(0, n, per)))


class _Base:
    """Shared plumbing: parameter checks, scaling, fitted-state checks, thresholding."""

    name = "base"

    def __init__(self, contamination: float = 0.01, random_state: int = 0, **int_params: tuple[int, int]) -> None:
        """``int_params``: ``name=(value, minimum)`` integer hyper-parameters, validated and stored as attributes."""
        if not 0.0 < contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {contamination!r}")
        self.contamination = contamination
        self.random_state = random_state
        for name, (value, minimum) in int_params.items():
            setattr(self, name, _at_least(name, value, minimum))

    # fitted attributes saved by state(): scalars (JSON) and arrays as (dtype, ndim)
    _SCALARS: dict = {"threshold_": float}
    _ARRAYS: dict = {"mean_": (np.float32, 1), "scale_": (np.float32, 1), "decision_scores_": (np.float64, 1)}

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict:
        """Constructor parameters (scikit-learn style)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(params, arrays)`` of the fitted detector: constructor parameters plus scalar fitted attributes
        (JSON-ready), fitted arrays by name; :meth:`from_state` rebuilds the same detector from them."""
        self._check_fitted()
        params = {**self.get_params(), **{k: kind(getattr(self, k)) for k, kind in self._SCALARS.items()}}
        return params, {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}

    @classmethod
    def from_state(cls, params: dict, arrays: dict) -> "_Base":
        """The detector :meth:`state` described: scores as the one saved. ValueError naming what is missing,
        unknown or inconsistent (nothing is executed: parameters are plain values, arrays numbers)."""
        if not isinstance(params, dict):
            raise ValueError(f"{cls.name} parameters must be a JSON object, got {type(params).__name__}")
        names = cls._param_names()
        unknown = sorted(set(params) - set(names) - set(cls._SCALARS))
        if unknown:
            raise ValueError(f"unknown {cls.name} parameters: {', '.join(unknown)}")
        try:
            det = cls(**{k: params[k] for k in names if k in params})
        except TypeError as exc:  # a required parameter missing
            raise ValueError(f"{cls.name} parameters: {exc}") from None
        for k, kind in cls._SCALARS.items():
            setattr(det, k, _state_number(params, k, kind))
        for k, (dtype, ndim) in cls._ARRAYS.items():
            setattr(det, k, _state_array(arrays, k, dtype, ndim))
        det._check_state()
        return det

    def _check_state(self) -> None:
        """ValueError when the fitted attributes set by :meth:`from_state` do not fit together."""
        d = self.mean_.shape[0]
        if d < 1 or self.scale_.shape != (d,) or not (self.scale_ > 0).all():
            raise ValueError(f"arrays 'mean_' {self.mean_.shape} and 'scale_' {self.scale_.shape} must have one "
                             f"entry per feature, scales > 0")

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X) first")

    def _scale_fit(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"fit needs a 2-D array with >= 2 rows, got shape {X.shape}")
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        # Floor each dimension's scale at the median spread: dividing near-constant embedding
        # dimensions by their tiny std turns benign jitter into huge distances (measured on the
        # synthetic port scan: kNN ROC-AUC 0.75 with plain standardisation, 0.999 with the floor).
        self.scale_ = np.maximum(sd, max(float(np.median(sd)), 1e-6)).astype(np.float32)
        return (X - self.mean_) / self.scale_

    def _checked(self, X: np.ndarray) -> np.ndarray:
        """``X`` as float32, after checking it has the fitted width."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"X has shape {X.shape}, the detector was fitted on {self.mean_.shape[0]} features")
        return X

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return (self._checked(X) - self.mean_) / self.scale_

    def _finish_fit(self, scores: np.ndarray) -> None:
        self.decision_scores_ = scores
        self.threshold_ = float(np.quantile(scores, 1.0 - self.contamination))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 for scores above ``threshold_`` (anomalous), else 0."""
        self._check_fitted()
        return (self.decision_function(X) > self.threshold_).astype(np.int64)


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

    def fit(self, X: np.ndarray) -> "KNNDetector":
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

    def decision_function(self, X: "np.ndarray | FactoredRows") -> np.ndarray:
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


class IForestDetector(_Base):
    """scikit-learn IsolationForest, sign flipped once here so higher = more anomalous.

    ``fit`` grows scikit-learn's forest (kept as ``model_`` for inspection) and keeps its trees as plain
    node arrays (``nodes_``, :mod:`detector.iforest_walk`) and the path-length normaliser
    (``denominator_``); scoring reads only these, so a fitted and a loaded detector score through the
    same code, bit for bit as ``IsolationForest.score_samples``.
    """

    name = "iforest"
    _SCALARS = {**_Base._SCALARS, "denominator_": float}

    def __init__(self, n_estimators: int = 100, max_samples: int | str = 256, contamination: float = 0.01,
                 random_state: int = 0) -> None:
        super().__init__(contamination, random_state, n_estimators=(n_estimators, 1))
        if not (max_samples == "auto" or isinstance(max_samples, (int, np.integer)) and max_samples >= 2):
            raise ValueError(f"max_samples must be 'auto' or an integer >= 2, got {max_samples!r}")
        self.max_samples = max_samples

    def fit(self, X: np.ndarray) -> "IForestDetector":
        Z = self._scale_fit(X)
        ms = self.max_samples if isinstance(self.max_samples, str) else min(int(self.max_samples), len(Z))
        self._set_forest(IsolationForest(n_estimators=self.n_estimators, max_samples=ms,
                                         random_state=self.random_state, n_jobs=1).fit(Z))
        self._finish_fit(-self._score_samples(Z))
        return self

    def _set_forest(self, model: IsolationForest) -> None:
        """Keep the fitted ``model``'s trees as node arrays (input columns folded into ``feature``)."""
        from sklearn.ensemble._iforest import _average_path_length

        # trees fitted on a column subset read their input through it (IsolationForest._compute_score_samples)
        subsample = any(len(cols) != model.n_features_in_ for cols in model.estimators_features_)
        trees, off = [], [0]
        for i, (est, cols) in enumerate(zip(model.estimators_, model.estimators_features_)):
            t = est.tree_
            # the depth value scikit-learn adds for a row ending in a node (its own per-tree arrays when
            # present; else the same expression from the public tree arrays)
            try:
                value = model._decision_path_lengths[i] + model._average_path_length_per_tree[i] - 1.0
            except AttributeError:
                value = t.compute_node_depths() + _average_path_length(t.n_node_samples) - 1.0
            feature = np.where(t.children_left == -1, 0, t.feature)
            trees.append((t.children_left, t.children_right, np.asarray(cols)[feature] if subsample else feature,
                          t.threshold, value))
            off.append(off[-1] + t.node_count)
        nodes = {"offsets": np.asarray(off)}
        for j, name in enumerate(iforest_walk.NODE_ARRAYS[1:]):
            nodes[name] = np.concatenate([tree[j] for tree in trees])
        self.nodes_, self.tree_depths_ = iforest_walk.check_nodes(nodes, model.n_features_in_)
        self.denominator_ = float(len(model.estimators_) * _average_path_length([model.max_samples_])[0])
        self.model_ = model
        self.__dict__.pop("_forest_cache", None)  # the walk layout belongs to the previous forest

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        params, arrays = super().state()
        return params, {**arrays, **self.nodes_}

    @classmethod
    def from_state(cls, params: dict, arrays: dict) -> "IForestDetector":
        own = {k: v for k, v in arrays.items() if k not in iforest_walk.NODE_ARRAYS}
        det = super().from_state(params, own)
        det.nodes_, det.tree_depths_ = iforest_walk.check_nodes(arrays, det.mean_.shape[0])
        if not det.denominator_ >= 0.0 or not np.isfinite(det.denominator_):
            raise ValueError(f"parameter 'denominator_' must be a finite number >= 0, got {det.denominator_}")
        return det

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = self._checked(X)
        if len(X) == 0:
            return np.zeros(0)
        return -self._score_samples(X, scaled=False)  # the one sign flip

    # Rows per block of the fast path: a block stays in cache while all the trees walk it.
    # 2048-4096 measured best on LUFlow embeddings.
    SCORE_BLOCK = 2048
    # Threads for the tree walk of large inputs (one contiguous row range each; the scores do not depend
    # on the count). 2 = the cores of the target machine; 1 turns it off.
    SCORE_THREADS = 2
    # The compiled walk of detector.iforest_walk; False = its NumPy walk over the node arrays (same scores).
    COMPILED = iforest_walk.available()

    def _score_samples(self, Z: np.ndarray, scaled: bool = True) -> np.ndarray:
        """``IsolationForest.score_samples(Z)``, bit for bit, about 10x faster on large inputs.

        ``scaled=False``: ``Z`` is raw float32 input, standardised here block by block (the same
        float32 arithmetic as :meth:`_scale`, without two input-sized temporaries).

        sklearn walks one tree over all rows, then the next: with wide rows every tree re-reads the
        whole input from memory. Here each block of rows is walked by every tree while it is in cache:
        with numba (:data:`COMPILED`) by the compiled walk over complete trees, else (or for trees deeper
        than :data:`detector.iforest_walk.MAX_DEPTH`) by the NumPy walk over the node arrays. Per row the
        arithmetic is sklearn's, in its order: tree depths added tree by tree, then
        ``2 ** -(depth / (n_trees * c(max_samples)))``.
        """
        kind, layout = self._forest()
        n, B, denominator = Z.shape[0], self.SCORE_BLOCK, self.denominator_
        depths = np.zeros(n)

        def walk(lo: int, hi: int) -> None:
            """Depths of rows ``lo:hi`` (each thread writes its own rows of ``depths``)."""
            if kind == "complete":  # the compiled walk (detector.iforest_walk), GIL released
                iforest_walk.walk(Z[lo:hi], self.mean_, self.scale_, scaled, *layout, depths[lo:hi])
                return
            buf = np.empty((min(B, hi - lo), Z.shape[1]), dtype=np.float32)
            for start in range(lo, hi, B):
                rows = Z[start:min(start + B, hi)]
                block = buf[:len(rows)]  # reused: no fresh pages per block
                if scaled:
                    block[:] = rows
                else:
                    np.divide(np.subtract(rows, self.mean_, out=block), self.scale_, out=block)
                iforest_walk.walk_nodes(block, layout, depths[start:start + len(rows)])

        Z = np.ascontiguousarray(Z, dtype=np.float32)
        _in_row_ranges(walk, n, B, self.SCORE_THREADS)  # both walks release the GIL (NumPy: mostly)
        # sklearn's own rule: a zero normaliser (max_samples of one) is exactly 0.0, and every score 1
        return -(2 ** -np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0))

    def _forest(self) -> tuple[str, tuple]:
        """``("complete", layout)`` for the compiled walk (:func:`detector.iforest_walk.complete_forest`) or
        ``("nodes", layout)`` for the NumPy walk (:func:`detector.iforest_walk.node_walk`), built at first
        use (the bundle's warm-up builds it before the first window); not pickled."""
        cached = self.__dict__.get("_forest_cache")
        if cached is None:
            complete = iforest_walk.complete_forest(self.nodes_, self.tree_depths_) if self.COMPILED else None
            cached = (("complete", complete) if complete is not None
                      else ("nodes", iforest_walk.node_walk(self.nodes_, self.tree_depths_)))
            self._forest_cache = cached
        return cached

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_forest_cache", None)
        return state

    def __repr__(self) -> str:
        return f"IForestDetector(n_estimators={self.n_estimators}, max_samples={self.max_samples!r})"


class FusionDetector(_Base):
    """kNN on the embedding columns plus IsolationForest on the raw flow columns, scores added.

    .. math::
        s(x) = \\sum_{c \\in \\{\\text{knn}, \\text{forest}\\}}
               \\frac{s_c(x_c) - \\operatorname{med}_c}{q_c - \\operatorname{med}_c}

    ``x = [x_emb ‖ x_raw]``: the last ``raw_dim`` columns are the raw flow features (the ``raw`` block,
    always last in a detector input), the rest the learned embedding. Each part is scored by its own
    detector, fitted on the same benign rows, and each score is put in units of that detector's benign
    spread — median ``med_c`` and ``1 - contamination`` quantile ``q_c`` of its training scores (kNN:
    leave-one-out) — before the sum, so neither scale dominates (PyOD's score "standardise, then
    average", with a robust standardiser: benign kNN scores are heavy-tailed). A flow that either view
    finds far from benign traffic scores high; one that both find unusual scores highest.

    Why: the embedding and the raw features fail on different splits (a new device's benign flows look
    anomalous in the graph; a stealthy scan looks benign per flow), and the raw-feature forest is the
    baseline the model must beat. Whether the fusion is used is decided per model on validation, like
    any other candidate (:func:`training.pretrain.select_flow_detector`).
    """

    name = "fusion"

    def __init__(self, raw_dim: int, k: int = 5, max_bank: int = 512, bank: str = "coreset",
                 n_estimators: int = 100, contamination: float = 0.01, random_state: int = 0) -> None:
        super().__init__(contamination, random_state, raw_dim=(raw_dim, 1), k=(k, 1), max_bank=(max_bank, 2),
                         n_estimators=(n_estimators, 1))
        if bank not in KNNDetector.BANKS:
            raise ValueError(f"bank must be one of {KNNDetector.BANKS}, got {bank!r}")
        self.bank = bank

    def fit(self, X: np.ndarray) -> "FusionDetector":
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] <= self.raw_dim:
            raise ValueError(f"fusion needs embedding columns before the last raw_dim={self.raw_dim}, "
                             f"got shape {X.shape}")
        self.n_features_in_ = X.shape[1]
        emb, raw = X[:, :-self.raw_dim], X[:, -self.raw_dim:]
        self.knn_ = KNNDetector(self.k, self.max_bank, self.bank, self.contamination, self.random_state).fit(emb)
        self.forest_ = IForestDetector(self.n_estimators, contamination=self.contamination,
                                       random_state=self.random_state).fit(raw)
        self.centers_, self.spreads_ = [], []
        for d in (self.knn_, self.forest_):
            med = float(np.median(d.decision_scores_))
            q = float(np.quantile(d.decision_scores_, 1.0 - self.contamination))
            self.centers_.append(med)
            self.spreads_.append(max(q - med, 1e-12))  # all-equal training scores: avoid a zero division
        p = self._parts(self.knn_.decision_scores_, self.forest_.decision_scores_)
        self._finish_fit(p["knn"] + p["forest"])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        p = self.part_scores(X)
        return p["knn"] + p["forest"]

    def part_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each part's standardised score (``knn``, ``forest``; they add up to :meth:`decision_function`):
        which view made a flow anomalous."""
        self._check_fitted()
        if not isinstance(X, FactoredRows):
            X = np.asarray(X, dtype=np.float32)
        if len(X.shape) != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}, the detector was fitted on {self.n_features_in_} features")
        if len(X) == 0:
            return {"knn": np.zeros(0), "forest": np.zeros(0)}
        last, index = X.blocks[-1] if isinstance(X, FactoredRows) else (None, None)
        if last is not None and index is None and last.shape[1] == self.raw_dim and len(X.blocks) > 1:
            # the raw block is the last per-row block: the kNN part keeps the endpoint blocks factored
            emb, raw = FactoredRows(X.blocks[:-1]), last
        else:
            X = np.asarray(X, dtype=np.float32)
            emb, raw = X[:, :-self.raw_dim], X[:, -self.raw_dim:]
        return self._parts(self.knn_.decision_function(emb), self.forest_.decision_function(raw))

    _SCALARS = {**_Base._SCALARS, "n_features_in_": int}
    _ARRAYS = {"decision_scores_": (np.float64, 1)}
    PARTS = {"knn": ("knn_", KNNDetector), "forest": ("forest_", IForestDetector)}

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """As :meth:`_Base.state`, plus each part's ``(params, arrays)``: params under ``knn_`` / ``forest_``,
        arrays prefixed ``knn.`` / ``forest.``."""
        params, arrays = super().state()
        params.update(centers_=[float(c) for c in self.centers_], spreads_=[float(c) for c in self.spreads_])
        for prefix, (attr, _) in self.PARTS.items():
            p, a = getattr(self, attr).state()
            params[attr] = p
            arrays.update({f"{prefix}.{k}": v for k, v in a.items()})
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict) -> "FusionDetector":
        params = dict(params) if isinstance(params, dict) else params
        parts, sums = {}, {}
        for prefix, (attr, part_cls) in cls.PARTS.items():
            if not isinstance(params, dict) or attr not in params:
                raise ValueError(f"fusion parameters lack the {prefix} part ({attr!r})")
            own = {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
            try:
                parts[attr] = part_cls.from_state(params.pop(attr), own)
            except ValueError as exc:
                raise ValueError(f"fusion {prefix} part: {exc}") from None
        for name in ("centers_", "spreads_"):
            v = params.pop(name, None)
            if not (isinstance(v, list) and len(v) == 2):
                raise ValueError(f"parameter {name!r} must be a list of two numbers, got {v!r}")
            sums[name] = [_state_number({name: x}, name) for x in v]
        det = super().from_state(params, {k: v for k, v in arrays.items() if "." not in k})
        det.__dict__.update(parts)
        det.__dict__.update(sums)
        emb, raw = det.knn_.mean_.shape[0], det.forest_.mean_.shape[0]
        if raw != det.raw_dim or emb + raw != det.n_features_in_:
            raise ValueError(f"fusion parts fitted on {emb} + {raw} features, parameters say "
                             f"{det.n_features_in_ - det.raw_dim} + {det.raw_dim}")
        if not all(np.isfinite(det.centers_)) or not all(x > 0 and np.isfinite(x) for x in det.spreads_):
            raise ValueError("parameters 'centers_' / 'spreads_' must be finite, spreads > 0")
        return det

    def _check_state(self) -> None:
        pass  # the parts are checked by their own from_state; the widths in from_state

    def _parts(self, s_knn: np.ndarray, s_forest: np.ndarray) -> dict[str, np.ndarray]:
        return {"knn": (np.asarray(s_knn) - self.centers_[0]) / self.spreads_[0],
                "forest": (np.asarray(s_forest) - self.centers_[1]) / self.spreads_[1]}

    def __repr__(self) -> str:
        return (f"FusionDetector(raw_dim={self.raw_dim}, k={self.k}, max_bank={self.max_bank}, bank={self.bank!r}, "
                f"n_estimators={self.n_estimators}, contamination={self.contamination})")


DETECTORS = {"knn": KNNDetector, "iforest": IForestDetector, "fusion": FusionDetector}


def make_detector(name: str, **kw) -> _Base:
    """Build a detector by name (``knn``, ``iforest`` or ``fusion``, which needs ``raw_dim``)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](**kw)


def select_detector(train_scores: dict[str, np.ndarray], val_scores: dict[str, np.ndarray],
                    target_fpr: float = 0.01) -> tuple[str, dict[str, float]]:
    """Pick the default detector from benign data only (no attack labels).

    Rule ("threshold transfer"): for each detector take the ``1 - target_fpr``
    quantile of its scores on the *training* benign flows, and measure which
    fraction of the *later* benign validation flows exceed it. The detector
    whose rate stays closest to ``target_fpr`` is the most stable under the
    drift of benign traffic over time, so its calibrated threshold is the most
    trustworthy on unseen data. Ties go to the first name in sorted order.
    Returns the name and the per-detector drift ``|fpr_val - target|``.
    """
    drift: dict[str, float] = {}
    for name in sorted(train_scores):
        tr, va = np.asarray(train_scores[name]), np.asarray(val_scores[name])
        if len(tr) == 0 or len(va) == 0:
            drift[name] = float("inf")
            continue
        t = np.quantile(tr, 1.0 - target_fpr)
        drift[name] = float(abs((va > t).mean() - target_fpr))
    best = min(drift, key=lambda n: (drift[n], n))
    return best, drift

"""The predicates' group ranks and distinct counts through compiled hash tables equal the sorting NumPy
path (``np.unique``'s inverse; distinct pairs per group) on keys the dense table does not take."""
import numpy as np
import pytest

import knowledge.predicates.kernels as K

pytestmark = pytest.mark.skipif(K._hash_kernels() is None, reason="numba is not installed: no hash kernels")


@pytest.mark.parametrize("n, lo, hi", [(50000, 0, 10 ** 12), (5000, 0, 7), (3000, -(2 ** 40), 2 ** 40), (1, 5, 6),
                                       (4000, 10 ** 15, 10 ** 15 + 50)])
def test_rank_equals_np_unique_inverse(n, lo, hi):
    key = np.random.default_rng(n).integers(lo, hi, n)
    inv, k = K._rank(key, int(key.max()), bool(key.min() >= 0))
    ref = np.unique(key, return_inverse=True)[1].ravel()
    assert inv.dtype == np.int64 and np.array_equal(inv, ref) and k == len(np.unique(key))


@pytest.mark.parametrize("n_groups, base", [(300, 70000), (2, 10 ** 9), (5000, 3)])
def test_distinct_equals_the_sort(n_groups, base, monkeypatch):
    rng = np.random.default_rng(base)
    g, v = rng.integers(0, n_groups, 40000), rng.integers(0, base, 40000)
    mask = rng.random(40000) < 0.7
    got = [K._distinct(g, n_groups, v), K._distinct(g, n_groups, v, mask)]
    monkeypatch.setattr(K, "_hash_kernels", lambda: None)  # the sorting path
    monkeypatch.setattr(K, "_dense", lambda kmax, n: False)
    ref = [K._distinct(g, n_groups, v), K._distinct(g, n_groups, v, mask)]
    for a, b in zip(got, ref):
        assert a.dtype == np.float64 and np.array_equal(a, b)

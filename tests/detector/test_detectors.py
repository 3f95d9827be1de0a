import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from detector.detectors import IForestDetector, KNNDetector, make_detector, select_detector


def _data(seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(1500, 8))
    test_b = rng.normal(size=(300, 8))
    test_a = rng.normal(loc=2.5, size=(60, 8))  # shifted cluster
    X = np.vstack([test_b, test_a])
    y = np.r_[np.zeros(300), np.ones(60)]
    return train, X, y


@pytest.mark.parametrize("name", ["knn", "iforest"])
def test_quality_floor(name):
    train, X, y = _data()
    det = make_detector(name).fit(train)
    s = det.decision_function(X)
    assert roc_auc_score(y, s) >= 0.8
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.99))
    pred = det.predict(X)
    assert pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}


def test_higher_is_more_anomalous_iforest_sign():
    det = IForestDetector().fit(np.random.default_rng(0).normal(size=(500, 3)))
    near, far = det.decision_function(np.array([[0.0, 0, 0], [8.0, 8, 8]]))
    assert far > near


def test_knn_training_scores_are_leave_one_out():
    X = np.random.default_rng(1).normal(size=(200, 4))
    det = KNNDetector(k=3).fit(X)
    assert (det.decision_scores_ > 0).all()


def test_unfitted_and_bad_params():
    with pytest.raises(RuntimeError, match="not fitted"):
        KNNDetector().decision_function(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="contamination"):
        KNNDetector(contamination=0.7)
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("hbos")
    det = KNNDetector().fit(np.random.default_rng(0).normal(size=(50, 4)))
    with pytest.raises(ValueError, match="fitted on 4"):
        det.decision_function(np.zeros((2, 3)))


@pytest.mark.parametrize("cls,kw,match", [
    (KNNDetector, dict(k=0), "k must be an integer >= 1, got 0"),
    (KNNDetector, dict(k=2.5), "k must be an integer"),
    (KNNDetector, dict(max_bank=1), "max_bank must be an integer >= 2"),
    (KNNDetector, dict(bank="kmeans"), "bank must be one of"),
    (IForestDetector, dict(n_estimators=0), "n_estimators must be an integer >= 1"),
    (IForestDetector, dict(max_samples=1), "max_samples must be 'auto'"),
    (IForestDetector, dict(contamination=0.0), "contamination"),
])
def test_constructor_validation_quotes_the_value_and_rule(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


def test_select_detector_prefers_stable_threshold():
    rng = np.random.default_rng(0)
    tr = {"a": rng.normal(size=2000), "b": rng.normal(size=2000)}
    va = {"a": rng.normal(size=2000), "b": rng.normal(loc=1.0, size=2000)}  # b drifts on later benign data
    best, drift = select_detector(tr, va, 0.01)
    assert best == "a" and drift["b"] > drift["a"]


# -- kNN bank and search ------------------------------------------------------------------------------

def _brute_knn_mean(Z, bank, k, self_col=None):
    d = np.sqrt(((Z[:, None, :].astype(np.float64) - bank[None, :, :]) ** 2).sum(-1))
    if self_col is not None:
        rows = np.flatnonzero(self_col >= 0)
        d[rows, self_col[rows]] = np.inf
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


@pytest.mark.parametrize("bank", ["coreset", "random"])
def test_knn_scores_equal_brute_force_search(bank):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 6)) * np.array([1, 2, 3, 0.5, 1, 4])
    det = KNNDetector(k=4, max_bank=100, bank=bank).fit(X)
    assert det.bank_.shape == (100, 6) and len(set(det.bank_index_.tolist())) == 100
    Q = rng.normal(size=(300, 6)) * 2
    ref = _brute_knn_mean((Q - det.mean_) / det.scale_, det.bank_, 4)
    np.testing.assert_allclose(det.decision_function(Q), ref, rtol=1e-4, atol=1e-4)
    # leave-one-out training scores: a bank row does not count itself, other rows search the whole bank
    Z = (X.astype(np.float32) - det.mean_) / det.scale_
    self_col = np.full(len(X), -1)
    self_col[det.bank_index_] = np.arange(100)
    np.testing.assert_allclose(det.decision_scores_, _brute_knn_mean(Z, det.bank_, 4, self_col), rtol=1e-4, atol=1e-4)


def test_knn_exact_bank_matches_sklearn_leave_one_out():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(4).normal(size=(400, 5)).astype(np.float32)
    det = KNNDetector(k=3, max_bank=400).fit(X)  # the whole fitting set is the bank
    Z = (X - det.mean_) / det.scale_
    d, _ = NearestNeighbors(n_neighbors=4).fit(Z).kneighbors(Z)
    np.testing.assert_allclose(det.decision_scores_, d[:, 1:].mean(axis=1), rtol=1e-4, atol=1e-5)


def test_coreset_is_greedy_k_center():
    from detector.detectors import kcenter_greedy

    rng = np.random.default_rng(5)
    Z = np.vstack([rng.normal(size=(500, 3)), rng.normal(loc=9.0, size=(5, 3))]).astype(np.float32)  # rare mode
    idx = kcenter_greedy(Z, 20, first=0)
    assert idx[0] == 0 and len(set(idx.tolist())) == 20
    assert (idx >= 500).any()  # the five far rows are covered by a bank row of their own
    d = np.sqrt(((Z[:, None] - Z[idx][None]) ** 2).sum(-1))
    # each pick is the row farthest from the picks before it: the pick distances never increase
    picked = [d[idx[i], :i].min() for i in range(1, 20)]
    assert all(a >= b - 1e-4 for a, b in zip(picked, picked[1:]))
    assert d.min(axis=1).max() <= picked[-1] + 1e-4  # every row is within the last pick's radius
    # duplicates: the greedy pass stops when every row is a bank row or a copy of one
    assert len(kcenter_greedy(np.repeat(Z[:3], 10, axis=0), 20, first=0)) == 3


def test_knn_kernel_compiled_equals_numpy_path():
    from detector import knn_kernel

    rng = np.random.default_rng(6)
    d = rng.normal(size=(50, 40)).astype(np.float32)
    q = (rng.random(50) * 5).astype(np.float32)
    self_col = rng.integers(-1, 40, size=50)
    for k, sc in ((1, None), (5, None), (5, self_col), (40, None)):
        got, ref = np.empty(50), np.empty(50)
        knn_kernel.kmean(d, q, k, sc, got)
        dd = d.astype(np.float64)
        if sc is not None:
            rows = np.flatnonzero(sc >= 0)
            dd[rows, sc[rows]] = np.inf
        kk = np.sort(dd, axis=1)[:, :k] + q[:, None]
        kk = np.where(np.isinf(kk), np.nan, kk)
        ref[:] = np.nanmean(np.sqrt(np.clip(kk, 0, None)), axis=1)
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        fallback = np.empty(50)
        knn_kernel.kmean_numpy(d, q, k, sc, fallback)  # the path where numba is missing
        np.testing.assert_allclose(fallback, ref, rtol=1e-6)


def test_knn_large_inputs_threaded_equal_one_thread():
    rng = np.random.default_rng(7)
    det = KNNDetector(max_bank=64).fit(rng.normal(size=(500, 8)))
    Q = rng.normal(size=(3 * KNNDetector.SCORE_BLOCK + 17, 8))
    threaded = det.decision_function(Q)
    det.SCORE_THREADS = 1
    np.testing.assert_array_equal(det.decision_function(Q), threaded)


def test_knn_pickle_round_trip_and_older_pickles():
    import pickle

    X = np.random.default_rng(8).normal(size=(300, 4))
    det = KNNDetector(max_bank=50).fit(X)
    again = pickle.loads(pickle.dumps(det))
    assert "_bank_cache" not in again.__dict__
    np.testing.assert_array_equal(again.decision_function(X), det.decision_function(X))
    # a detector pickled before the coreset bank: a sklearn index and no `bank` attribute
    state = {k: v for k, v in det.__dict__.items() if k not in ("bank", "_bank_cache")}
    state["nn_"] = object()
    old = KNNDetector.__new__(KNNDetector)
    old.__setstate__(state)
    assert old.bank == "random" and not hasattr(old, "nn_")
    np.testing.assert_array_equal(old.decision_function(X), det.decision_function(X))


def test_knn_on_identical_rows_keeps_one_bank_row():
    det = KNNDetector(max_bank=8).fit(np.ones((50, 3)))  # every row a copy: the coreset stops at one row
    assert len(det.bank_) == 1 and det.k_ == 1
    assert (det.decision_scores_ == 0).all()
    s = det.decision_function(np.array([[1.0, 1, 1], [4.0, 1, 1]]))
    assert s[0] == 0 and s[1] > 0

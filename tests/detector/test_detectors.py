import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from detector.detectors import FusionDetector, IForestDetector, KNNDetector, make_detector, select_detector


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
    (FusionDetector, dict(raw_dim=0), "raw_dim must be an integer >= 1, got 0"),
    (FusionDetector, dict(raw_dim=3, bank="kmeans"), "bank must be one of"),
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


def test_coreset_counts_rows_within_float_noise_as_duplicates():
    """Copies of a row that the expanded-form distance puts ~5e-7 apart (what another BLAS gives for exact
    copies: OpenBLAS on AMD) are duplicates: three distinct rows give three picks (exact equality: more)."""
    from detector.detectors import kcenter_greedy

    rng = np.random.default_rng(12)
    base = (rng.normal(size=(3, 8)) * 5).astype(np.float32)  # squared norms ~200
    Z = np.repeat(base, 10, axis=0)
    Z += rng.normal(scale=2.5e-4, size=Z.shape).astype(np.float32)  # squared distances ~1e-6 between copies
    d2 = ((Z[:, None].astype(np.float64) - Z[None]) ** 2).sum(-1)
    copies = np.repeat(np.arange(3), 10)
    same = copies[:, None] == copies[None]
    assert d2[same & (d2 > 0)].min() > 1e-7 and d2[same].max() < 1e-5  # noise above an exact 0, far below the gap
    assert len(kcenter_greedy(Z, 20, first=0)) == 3
    # rows that differ by more than the tolerance are still picked: one pick per cluster of the noisy copies
    wide = np.repeat(base, 10, axis=0) + rng.normal(scale=0.5, size=Z.shape).astype(np.float32)
    assert len(kcenter_greedy(wide, 20, first=0)) == 20


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


def test_knn_gathered_kernel_equals_the_plain_kernel_on_the_summed_rows():
    from detector import knn_kernel

    rng = np.random.default_rng(8)
    d = rng.normal(size=(60, 30)).astype(np.float32)
    q = (rng.random(60) * 5 + 3).astype(np.float32)
    P = rng.normal(size=(9, 30)).astype(np.float32)
    qP = (rng.random(9) * 4).astype(np.float32)
    for gi in (np.zeros((60, 0), np.int64), rng.integers(0, 9, size=(60, 1)), rng.integers(0, 9, size=(60, 2))):
        ref = np.empty(60)
        knn_kernel.kmean(np.ascontiguousarray(d + P[gi].sum(axis=1)), q + qP[gi].sum(axis=1), 5, None, ref)
        got, fallback = np.empty(60), np.empty(60)
        knn_kernel.kmean_gathered(d, q, 5, P, qP, np.ascontiguousarray(gi), got)
        knn_kernel.kmean_gathered_numpy(d, q, 5, P, qP, gi, fallback)  # the path where numba is missing
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        np.testing.assert_allclose(fallback, ref, rtol=1e-6)


@pytest.mark.parametrize("layout", ["src,dst,edge", "edge,dst,raw", "src,dst"])
def test_knn_on_factored_rows_equals_the_dense_rows(layout):
    """Endpoint blocks searched once per node (FactoredRows) give the dense search's scores (float rounding)."""
    from detector.tensors import FactoredRows

    rng = np.random.default_rng(9)
    n, nodes = 3 * KNNDetector.SCORE_BLOCK + 5, rng.normal(size=(40, 6)).astype(np.float32)
    blocks = {"src": (nodes, rng.integers(0, 40, n)), "dst": (nodes, rng.integers(0, 40, n)),
              "edge": (rng.normal(size=(n, 5)).astype(np.float32), None),
              "raw": (rng.normal(size=(n, 3)).astype(np.float32), None)}
    F = FactoredRows([blocks[p] for p in layout.split(",")])
    X = np.asarray(F)
    assert X.shape == F.shape and X.dtype == np.float32
    det = KNNDetector(max_bank=64).fit(rng.normal(size=(800, X.shape[1])) * 1.5)
    np.testing.assert_allclose(det.decision_function(F), det.decision_function(X), rtol=1e-5, atol=1e-5)
    part = F.rows(100, 2500)
    np.testing.assert_allclose(det.decision_function(part), det.decision_function(X[100:2500]), rtol=1e-5, atol=1e-5)
    assert det.decision_function(F.rows(0, 0)).shape == (0,)
    with pytest.raises(ValueError, match="fitted on"):
        KNNDetector(max_bank=8).fit(X[:50, 1:]).decision_function(F)
    with pytest.raises(ValueError, match="different row counts"):
        FactoredRows([(nodes, np.zeros(3, np.int64)), (nodes, None)])
    # other detectors take the plain matrix through np.asarray
    forest = IForestDetector().fit(X[:500])
    np.testing.assert_array_equal(forest.decision_function(F), forest.decision_function(X))


def test_knn_large_inputs_threaded_equal_one_thread():
    rng = np.random.default_rng(7)
    det = KNNDetector(max_bank=64).fit(rng.normal(size=(500, 8)))
    Q = rng.normal(size=(3 * KNNDetector.SCORE_BLOCK + 17, 8))
    threaded = det.decision_function(Q)
    det.SCORE_THREADS = 1
    np.testing.assert_array_equal(det.decision_function(Q), threaded)


def test_knn_state_and_pickle_round_trip():
    import json
    import pickle

    X = np.random.default_rng(8).normal(size=(300, 4))
    det = KNNDetector(max_bank=50, k=4).fit(X)
    params, arrays = det.state()
    assert sorted(arrays) == ["bank_", "bank_index_", "decision_scores_", "mean_", "scale_"]
    back = KNNDetector.from_state(json.loads(json.dumps(params)), arrays)  # params survive JSON
    assert (back.k, back.max_bank, back.bank, back.k_, back.threshold_) == (4, 50, "coreset", det.k_, det.threshold_)
    np.testing.assert_array_equal(back.decision_function(X), det.decision_function(X))
    again = pickle.loads(pickle.dumps(det))  # in memory: the bank tensor cache is not carried
    assert "_bank_cache" not in again.__dict__
    np.testing.assert_array_equal(again.decision_function(X), det.decision_function(X))


@pytest.mark.parametrize("change,match", [
    (lambda p, a: a.pop("bank_"), "array 'bank_' is missing"),
    (lambda p, a: a.update(bank_=a["bank_"][:, :3]), r"'bank_' \(50, 3\) must hold"),
    (lambda p, a: a.update(mean_=a["mean_"].reshape(2, 2)), "'mean_' must be 1-D"),
    (lambda p, a: a.update(scale_=np.zeros(4, np.float32)), "scales > 0"),
    (lambda p, a: a.update(bank_=np.full_like(a["bank_"], np.nan)), "non-finite"),
    (lambda p, a: a.update(bank_=a["bank_"].astype(np.int64)), "must be 2-D float32"),
    (lambda p, a: p.update(k_=51), r"'k_' must be in 1..50"),
    (lambda p, a: p.update(k_=2.5), "'k_' must be an integer"),
    (lambda p, a: p.pop("threshold_"), "'threshold_' must be a number"),
    (lambda p, a: p.update(leaf_size=3), "unknown knn parameters: leaf_size"),
    (lambda p, a: p.update(k=0), "k must be an integer >= 1"),
])
def test_knn_from_state_refuses_state_that_cannot_score(change, match):
    det = KNNDetector(max_bank=50).fit(np.random.default_rng(8).normal(size=(300, 4)))
    params, arrays = det.state()
    change(params, arrays)
    with pytest.raises(ValueError, match=match):
        KNNDetector.from_state(params, arrays)


def test_knn_on_identical_rows_keeps_one_bank_row():
    det = KNNDetector(max_bank=8).fit(np.ones((50, 3)))  # every row a copy: the coreset stops at one row
    assert len(det.bank_) == 1 and det.k_ == 1
    assert (det.decision_scores_ == 0).all()
    s = det.decision_function(np.array([[1.0, 1, 1], [4.0, 1, 1]]))
    assert s[0] == 0 and s[1] > 0


def _two_views(seed=0):
    """12 embedding columns then 4 raw columns; attacks shifted in one view only (half in each)."""
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(2000, 16)).astype(np.float32)
    ben = rng.normal(size=(400, 16)).astype(np.float32)
    emb_att = rng.normal(size=(40, 16)).astype(np.float32)
    emb_att[:, :12] += 2.0                      # unusual embedding, ordinary raw features
    raw_att = rng.normal(size=(40, 16)).astype(np.float32)
    raw_att[:, 12:] += 3.0                      # ordinary embedding, unusual raw features
    return train, ben, emb_att, raw_att


def test_fusion_is_the_sum_of_the_standardised_part_detectors():
    train, ben, emb_att, raw_att = _two_views()
    X = np.vstack([ben, emb_att, raw_att])
    det = FusionDetector(raw_dim=4, max_bank=128).fit(train)
    knn = KNNDetector(max_bank=128).fit(train[:, :12])
    forest = IForestDetector().fit(train[:, 12:])
    expect = 0.0
    for d, cols in ((knn, slice(0, 12)), (forest, slice(12, 16))):
        med, q = np.median(d.decision_scores_), np.quantile(d.decision_scores_, 0.99)
        expect = expect + (d.decision_function(X[:, cols]) - med) / (q - med)
    np.testing.assert_allclose(det.decision_function(X), expect, rtol=1e-10)
    parts = det.part_scores(X)
    np.testing.assert_allclose(parts["knn"] + parts["forest"], det.decision_function(X), rtol=1e-12)
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.99))
    assert (np.quantile(parts["knn"][:400], 0.5), np.quantile(parts["forest"][:400], 0.5)) == pytest.approx((0, 0), abs=0.3)


def test_fusion_catches_an_attack_seen_in_either_view():
    train, ben, emb_att, raw_att = _two_views()
    y = np.r_[np.zeros(len(ben)), np.ones(40)]
    det = FusionDetector(raw_dim=4, max_bank=128).fit(train)
    knn_emb = KNNDetector(max_bank=128).fit(train[:, :12])
    forest_raw = IForestDetector().fit(train[:, 12:])
    for att, blind in ((emb_att, forest_raw), (raw_att, knn_emb)):
        X = np.vstack([ben, att])
        cols = slice(12, 16) if blind is forest_raw else slice(0, 12)
        assert roc_auc_score(y, blind.decision_function(X[:, cols])) < 0.7   # one view alone misses it ...
        assert roc_auc_score(y, det.decision_function(X)) > 0.9             # ... the fusion does not


def test_fusion_shapes_and_pickle_round_trip():
    import pickle

    train, ben, *_ = _two_views()
    with pytest.raises(ValueError, match="embedding columns before the last raw_dim=16"):
        FusionDetector(raw_dim=16).fit(train)
    det = FusionDetector(raw_dim=4, max_bank=64).fit(train)
    with pytest.raises(ValueError, match="fitted on 16 features"):
        det.decision_function(ben[:, :15])
    assert det.decision_function(ben[:0]).shape == (0,)
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.decision_function(ben), det.decision_function(ben))
    assert make_detector("fusion", raw_dim=4).raw_dim == 4


def test_fusion_state_round_trip_and_refusals():
    """The parts' params nest under knn_/forest_, their arrays are prefixed knn./forest.; a loaded fusion
    scores (both parts) as the fitted one; parts of the wrong width are refused."""
    import json

    train, ben, *_ = _two_views()
    det = FusionDetector(raw_dim=4, max_bank=64, n_estimators=20).fit(train)
    params, arrays = det.state()
    assert {"knn.bank_", "forest.threshold", "forest.children_left", "decision_scores_"} <= set(arrays)
    assert params["knn_"]["k_"] == det.knn_.k_ and params["forest_"]["denominator_"] == det.forest_.denominator_
    back = FusionDetector.from_state(json.loads(json.dumps(params)), arrays)
    for key, value in back.part_scores(ben).items():
        np.testing.assert_array_equal(value, det.part_scores(ben)[key])
    bad = dict(params, raw_dim=5)
    with pytest.raises(ValueError, match="fusion parts fitted on 12 \\+ 4 features"):
        FusionDetector.from_state(bad, arrays)
    with pytest.raises(ValueError, match="fusion forest part: array 'mean_' is missing"):
        FusionDetector.from_state(params, {k: v for k, v in arrays.items() if k != "forest.mean_"})
    with pytest.raises(ValueError, match="'spreads_' must be a list of two numbers"):
        FusionDetector.from_state(dict(params, spreads_=[1.0]), arrays)


def test_fusion_on_factored_rows_equals_the_dense_rows():
    """Endpoint blocks stay factored for the kNN part when the raw block comes last as its own block."""
    from detector.tensors import FactoredRows

    rng = np.random.default_rng(10)
    nodes, n = rng.normal(size=(30, 6)).astype(np.float32), 5000
    raw = rng.normal(size=(n, 4)).astype(np.float32)
    F = FactoredRows([(nodes, rng.integers(0, 30, n)), (rng.normal(size=(n, 5)).astype(np.float32), None), (raw, None)])
    X = np.asarray(F)
    det = FusionDetector(raw_dim=4, max_bank=64).fit(rng.normal(size=(800, 15)))
    np.testing.assert_allclose(det.decision_function(F), det.decision_function(X), rtol=1e-5, atol=1e-5)
    # the raw block not alone at the end: the plain matrix is used
    G = FactoredRows([(nodes, rng.integers(0, 30, n)), (np.hstack([F.blocks[1][0], raw]), None)])
    np.testing.assert_allclose(det.decision_function(G), det.decision_function(np.asarray(G)), rtol=1e-12)
    with pytest.raises(ValueError, match="fitted on 15 features"):
        det.decision_function(FactoredRows(F.blocks[:2]))  # the raw block missing
    assert det.decision_function(F.rows(0, 0)).shape == (0,)

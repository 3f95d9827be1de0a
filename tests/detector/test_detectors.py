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

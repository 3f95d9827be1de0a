import numpy as np
import pytest

from detector.calibration import Calibration, calibrate_threshold


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("dist", ["normal", "lognormal", "exponential"])
def test_threshold_hits_target_fpr_on_new_benign_scores(target, dist):
    rng = np.random.default_rng(42)
    draw = getattr(rng, dist)
    cal = calibrate_threshold(draw(size=5000), target)
    fresh = draw(size=200_000)
    fpr = (fresh > cal.threshold).mean()
    assert abs(fpr - target) < 0.35 * target + 0.002
    assert cal.n_calibration == 5000 and cal.calibration_fpr <= target


def test_small_sample_uses_max_and_reports():
    cal = calibrate_threshold(np.arange(10.0), 0.01)
    assert cal.threshold == 9.0 and cal.calibration_fpr == 0.0


def test_alerts_and_nan():
    cal = Calibration(threshold=1.0, target_fpr=0.01, n_calibration=10, calibration_fpr=0.0)
    assert cal.alerts(np.array([0.5, 1.0, 1.5, np.nan])).tolist() == [False, False, True, False]


def test_errors():
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate_threshold(np.ones(10), 1.5)
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold(np.array([np.nan]), 0.01)

"""The promotion gate (training.gate) on constructed scores: each check passes and fails, skipped checks
say why, the bootstrap is reproducible, and the metrics agree with scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from training.gate import EVAL, HOLDOUT, EvalSet, GateConfig, ModelEval, _Sorted, gate, threshold_at_fpr

N_BENIGN, N_ATTACK, N_WINDOWS = 2000, 300, 40


def _data(seed: int = 0, n_benign: int = N_BENIGN, n_attack: int = N_ATTACK):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_benign, int), np.ones(n_attack, int)]
    windows = rng.integers(0, N_WINDOWS, len(labels))
    attack = np.array([None] * n_benign + ["scan"] * (n_attack // 2) + ["bruteforce"] * (n_attack - n_attack // 2),
                      dtype=object)
    noise = rng.normal(size=len(labels))
    return labels, windows, attack, noise


def _model(name, scores, labels, windows, attack, threshold=None, rps=1000.0, hours=10.0, set_name=HOLDOUT,
           target=0.01):
    s = EvalSet(set_name, scores, labels, windows, hours, {"attack": attack})
    thr = threshold if threshold is not None else threshold_at_fpr(s.scores, labels == 0, target)
    return ModelEval(name, thr, {set_name: s}, rps, target)


def _pair(chall_scores=None, champ_rps=1000.0, chall_rps=1000.0, chall_threshold=None, cfg_set=HOLDOUT):
    labels, windows, attack, noise = _data()
    champ = noise + 3.0 * labels                      # separates well
    chall = champ.copy() if chall_scores is None else chall_scores(champ, labels, attack)
    a = _model("champion", champ, labels, windows, attack, rps=champ_rps, set_name=cfg_set)
    b = _model("challenger", chall, labels, windows, attack, threshold=chall_threshold, rps=chall_rps,
               set_name=cfg_set)
    return a, b


def _check(result, name, data=None):
    found = [c for c in result.checks if c.name == name and (data is None or c.data == data)]
    assert len(found) == 1, [(c.name, c.data) for c in result.checks]
    return found[0]


def test_same_model_passes_every_check():
    a, b = _pair()
    r = gate(a, b, GateConfig(alert_budget_per_hour=100))
    assert r.passed and r.decision == "promote" and r.reasons == []
    assert {c.name: c.status for c in r.checks} == {"auprc": "passed", "recall_at_fpr": "passed", "slices": "passed",
                                                     "benign_fpr": "passed", "alert_volume": "passed", "score_drift": "passed",
                                                     "speed": "passed"}
    assert r.data_sources["auprc"] == [HOLDOUT] and r.to_dict()["data_sources"]["score_drift"] == [HOLDOUT]


def test_auprc_and_recall_fail_when_the_challenger_ranks_worse():
    a, b = _pair(lambda s, y, att: s - 1.5 * y)      # attacks pulled towards the benign scores
    r = gate(a, b)
    assert not r.passed
    assert _check(r, "auprc").status == "failed" and _check(r, "recall_at_fpr").status == "failed"
    v = _check(r, "auprc").values
    assert v["lower_bound"] < -0.01 and v["challenger"] < v["champion"] and "40 windows resampled" in v["resampling"]
    assert any(x.startswith("auprc [holdout]") for x in r.reasons)


def test_auprc_within_the_margin_passes():
    # a tiny perturbation: the difference is far inside the 0.01 margin
    a, b = _pair(lambda s, y, att: s + np.random.default_rng(5).normal(0, 0.01, len(s)))
    r = gate(a, b)
    assert _check(r, "auprc").status == "passed" and abs(_check(r, "auprc").values["difference"]) < 0.01


def test_a_slice_drop_fails_even_when_the_rest_holds():
    # the challenger loses one attack class (150 positives >= 30) and gains on nothing
    a, b = _pair(lambda s, y, att: np.where(att == "scan", s - 3.0, s))
    r = gate(a, b, GateConfig(auprc_margin=1.0, recall_margin=1.0))   # only the slice rule can fail here
    c = _check(r, "slices")
    assert c.status == "failed" and "'scan'" in c.reason
    rows = {x["slice"]: x for x in c.values["slices"]}
    assert rows["scan"]["failed"] and not rows["bruteforce"]["failed"] and rows["scan"]["positives"] == 150


def test_slices_below_the_minimum_are_skipped_with_why():
    a, b = _pair()
    r = gate(a, b, GateConfig(slice_min_positives=1000))
    c = _check(r, "slices")
    assert c.status == "skipped" and "no attack class / technique slice with >= 1000 positives" in c.reason


def test_benign_fpr_limit_is_1_5_times_the_target():
    labels, windows, attack, noise = _data()
    s = noise + 3.0 * labels
    a = _model("champion", s, labels, windows, attack)
    ok = _model("challenger", s, labels, windows, attack, threshold=np.quantile(s[labels == 0], 1 - 0.014))
    bad = _model("challenger", s, labels, windows, attack, threshold=np.quantile(s[labels == 0], 1 - 0.03))
    assert _check(gate(a, ok), "benign_fpr").status == "passed"
    c = _check(gate(a, bad), "benign_fpr")
    assert c.status == "failed" and c.values["limit"] == 0.015 and 0.025 < c.values["challenger"] < 0.035


def test_alert_volume_against_the_budget_runs_by_default_and_can_be_switched_off():
    a, b = _pair()
    # ~20 benign alerts at FPR 0.01 over 10 hours: ~2 per hour
    assert _check(gate(a, b, GateConfig(alert_budget_per_hour=5)), "alert_volume").status == "passed"
    c = _check(gate(a, b, GateConfig(alert_budget_per_hour=0.5)), "alert_volume")
    assert c.status == "failed" and "budget 0.5" in c.reason
    c = _check(gate(a, b), "alert_volume")                       # the default budget: 60 per hour
    assert c.status == "passed" and c.values["budget_per_hour"] == 60.0
    c = _check(gate(a, b, GateConfig(alert_budget_per_hour=None)), "alert_volume")
    assert c.status == "skipped" and "switched off" in c.reason


def test_score_drift_psi_against_the_champions_deciles():
    a, b = _pair(lambda s, y, att: s + 0.02)                     # the same scale: passes
    c = _check(gate(a, b), "score_drift")
    assert c.status == "passed" and c.values["psi"] < 0.01 and c.values["benign_records"] == N_BENIGN
    a, b = _pair(lambda s, y, att: 3.0 * s)                      # the same ranking, three times the scale
    r = gate(a, b, GateConfig(auprc_margin=1.0))
    c = _check(r, "score_drift")
    assert c.status == "failed" and c.values["psi"] > 0.25 and c.values["ks"] > 0.2
    assert any(x.startswith("score_drift [holdout]") for x in r.reasons)
    assert _check(gate(a, b, GateConfig(drift_max_psi=None)), "score_drift").status == "skipped"


def test_psi_and_ks_match_their_definitions():
    from scipy.stats import ks_2samp

    from training.gate import ks_distance, psi

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=3000), rng.normal(0.5, 1.0, size=2000)
    assert ks_distance(x, y) == pytest.approx(ks_2samp(x, y).statistic)
    assert psi(x, x) == 0.0
    edges = np.quantile(x, np.linspace(0, 1, 11)[1:-1])
    p = np.bincount(np.searchsorted(edges, x, side="right"), minlength=10) / len(x)
    q = np.bincount(np.searchsorted(edges, y, side="right"), minlength=10) / len(y)
    assert psi(x, y) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


@pytest.mark.parametrize("chall_rps,status", [(950.0, "passed"), (900.0, "passed"), (850.0, "failed"), (None, "skipped")])
def test_speed_at_least_0_9_of_the_champion(chall_rps, status):
    a, b = _pair(chall_rps=chall_rps)
    assert _check(gate(a, b), "speed").status == status


def test_bootstrap_is_reproducible_and_seeded():
    a, b = _pair(lambda s, y, att: s + np.random.default_rng(3).normal(0, 0.5, len(s)))
    r1, r2 = gate(a, b), gate(a, b)
    assert r1.to_dict() == r2.to_dict()
    r3 = gate(a, b, GateConfig(seed=1))
    assert _check(r3, "auprc").values["lower_bound"] != _check(r1, "auprc").values["lower_bound"]


def test_unlabelled_archive_runs_labelled_checks_on_eval_data():
    labels, windows, attack, noise = _data()
    s = noise + 3.0 * labels
    unl = np.full(600, -1)
    hold = EvalSet(HOLDOUT, np.random.default_rng(1).normal(size=600), unl, np.arange(600) // 20, 5.0)
    ev = EvalSet(EVAL, s, labels, windows, 10.0, {"attack": attack})
    a = ModelEval("champion", 2.5, {HOLDOUT: hold, EVAL: ev}, 1000.0, 0.01)
    b = ModelEval("challenger", 2.5, {HOLDOUT: hold, EVAL: ev}, 1000.0, 0.01)
    r = gate(a, b)
    assert _check(r, "auprc", HOLDOUT).status == "skipped"
    assert _check(r, "auprc", HOLDOUT).reason == "no labels in the recent archive: labelled checks ran on --eval data"
    assert _check(r, "auprc", EVAL).status == "passed" and _check(r, "benign_fpr").data == HOLDOUT
    assert r.passed


def test_no_labels_at_all_skips_the_labelled_checks_and_require_labels_refuses():
    hold = EvalSet(HOLDOUT, np.random.default_rng(1).normal(size=600), np.full(600, -1), np.arange(600) // 20, 5.0)
    a = ModelEval("champion", 2.5, {HOLDOUT: hold}, 1000.0, 0.01)
    b = ModelEval("challenger", 2.5, {HOLDOUT: hold}, 1000.0, 0.01)
    r = gate(a, b)
    for name in ("auprc", "recall_at_fpr", "slices"):
        assert _check(r, name).status == "skipped"
        assert "no labels in the recent archive and no labelled --eval data" in _check(r, name).reason
    assert r.passed                                    # nothing failed
    r = gate(a, b, GateConfig(require_labels=True))
    assert not r.passed and "require_labels" in r.reasons[0]


def test_few_windows_resample_records_and_say_so():
    labels, _, attack, noise = _data()
    s = noise + 3.0 * labels
    one = np.zeros(len(s), int)
    a = _model("champion", s, labels, one, attack)
    b = _model("challenger", s, labels, one, attack)
    v = _check(gate(a, b), "auprc").values
    assert "only 1 windows (< min_windows)" in v["resampling"]


def test_config_is_validated():
    with pytest.raises(ValidationError, match="auprc_margni"):
        GateConfig(auprc_margni=0.02)
    with pytest.raises(ValidationError):
        GateConfig(fpr_factor=0.5)
    with pytest.raises(ValidationError):
        GateConfig(target_fpr=1.5)
    assert GateConfig().model_dump()["auprc_margin"] == 0.01 and GateConfig().speed_ratio == 0.9


def test_mismatched_sets_are_refused():
    a, b = _pair()
    b.sets = {EVAL: b.sets[HOLDOUT]}
    with pytest.raises(ValueError, match="different sets"):
        gate(a, b)


def test_weighted_metrics_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_curve

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 700)
    s = np.round(rng.normal(size=700) + y, 1)            # ties on purpose
    w = rng.integers(0, 3, 700).astype(float)
    srt = _Sorted(s, y)
    assert srt.auprc(w) == pytest.approx(average_precision_score(y, s, sample_weight=w))
    fpr, tpr, _ = roc_curve(y, s)
    assert srt.recall_at_fpr(np.ones(700), 0.1) == pytest.approx(tpr[fpr <= 0.1].max())

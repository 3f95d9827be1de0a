"""GraceCalibrator on synthetic score streams: shifted benign traffic, a contaminated grace period, drift
within bounds, JSON state round trip, constructor checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detector.grace import GraceCalibrator, conformal_quantile

TARGET = 0.01
TRAINED = 1.0  # the threshold "calibrated on the training network"


def benign(rng, n, shift=4.0, n_entities=40, t0=0.0, rate=10.0):
    """Benign scores of a new network: lognormal-ish, shifted so the trained threshold flags most of them."""
    s = shift + rng.gamma(2.0, 0.5, n)
    ent = np.array([f"10.0.0.{i % n_entities}|{[53, 123, 80, 443, 22][i % 5]}/udp" for i in
                    rng.integers(0, 10 * n_entities, n)], dtype=object)
    ts = t0 + np.sort(rng.uniform(0, n / rate, n))
    return s, ent, ts


def run(cal, s, ent, ts, chunk=500):
    """Alerts of each chunk (grace records: trained threshold), fed chunk by chunk as the daemon does."""
    out = np.zeros(s.size, bool)
    for lo in range(0, s.size, chunk):
        out[lo:lo + chunk] = cal.process(s[lo:lo + chunk], ent[lo:lo + chunk], ts[lo:lo + chunk])
    return out


def test_shifted_benign_grace_brings_fpr_to_target():
    rng = np.random.default_rng(0)
    s, ent, ts = benign(rng, 30_000)
    cal = GraceCalibrator(TRAINED, TARGET, grace_records=5000, method="robust")
    alerts = run(cal, s, ent, ts)
    after = np.arange(s.size) >= 5000
    assert alerts[:5000].mean() > 0.9                   # the trained threshold was wrong: flags ~everything
    assert cal.threshold_ > TRAINED + 3                  # moved up to the new network's scores
    assert alerts[after].mean() <= 2 * TARGET            # within 2x the target after grace
    assert cal.cut_kind_ == "mad"                        # the trained threshold flagged most entities: not trusted


def _contaminated(rng, n=20_000, share=0.3, shift=4.0, attackers=2):
    s, ent, ts = benign(rng, n, shift=shift)
    attack = rng.random(n) < share
    s[attack] = shift + 6.0 + rng.gamma(2.0, 0.5, attack.sum())         # clearly above the benign bulk
    ent[attack] = [f"10.0.0.{99 + i}|6667/tcp" for i in rng.integers(0, attackers, attack.sum())]
    return s, ent, ts, attack


# trained threshold about right for the new network (the anchor path) and far too low (the MAD path)
@pytest.mark.parametrize("shift,trained,kind", [(0.0, 3.3, "trained"), (4.0, TRAINED, "mad")])
def test_contaminated_grace_robust_keeps_recall_plain_quantile_loses_it(shift, trained, kind):
    rng = np.random.default_rng(1)
    s, ent, ts, attack = _contaminated(rng, shift=shift)
    grace = 5000
    after = np.arange(s.size) >= grace
    assert 0.25 < attack[:grace].mean() < 0.35            # ~30% of the grace period is the attack
    res = {}
    for method in ("robust", "quantile"):
        cal = GraceCalibrator(trained, TARGET, grace_records=grace, method=method)
        a = run(cal, s, ent, ts)
        res[method] = (a[after & ~attack].mean(), a[after & attack].mean(), cal)
    fpr, recall, cal = res["robust"]
    assert fpr <= 2 * TARGET, fpr
    assert recall > 0.95, recall
    assert set(cal.trimmed_entities_) == {"10.0.0.99|6667/tcp", "10.0.0.100|6667/tcp"}
    assert cal.cut_kind_ == kind
    # the contrast: the plain grace quantile sits inside the attack's scores and loses most of it
    _fpr_q, recall_q, _ = res["quantile"]
    assert recall_q < 0.8, recall_q
    assert recall - recall_q > 0.2


def test_clean_grace_robust_equals_plain_quantile():
    rng = np.random.default_rng(2)
    s, ent, ts = benign(rng, 6000, shift=0.0)
    r = GraceCalibrator(TRAINED, TARGET, grace_records=6000, method="robust").update(s, ent, ts).finish_grace()
    q = GraceCalibrator(TRAINED, TARGET, grace_records=6000, method="quantile").update(s, ent, ts).finish_grace()
    assert r.trimmed_entities_ == []
    assert not r.undersized_                       # 6,000 >= 10 / 0.01
    small = GraceCalibrator(TRAINED, TARGET, grace_records=300).update(s[:300], ent[:300], ts[:300]).finish_grace()
    assert small.undersized_ and small.summary()["undersized"]
    assert r.threshold_ == pytest.approx(q.threshold_) == pytest.approx(conformal_quantile(s, TARGET))


def test_grace_by_event_time():
    rng = np.random.default_rng(3)
    s, ent, ts = benign(rng, 20_000, rate=10.0)          # 2,000 s of traffic
    cal = GraceCalibrator(TRAINED, TARGET, grace_seconds=600.0, method="quantile")
    cal.update(s, ent, ts)
    n_grace = int((ts < ts[0] + 600.0).sum())
    assert cal.n_grace_ == n_grace and not cal.in_grace_
    assert cal.threshold_ == pytest.approx(conformal_quantile(s[:n_grace], TARGET))


def test_drift_moves_at_most_the_rate_and_stays_in_bounds():
    rng = np.random.default_rng(4)
    s, ent, ts = benign(rng, 5000, shift=0.0, rate=10.0)
    cal = GraceCalibrator(TRAINED, TARGET, grace_records=5000, method="robust", drift_rate=0.5, max_shift=6.0)
    cal.update(s, ent, ts).finish_grace()
    start, scale = cal.threshold_, cal.scale_
    lo, hi = cal.bounds_
    assert lo < start < hi and hi - lo == pytest.approx(12.0 * scale)
    # the network's benign scores slowly rise; one hour of traffic at a time
    t, prev = float(ts[-1]), start
    path = []
    for hour in range(1, 13):
        s2 = 0.5 * hour + rng.gamma(2.0, 0.5, 3600)
        e2 = np.array([f"10.0.0.{i}|53/udp" for i in rng.integers(0, 40, 3600)], dtype=object)
        t2 = t + np.sort(rng.uniform(0, 3600, 3600))
        t = float(t2[-1])
        for lo_i in range(0, 3600, 300):                 # 5-minute windows
            cal.update(s2[lo_i:lo_i + 300], e2[lo_i:lo_i + 300], t2[lo_i:lo_i + 300])
            assert abs(cal.threshold_ - prev) <= 0.5 * scale * (300 / 3600) * 1.5 + 1e-9
            prev = cal.threshold_
        path.append(cal.threshold_)
    assert path[0] > start                               # it follows the rise
    assert all(b >= a - 1e-12 for a, b in zip(path, path[1:]))
    assert path[-1] == pytest.approx(hi)                 # and stops at the bound
    assert lo <= min(path) and max(path) <= hi


def test_drift_ignores_an_attack_that_starts_after_grace():
    rng = np.random.default_rng(5)
    s, ent, ts = benign(rng, 5000, shift=0.0, rate=10.0)
    cal = GraceCalibrator(TRAINED, TARGET, grace_records=5000, method="robust", drift_rate=0.5)
    cal.update(s, ent, ts).finish_grace()
    start = cal.threshold_
    t = float(ts[-1])
    for _ in range(24):  # a day: benign as before + a loud attacker, 5-min windows
        b, be, bt = benign(rng, 300, shift=0.0, t0=t, rate=1.0)
        att = 12.0 + rng.gamma(2.0, 0.5, 300)
        s2 = np.r_[b, att]
        e2 = np.r_[be, np.full(300, "10.9.9.9|23/tcp", dtype=object)]
        t2 = np.r_[bt, np.sort(rng.uniform(t, t + 300, 300))]
        o = np.argsort(t2)
        assert cal.alerts(att).mean() > 0.99
        cal.update(s2[o], e2[o], t2[o])
        t += 300
    assert cal.threshold_ < start + 0.5 * cal.scale_     # the attack's records did not lift it


def test_state_round_trip_is_json_and_resumes_identically():
    rng = np.random.default_rng(6)
    s, ent, ts, _ = _contaminated(rng, n=12_000)
    a = GraceCalibrator(TRAINED, TARGET, grace_records=5000, method="robust")
    a.update(s[:3000], ent[:3000], ts[:3000])              # mid-grace
    b = GraceCalibrator.from_state(json.loads(json.dumps(a.state())))
    assert b.in_grace_ and b.grace_seen_ == 3000
    for c in (a, b):
        c.update(s[3000:8000], ent[3000:8000], ts[3000:8000])
    assert not a.in_grace_ and a.threshold_ == b.threshold_ and a.trimmed_entities_ == b.trimmed_entities_
    c = GraceCalibrator.from_state(json.loads(json.dumps(a.state())))   # after grace, with drift state
    for x in (a, c):
        x.update(s[8000:], ent[8000:], ts[8000:])
    assert a.threshold_ == c.threshold_ and a.state() == c.state()


def test_trained_method_never_moves():
    rng = np.random.default_rng(7)
    s, ent, ts = benign(rng, 8000)
    cal = GraceCalibrator(TRAINED, TARGET, grace_records=1000, method="trained")
    run(cal, s, ent, ts)
    assert cal.threshold_ == TRAINED and not cal.in_grace_


@pytest.mark.parametrize("kw,msg", [
    ({"target_fpr": 0.0}, "target_fpr"), ({"target_fpr": 1.5}, "target_fpr"),
    ({"grace_records": None, "grace_seconds": None}, "grace_records or grace_seconds"),
    ({"grace_records": 0}, "grace_records"), ({"grace_seconds": -5}, "grace_seconds"),
    ({"method": "magic"}, "'magic'"), ({"max_trim": 1.0}, "max_trim"), ({"max_shift": 0}, "max_shift"),
    ({"drift_rate": -1}, "drift_rate"), ({"trained_threshold": float("nan")}, "trained_threshold"),
])
def test_bad_constructor_values_are_quoted(kw, msg):
    args = {"trained_threshold": TRAINED, "target_fpr": TARGET, "grace_records": 100}
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        GraceCalibrator(**args)


def test_grace_seconds_needs_timestamps():
    cal = GraceCalibrator(TRAINED, TARGET, grace_seconds=60.0)
    with pytest.raises(ValueError, match="ts"):
        cal.update(np.ones(3), None, None)


# -- graphsentry score --grace ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [("5000", (5000, None)), ("30m", (None, 1800.0)), ("2h", (None, 7200.0)),
                                       ("900s", (None, 900.0)), ("1.5d", (None, 129600.0))])
def test_parse_grace(text, want):
    from detector.cli_score import parse_grace

    assert parse_grace(text) == want


@pytest.mark.parametrize("text", ["0", "-5", "30x", "m", "0s", ""])
def test_parse_grace_refuses(text):
    from detector.cli_score import parse_grace

    with pytest.raises(ValueError, match="--grace"):
        parse_grace(text)


def test_apply_grace_alerts_in_event_time_with_trained_then_deployed():
    import pyarrow as pa

    from detector.cli_score import apply_grace
    from detector.scoring import scores_schema

    rng = np.random.default_rng(8)
    s, ent, ts = benign(rng, 6000, rate=2.0)              # 3,000 s, trained threshold far too low
    perm = rng.permutation(s.size)                          # the input is not in time order
    s[perm[:10]] = np.nan                                   # unscored records never alert
    out = pa.table({"row": pa.array(np.arange(s.size)), "uid": pa.nulls(s.size, pa.string()),
                    "ts": pa.array((ts[perm] * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
                    "score": pa.array(s[perm], mask=np.isnan(s[perm])), "alert": pa.array(np.zeros(s.size, bool)),
                    "top_technique": pa.nulls(s.size, pa.string()), "reason": pa.nulls(s.size, pa.string())},
                   schema=scores_schema())
    cal = GraceCalibrator(TRAINED, TARGET, grace_seconds=900.0, method="robust")
    got = apply_grace(out, ent[perm], cal, window=60.0).column("alert").to_numpy(zero_copy_only=False)
    t_in = ts[perm]
    grace = t_in < ts[0] + 900.0
    finite = np.isfinite(s[perm])
    assert got[grace & finite].mean() > 0.9               # grace: the trained threshold decided
    assert got[~grace & finite].mean() <= 2 * TARGET       # after: the deployed one
    assert not got[~finite].any()
    assert cal.n_grace_ == int((grace & finite).sum())


@pytest.mark.slow
def test_score_cli_grace_end_to_end(samples, tmp_path, capsys):
    """`graphsentry train` then `graphsentry score --grace` on the bundled Stratosphere samples."""
    import pyarrow.parquet as pq

    from training.cli import main

    train_in = samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    test_in = samples / "stratosphere" / "010-zeek-mixed.conn.log.labeled"
    if not (train_in.exists() and test_in.exists()):
        pytest.skip("no bundled Stratosphere samples")
    model = tmp_path / "model"
    assert main(["train", "--data", str(train_in), "--out", str(model), "--epochs", "1", "--window", "30m",
                 "--no-progress", "--hidden", "16", "--objective", "contrastive", "--benign-only"]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(model), str(test_in), "--out", str(tmp_path / "plain.parquet")]) == 0
    assert main(["score", "--model", str(model), str(test_in), "--out", str(tmp_path / "g.parquet"),
                 "--grace", "300"]) == 0
    text = capsys.readouterr().out
    assert "threshold: trained" in text and "deployed" in text and "after a grace period of 300 records" in text
    plain, g = pq.read_table(tmp_path / "plain.parquet"), pq.read_table(tmp_path / "g.parquet")
    assert g.num_rows == plain.num_rows and g.column("row").equals(plain.column("row"))
    assert g.column("score").equals(plain.column("score"))   # scores unchanged, only the decision moves
    # the earliest 300 scored records keep the trained threshold's decision
    sc = g.column("score").to_numpy(zero_copy_only=False)
    ts = g.column("ts").cast("int64").to_numpy()
    ok = np.flatnonzero(np.isfinite(sc))
    first = ok[np.lexsort((ok, ts[ok]))][:300]
    a_plain = plain.column("alert").to_numpy(zero_copy_only=False)
    a_g = g.column("alert").to_numpy(zero_copy_only=False)
    assert np.array_equal(a_plain[first], a_g[first])

"""The default sweep (training/defaults_sweep.py): the choice rule and one split end to end on the samples."""
import json

from training import defaults_sweep as ds


def _rep(split, cands):
    res = {}
    for k, (auprc, ep, fpr) in cands.items():
        res[k] = {"auprc": auprc, "grace": {"episode_recall": ep, "fpr": fpr}}
    return {"split": split, "results": res}


def test_choose_ranks_by_the_mean_of_operating_term_and_auprc_then_the_worst_split():
    reps = [_rep("a", {"x": (0.9, 0.5, 0.01), "y": (0.5, 1.0, 0.01), "z": (0.6, 1.0, 0.01)}),
            _rep("b", {"x": (0.9, 1.0, 0.01), "y": (0.4, 1.0, 0.01), "z": (0.3, 1.0, 0.01)})]
    # per split (operating term + AUPRC) / 2: x 0.70, 0.95 -> 0.825; y 0.75, 0.70 and z 0.80, 0.65 tie at
    # 0.725, and y's worst split (0.70) beats z's (0.65)
    rows = ds.choose(reps)["ranking"]
    assert [r["candidate"] for r in rows] == ["x", "y", "z"]
    assert abs(rows[0]["score"] - 0.825) < 1e-9 and abs(rows[1]["worst_score"] - 0.70) < 1e-9
    # an FPR above twice the target halves that split's operating term
    reps[0]["results"]["y"]["grace"]["fpr"] = 0.05
    assert [r["candidate"] for r in ds.choose(reps)["ranking"]] == ["x", "z", "y"]


def test_choose_without_attacks_counts_the_fpr_only():
    reps = [_rep("honeypot", {"x": (None, None, 0.001), "y": (None, None, 0.3)})]
    rows = {r["candidate"]: r for r in ds.choose(reps)["ranking"]}
    assert rows["x"]["operating"] == 1.0 and rows["y"]["operating"] == 0.5 and rows["x"]["mean_auprc"] is None


def test_one_split_end_to_end_on_the_samples(samples, tmp_path, monkeypatch):
    from training import generalise as g

    monkeypatch.setattr(g, "DATA", samples)
    out = tmp_path / "sweep"
    assert ds.main(["--out", str(out), "--splits", "stratosphere/010*", "--max-train", "2500", "--max-test", "1200",
                    "--objectives", "contrastive/gradnorm"]) == 0
    (split,) = [json.loads(p.read_text()) for p in (out / "splits").glob("*.json")]
    # every detector input x detector of one encoder; fusion only on inputs ending in raw
    assert len(split["results"]) == 10
    for r in split["results"].values():
        assert r["n_episodes"] > 0 and 0.0 <= r["fpr"] <= 1.0 and r["grace"]["grace_records"] == 600
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["choice"]["ranking"]) == 10
    assert "| 1 |" in (out / "report.md").read_text()

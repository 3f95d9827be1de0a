"""eval_suites seeds: ours against the raw IsolationForest over seed<N>/ report folders."""
import json

from training.eval_suites import seeds


def _report(path, ours, base):
    path.mkdir(parents=True)
    res = {"ours": {"auprc": ours[0], "macro_f1": ours[1]}, "iforest_raw": {"auprc": base[0], "macro_f1": base[1]}}
    (path / "report.json").write_text(json.dumps({"results": res, "protocol": {}}))


def test_seeds_table_counts_wins_per_split(tmp_path):
    _report(tmp_path / "seed0" / "a", (0.9, 0.8), (0.5, 0.9))
    _report(tmp_path / "seed1" / "a", (0.4, 0.95), (0.5, 0.9))
    _report(tmp_path / "seed1" / "b" / "fold", (0.7, None), (0.6, 0.5))
    (tmp_path / "seedx").mkdir()  # not a seed folder: ignored
    (tmp_path / "seed0" / "other").mkdir()
    (tmp_path / "seed0" / "other" / "report.json").write_text(json.dumps({"summary": 1}))  # another area's report
    lines = seeds(tmp_path).splitlines()
    assert len(lines) == 4
    a = next(x for x in lines if x.startswith("| a |"))
    assert "| 0,1 |" in a and "0.900 / 0.400" in a and a.endswith("| 1/2 | 1/2 |")
    b = next(x for x in lines if x.startswith("| b/fold |"))
    assert "n/a" in b and b.endswith("| 1/1 | 0/1 |")
    assert seeds(tmp_path / "empty") == "(no seed reports)\n"

"""Leave-one-network-out benchmark (training/generalise/): split builder and a tiny end-to-end run."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from training import generalise as g


def test_select_patterns():
    specs = [g.SplitSpec(n, n.split("/")[0], n, [], []) for n in
             ("iot23/CTU-Malware-Capture-8-1", "iot23/CTU-Honeypot-Capture-4-1", "stratosphere/008-zeek-mixed",
              "luflow/later-days", "cicids2017/DDoS")]
    assert [s.name for s in g.select(specs, "stratosphere,luflow")] == ["stratosphere/008-zeek-mixed",
                                                                      "luflow/later-days"]
    assert [s.name for s in g.select(specs, "iot23/*Malware*")] == ["iot23/CTU-Malware-Capture-8-1"]
    assert len(g.select(specs, None)) == 5


def test_luflow_cut_takes_the_first_gap_of_three_days():
    d = [dt.date(2020, 7, 8), dt.date(2020, 7, 9), dt.date(2020, 7, 11), dt.date(2020, 7, 13),
         dt.date(2020, 12, 16), dt.date(2020, 12, 18), dt.date(2020, 12, 22), dt.date(2020, 12, 24)]
    # 07-13 -> 12-16 is the first run of >= 3 days without data (07-11 -> 07-13 has only one)
    assert g.luflow_cut(d) == 4
    assert g.luflow_cut([dt.date(2020, 1, 1), dt.date(2020, 1, 3)]) is None


def test_stride_is_time_ordered_and_even():
    ts = pa.array(np.arange(1000)[::-1] * 1_000_000, pa.timestamp("us", tz="UTC"))
    t = pa.table({"row": pa.array(np.arange(1000), pa.int64()), "ts": ts})
    s, info = g.stride(t, 100)
    v = s.column("ts").cast(pa.int64()).to_numpy() // 1_000_000
    assert s.num_rows == 100 and info["rows_in"] == 1000 and info["rows_kept"] == 100
    assert (np.diff(v) == 10).all() and v[0] == 0            # every 10th record of the sorted table
    assert s.column("row").to_pylist() == list(range(100))   # renumbered
    same, info = g.stride(t, 0)
    assert same.num_rows == 1000 and info["method"] == "all"


def _zeek_specs(shared_data: Path):
    specs = [s for s in g.split_specs(shared_data / "flows") if s.group in ("iot23", "stratosphere")]
    if not specs:
        pytest.skip("no Zeek captures under shared data")
    return specs


@pytest.mark.shared_data
def test_zeek_split_holds_the_network_out(shared_data):
    specs = _zeek_specs(shared_data)
    every = {f for s in specs for f in s.test_files}
    for s in specs:
        assert set(s.test_files).isdisjoint(s.train_files), s.name
        assert set(s.train_files) == every - set(s.test_files), s.name  # one generic model on all the others
    for s in specs[:3] + specs[-2:]:
        sp = g.build(s, 0, 0)
        host = g.local_host(sp.test)
        assert host is not None and host not in g.ips(sp.train), (s.name, host)
        assert sp.sampling["held_out_host_in_training"] is False
        assert sp.train.num_rows + sp.test.num_rows == sum(g.read_file(f).num_rows
                                                           for f in s.train_files + s.test_files)


@pytest.mark.shared_data
@pytest.mark.slow
def test_luflow_split_is_time_ordered_with_a_gap(shared_data):
    spec = next((s for s in g.split_specs(shared_data / "flows") if s.group == "luflow"), None)
    if spec is None:
        pytest.skip("no LUFlow days under shared data")
    assert max(spec.train_files) < min(spec.test_files)        # file names are dates
    assert set(spec.train_files).isdisjoint(spec.test_files)
    sp = g.build(spec, 3000, 3000)
    gap = g.ts_seconds(sp.test).min() - g.ts_seconds(sp.train).max()
    assert gap >= 3 * 86400
    assert sp.train.num_rows == 3000 and sp.test.num_rows == 3000
    assert (np.diff(g.ts_seconds(sp.train)) >= 0).all()


@pytest.mark.shared_data
def test_cicids_family_out_of_training(shared_data):
    specs = [s for s in g.split_specs(shared_data / "flows") if s.group == "cicids2017"]
    if not specs:
        pytest.skip("no CIC-IDS2017 sample under shared data")
    s = next(x for x in specs if x.family == "SSH-Patator")
    assert s.test_files[1] not in s.train_files
    sp = g.build(s, 0, 0)
    att_tr = set(a for a in sp.train.column("attack").to_pylist() if a)
    att_te = set(a for a in sp.test.column("attack").to_pylist() if a)
    assert "SSH-Patator" not in att_tr and att_te == {"SSH-Patator"}
    lab_tr = sp.train.column("label").to_numpy(zero_copy_only=False)
    lab_te = sp.test.column("label").to_numpy(zero_copy_only=False)
    assert g.ts_seconds(sp.train)[lab_tr == 0].max() < g.ts_seconds(sp.test)[lab_te == 0].min()


@pytest.mark.slow
def test_end_to_end_on_the_samples(samples, tmp_path):
    out = tmp_path / "gen"
    rc = g.main(["--data", str(samples), "--splits", "stratosphere/010*", "--out", str(out), "--epochs", "1",
                 "--max-train", "2500", "--max-test", "1200"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["commit"] is None or len(rep["commit"]) == 40
    assert rep["runs"][0]["caps"] == {"max_train": 2500, "max_test": 1200,
                                      "sampling": "even stride over the time-sorted records (never random rows)"}
    (split,) = rep["splits"]
    assert split["split"] == "stratosphere/010-zeek-mixed" and "error" not in split
    assert "010-zeek-mixed.conn.log.labeled" not in split["train_files"]
    assert split["protocol"]["test_records"] == 1200
    assert set(split["results"]) == set(g.METHODS)
    for m, r in split["results"].items():
        for k in ("auroc", "auprc", "recall", "fpr", "threshold", "n_episodes", "n_detected", "episode_recall",
                  "ttfa_median_s"):
            assert k in r, (m, k)
        assert r["n_episodes"] > 0 and 0.0 <= r["fpr"] <= 1.0
        ag = r["after_grace"]   # grace = the earliest records of the test (at least 1,000, at most half)
        assert ag["grace_records"] == 600 and ag["method"] == "robust"
        assert 0.0 <= ag["fpr"] <= 1.0 and 0 <= ag["n_detected"] <= ag["n_episodes"]
    assert split["verdict"]["ours_goal_grace"] in (True, False, None)
    assert set(rep["worst_split"]) == set(g.METHODS)
    assert split["verdict"]["auprc_winner"] in g.METHODS
    md = (out / "report.md").read_text()
    assert "Worst split" in md and "stratosphere/010-zeek-mixed" in md and "after grace" in md

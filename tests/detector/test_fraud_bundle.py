"""FraudBundle: save/load round trip gives identical scores; config kind; stream scorer contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detector.bundle import load_bundle
from detector.fraud.bundle import FraudBundle
from detector.model_files import ModelDirError, write_manifest
from detector.fraud.model import FraudModel, FraudModelConfig
from ingest.fraud.data import read_transactions, tumbling
from ingest.fraud.graph import HeteroGraphBuilder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def table(samples):
    return read_transactions([str(samples / "fdh" / "fdh-transactions-2018-04-01-to-21-customers-mod20.parquet")])


def _bundle(table) -> FraudBundle:
    torch.manual_seed(3)
    model = FraudModel(FraudModelConfig(hidden=16)).eval()
    b = HeteroGraphBuilder()
    feats = [b.transform(w.table) for w in tumbling(table.slice(0, 3000), 86400)]
    model.fit_normalizer(np.concatenate([f.edge for f in feats]), np.concatenate([f.cust_x for f in feats]),
                         np.concatenate([f.term_x for f in feats]))
    cfg = {"window_s": 86400.0, "label_delay_s": 7 * 86400.0, "threshold": 0.5}
    return FraudBundle(model=model, config=cfg, builder_state=b.state_dict())


def _score_all(bundle, table, **kw):
    sc = bundle.stream_scorer(**kw)
    outs = [sc.score_window(w) for w in tumbling(table, 86400)]
    return np.concatenate([o.rows for o in outs]), np.concatenate([o.scores for o in outs]), outs


def test_save_load_round_trip_identical_scores(table, tmp_path):
    b = _bundle(table)
    b.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["kind"] == "transactions" and cfg["model"]["hidden"] == 16
    loaded = FraudBundle.load(tmp_path / "m")
    r1, s1, outs = _score_all(b, table)
    r2, s2, _ = _score_all(loaded, table)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    assert sorted(r1.tolist()) == list(range(table.num_rows))       # every record scored once
    o = outs[3]
    assert len(o.rows) == len(o.scores) == len(o.alerts) == len(o.top_technique)
    assert np.array_equal(o.alerts, o.scores >= 0.5)
    assert len(o.node_scores) == len(o.node_key)


def test_saved_history_resumes_only_after_its_end(table, tmp_path):
    b = _bundle(table)
    b.save(tmp_path / "m")
    loaded = FraudBundle.load(tmp_path / "m")
    # the stream starts before the saved history ends: "auto" starts from empty history
    _, s_auto, _ = _score_all(loaded, table)
    _, s_fresh, _ = _score_all(loaded, table, resume_state=False)
    np.testing.assert_array_equal(s_auto, s_fresh)
    # continuing after the saved history uses it (different from starting cold)
    rest = table.slice(3000)
    sc_hist = loaded.stream_scorer(resume_state=True)
    sc_cold = loaded.stream_scorer(resume_state=False)
    w = next(iter(tumbling(rest, 86400)))
    assert not np.array_equal(sc_hist.score_window(w).scores, sc_cold.score_window(w).scores)


def test_wrong_kind_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "flows"}))
    with pytest.raises(ModelDirError, match="no manifest.json"):  # checked before anything is read
        FraudBundle.load(tmp_path)
    write_manifest(tmp_path)
    with pytest.raises(ValueError, match="transactions"):
        FraudBundle.load(tmp_path)


def test_manifest_covers_the_bundle_and_refuses_changes(table, tmp_path):
    """Every file of the saved bundle is listed; a changed, missing or extra file is refused by name."""
    import shutil

    d = _bundle(table).save(tmp_path / "m")
    listed = json.loads((d / "manifest.json").read_text())["files"]
    assert sorted(listed) == ["builder_state.npz", "config.json", "weights.pt"]
    assert load_bundle(d).kind == "transactions"
    for name, damage in (("builder_state.npz", lambda p: p.write_bytes(p.read_bytes()[:-10])),
                         ("weights.pt", lambda p: p.unlink()),
                         ("config.json", lambda p: p.write_text(p.read_text().replace("0.5", "0.25")))):
        copy = tmp_path / f"c-{name}"
        shutil.copytree(d, copy)
        damage(copy / name)
        with pytest.raises(ModelDirError, match=name.replace(".", r"\.")):
            FraudBundle.load(copy)
    extra = tmp_path / "extra"
    shutil.copytree(d, extra)
    (extra / "notes.txt").write_text("x")
    with pytest.raises(ModelDirError, match="notes.txt is not part of the saved model"):
        load_bundle(extra)


def test_truncated_builder_state_behind_a_matching_manifest_is_refused(table, tmp_path):
    """A broken file that the manifest agrees with (rewritten after the damage) still fails at load, by name."""
    d = _bundle(table).save(tmp_path / "m")
    (d / "builder_state.npz").write_bytes((d / "builder_state.npz").read_bytes()[:200])
    write_manifest(d)
    with pytest.raises(ModelDirError, match="builder_state.npz is not a readable builder state"):
        FraudBundle.load(d)


def test_score_file_keeps_every_record_and_flags_late_ones(table, tmp_path):
    """One output row per input record in input order; a record beyond the lateness gets a reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from detector.fraud import score

    _bundle(table).save(tmp_path / "m")
    part = table.slice(0, 2000)
    late = part.slice(5, 1)                                   # an early record re-sent at the end
    inp = pa.concat_tables([part, late]).drop_columns(["row"])
    pq.write_table(inp, tmp_path / "in.parquet")
    res = score(str(tmp_path / "m"), [str(tmp_path / "in.parquet")], str(tmp_path / "out.parquet"))
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.num_rows == 2001 and out["row"].to_pylist() == list(range(2001))
    assert out["tx_id"].to_pylist() == inp["tx_id"].to_pylist()
    assert res["late"] == 1 and res["scored"] == 2000
    assert out["score"][2000].as_py() is None and "late" in out["reason"][2000].as_py()
    assert out["score"].null_count == 1 and out["reason"].null_count == 2000

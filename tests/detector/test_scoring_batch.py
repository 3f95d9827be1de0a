"""Batched scoring (StreamScorer.score_windows) gives the same scores as one window at a time.

The graph encoder runs once per group on the union of its graphs (STGNN.embed_many), so scores equal
the one-at-a-time ones up to float rounding (np.allclose), not bit for bit; rows, keys, knowledge
techniques and window bounds are identical.
"""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from detector.scoring import score_table
from training.pretrain import TrainConfig, make_windows, train_bundle

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "stratosphere" / "full"
TRAIN = SAMPLES / "008-zeek-mixed.conn.log.labeled.gz"
TEST = SAMPLES / "010-zeek-mixed.conn.log.labeled.gz"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _read(path: Path) -> pa.Table:
    from ingest.readers import open_inputs

    return pa.Table.from_batches(list(open_inputs([str(path)])))


@pytest.fixture(scope="module")
def real():
    if not (TRAIN.is_file() and TEST.is_file()):
        pytest.skip("stratosphere samples not present")
    bundle = train_bundle([_read(TRAIN)], TrainConfig(epochs=1, hidden=16, seed=0, benign_only=True, objective="contrastive",
                                                      detector="iforest"), progress=False)
    return bundle, _read(TEST)


def _one_by_one(bundle, windows):
    sc = bundle.stream_scorer()
    return sc, [sc.score_window(w) for w in windows]


RTOL, ATOL = 1e-5, 1e-6
# An isolation forest's score is a step function of the embedding: a flow whose embedding moved by float
# rounding across one split point of one tree changes its score by one leaf (~1e-3). Such flows must stay rare.
MAX_STEPPED, MAX_STEP = 0.005, 0.01


def _assert_scores_close(x: np.ndarray, y: np.ndarray) -> None:
    close = np.isclose(x, y, rtol=RTOL, atol=ATOL)
    assert close.mean() >= 1 - MAX_STEPPED, f"{(~close).sum()} of {close.size} flows differ"
    assert np.abs(x - y).max(initial=0.0) < MAX_STEP


def _assert_same(a, b):
    assert len(a) == len(b)
    _assert_scores_close(np.concatenate([x.scores for x in a]), np.concatenate([y.scores for y in b]))
    for x, y in zip(a, b):
        assert np.array_equal(x.rows, y.rows)
        # alerts agree except for a score within rounding of the threshold, or one that stepped
        clear = ~np.isclose(x.scores, x.threshold, rtol=RTOL, atol=ATOL) & np.isclose(x.scores, y.scores, rtol=RTOL, atol=ATOL)
        assert np.array_equal(x.alerts[clear], y.alerts[clear])
        assert x.top_technique == y.top_technique
        assert np.abs(x.node_scores - y.node_scores).max(initial=0.0) < MAX_STEP
        assert x.node_key == y.node_key
        assert (x.window_start, x.window_end) == (y.window_start, y.window_end)


def test_batched_scores_match_one_window_at_a_time(real):
    bundle, table = real
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    assert len(windows) > 100
    ref_sc, ref = _one_by_one(bundle, windows)
    sc = bundle.stream_scorer()
    got = sc.score_windows(windows)
    _assert_same(ref, got)
    # the temporal state ends where the one-at-a-time path left it
    last = windows[-1]
    _assert_scores_close(ref_sc.score_window(last).scores, sc.score_window(last).scores)


def test_batched_in_groups_like_daemon_pushes(real):
    bundle, table = real
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    _, ref = _one_by_one(bundle, windows)
    sc = bundle.stream_scorer()
    sc.BATCH_RECORDS = 50  # several internal groups as well
    got = []
    rng = np.random.default_rng(0)
    i = 0
    while i < len(windows):
        k = int(rng.integers(1, 40))
        got += sc.score_windows(windows[i:i + k])
        i += k
    _assert_same(ref, got)


def test_score_table_matches_per_window_path(real):
    bundle, table = real
    out = score_table(bundle, table)
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    _, ref = _one_by_one(bundle, windows)
    rows = np.concatenate([w.rows for w in ref])
    scores = np.concatenate([w.scores for w in ref])
    pos = {r: i for i, r in enumerate(out.column("row").to_pylist())}
    got = out.column("score").to_numpy(zero_copy_only=False)
    _assert_scores_close(got[[pos[r] for r in rows.tolist()]], scores)
    assert out.column("reason").null_count == out.num_rows


def test_score_windows_empty_and_errors(real):
    from ingest.schema import FLOW_SCHEMA
    from ingest.windows import Window

    bundle, _ = real
    sc = bundle.stream_scorer()
    assert sc.score_windows([]) == []
    res = sc.score_windows([Window(0.0, 60.0, FLOW_SCHEMA.empty_table())])
    assert len(res) == 1 and len(res[0].scores) == 0


@pytest.mark.parametrize("detector,cls", [("knn", "KNNDetector"), ("fusion", "FusionDetector")])
def test_batched_knn_scores_close(real, detector, cls):
    """kNN (searched on the group's FactoredRows) and the fusion: batched = one window at a time."""
    _, table = real
    bundle = train_bundle([_read(TRAIN)], TrainConfig(epochs=1, hidden=16, seed=0, benign_only=True, objective="contrastive",
                                                      detector=detector, flow_parts="src,dst,edge,raw"), progress=False)
    assert type(bundle.detector).__name__ == cls
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    _, ref = _one_by_one(bundle, windows)
    _assert_same(ref, bundle.stream_scorer().score_windows(windows))


def test_zeek_windows_get_knowledge_blocks_without_fallback(real):
    """Zeek has no syn_count/rst_count (all-null int columns): the featurizer takes them as they are
    (no retry, no zero block), batched and one window at a time alike."""
    bundle, table = real
    assert table.column("syn_count").null_count == table.num_rows
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))[:40]
    batched = bundle.pipeline.stream()
    alone = bundle.pipeline.stream()
    got = batched.build_many(windows)
    for w, (d, kb) in zip(windows, got):
        d1, kb1 = alone.build(w)
        assert kb is not None and kb1 is not None
        assert torch.equal(d.edge_attr, d1.edge_attr) and torch.equal(d.x, d1.x)
    assert batched.knowledge_errors == 0 and alone.knowledge_errors == 0


def test_knowledge_failure_gives_counted_zero_block(real):
    """A window the featurizer cannot take (no src_ip) gets a zero block, counted; the others keep theirs."""
    bundle, table = real
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))[:3]
    stream = bundle.pipeline.stream()
    bad = windows[1]
    data = stream.builder.build(bad)
    data, kb = stream._attach_kb(type(bad)(bad.start, bad.end, bad.table.drop_columns(["src_ip"])), data)
    assert kb is None and stream.knowledge_errors == 1
    assert data.edge_attr.size(1) == bundle.model.config.edge_in and not data.edge_attr[:, -5:].any()


def test_batched_non_temporal_ablation_matches(real):
    """temporal=False (no GRU memory): the batched encoder's flows are the window-by-window ones too."""
    _, table = real
    bundle = train_bundle([_read(TRAIN)], TrainConfig(epochs=1, hidden=16, seed=0, benign_only=True, objective="contrastive",
                                                      detector="iforest", temporal=False), progress=False)
    assert bundle.model.memory is None
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    _, ref = _one_by_one(bundle, windows)
    sc = bundle.stream_scorer()
    sc.BATCH_RECORDS = 200  # several groups
    _assert_same(ref, sc.score_windows(windows))


def test_fast_iforest_equals_sklearn_on_real_embeddings(real):
    """The bundle's detector (fitted by the training pipeline) on real flow embeddings: the fast tree
    walk of IForestDetector gives sklearn's score_samples (tests/detector/test_fast_scoring.py)."""
    bundle, table = real
    det = bundle.detector
    assert type(det).__name__ == "IForestDetector"
    sc = bundle.stream_scorer()
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    flows = np.concatenate([sc.embed_window(w)[3].numpy() for w in windows if w.table.num_rows])
    assert len(flows) > 500
    ref = -det.model_.score_samples(det._scale(flows))
    np.testing.assert_allclose(det.decision_function(flows), ref, rtol=0, atol=1e-12)


def test_overlapped_groups_equal_groups_in_turn(real):
    """score_windows builds group i + 1 in a worker thread while it scores group i: bit for bit the
    results of building and scoring the groups one after the other, and the torch thread count is
    left as it was."""
    from detector.pipeline import window_groups
    from ingest.windows import Window

    bundle, table = real
    windows = make_windows(table, float(bundle.window.get("size", 60.0)))
    bad = windows[7]
    i = bad.table.schema.get_field_index("ts")
    broken = bad.table.set_column(i, "ts", pa.array(["x"] * bad.table.num_rows))  # fails to build
    windows[7] = Window(bad.start, bad.end, broken)
    threads = torch.get_num_threads()
    over = bundle.stream_scorer()
    over.BATCH_RECORDS = 300
    got = over.score_windows(windows, return_exceptions=True)
    assert torch.get_num_threads() == threads
    seq = bundle.stream_scorer()
    ref = []
    groups = list(window_groups(windows, 300))
    assert len(groups) > 3
    for g in groups:
        ref += seq._score_built(g, seq._build_group(g))
    assert len(got) == len(ref) == len(windows)
    assert isinstance(got[7], BaseException) and isinstance(ref[7], BaseException)
    for k, (x, y) in enumerate(zip(ref, got)):
        if k == 7:
            continue
        assert np.array_equal(x.rows, y.rows) and np.array_equal(x.scores, y.scores)
        assert x.top_technique == y.top_technique and x.node_key == y.node_key
    serial = bundle.stream_scorer()
    serial.BATCH_RECORDS, serial.OVERLAP = 300, False  # the switch the benchmark uses: one thread, same results
    for x, y in zip(got, serial.score_windows(windows, return_exceptions=True)):
        assert isinstance(y, BaseException) if isinstance(x, BaseException) else np.array_equal(x.scores, y.scores)
    with pytest.raises(Exception):
        bundle.stream_scorer().score_windows(windows)


def test_factored_knowledge_blocks_are_the_joined_ones(real):
    """build_many(factored_kb=True) hands the edge knowledge block as shared rows + index: joined again
    it is the block build_many appends; scores with it equal the joined path's up to float rounding."""
    from detector.models.stgnn import full_edge_attr

    bundle, table = real
    windows = [w for w in make_windows(table, float(bundle.window.get("size", 60.0))) if w.table.num_rows][:40]
    joined = bundle.pipeline.stream().build_many(windows)
    factored = bundle.pipeline.stream().build_many(windows, factored_kb=True)
    assert all(getattr(d, "edge_kb", None) is not None for d, _ in factored)
    assert all(d.edge_kb[0] is factored[0][0].edge_kb[0] for d, _ in factored)  # one set of rows per group
    assert len(factored[0][0].edge_kb[0]) < sum(d.edge_index.size(1) for d, _ in factored)  # rows repeat
    for (a, ka), (b, kb) in zip(joined, factored):
        assert torch.equal(full_edge_attr(b), a.edge_attr) and torch.equal(a.x, b.x)
        assert ka.top_technique() == kb.top_technique()
    on, off = bundle.stream_scorer(), bundle.stream_scorer()
    off.FACTORED_KB = False
    _assert_same(off.score_windows(windows), on.score_windows(windows))

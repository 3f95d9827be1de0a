"""``StreamScorer.score_window``'s fast path equals the plain one bit for bit: the knowledge block gathered
straight into the model inputs (``kb.edge`` left unbuilt), the flow embedding handed to the fusion
detector as per-flow blocks (``STGNN.embed_rows``), the technique channel and top techniques read from
the shared distinct rows; and :func:`detector.scoring.warm_up` leaves the serving scorer's state alone."""
import gc

import numpy as np
import pytest
import torch

from detector.scoring import StreamScorer, warm_up
from detector.tensors import FactoredRows
from training.pretrain import TrainConfig, make_windows, train_bundle
from training.synthetic import synthetic_flows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle():
    table = synthetic_flows(n_benign=1500, n_attack=150, duration=1200, seed=5)
    b = train_bundle([table], TrainConfig(epochs=1, hidden=16, seed=0), progress=False)
    assert type(b.detector).__name__ == "FusionDetector" and b.technique is not None  # the default model's parts
    return b


@pytest.fixture(scope="module")
def windows():
    table = synthetic_flows(n_benign=900, n_attack=90, duration=600, seed=9, t0=1.7e9 + 5000)
    return make_windows(table, 60.0)


class _Plain(StreamScorer):
    """The reference: the dense [E, D] flow matrix to the detector, the block joined from ``kb.edge``, the
    technique channel on the full block."""

    FACTORED_DETECTORS = ()

    def __init__(self, bundle):
        super().__init__(bundle)
        stream = self.stream
        attach = stream._attach_kb

        def plain_attach(window, data, kb=None):
            kb = stream.kf.transform(window.table, data.edge_index.numpy(), int(data.num_nodes))
            kb.edge = kb.edge  # built, and no shared rows: every reader takes the full [E, K] block
            assert kb._rows is None
            return attach(window, data, kb)

        stream._attach_kb = plain_attach


def _same(a, b):
    assert np.array_equal(a.scores, b.scores)  # bit for bit
    assert np.array_equal(a.alerts, b.alerts) and np.array_equal(a.rows, b.rows)
    assert list(a.top_technique) == list(b.top_technique)
    assert np.array_equal(a.node_scores, b.node_scores) and a.node_key == b.node_key
    assert np.array_equal(a.technique_scores, b.technique_scores)
    assert np.array_equal(a.technique_raised, b.technique_raised)


def test_fast_path_equals_plain_path_bit_for_bit(bundle, windows):
    fast, plain = bundle.stream_scorer(), _Plain(bundle)
    n_flagged = 0
    for w in windows:
        a, b = fast.score_window(w), plain.score_window(w)
        _same(a, b)
        n_flagged += int(a.alerts.sum())
        for k in np.flatnonzero(a.alerts)[:5].tolist():  # explanations from the unbuilt block are the same
            assert a.explain(k) == b.explain(k)
    assert n_flagged > 0


def test_embed_rows_equals_embed(bundle, windows):
    stream = bundle.pipeline.stream()
    data, _kb = stream.build(windows[0])
    model = bundle.model
    with torch.no_grad():
        _z, _h, flow = model.embed(data, update_state=False)
        z, rows = model.embed_rows(data, update_state=False)
    assert isinstance(rows, FactoredRows) and all(i is None for _a, i in rows.blocks)
    assert np.array_equal(rows.dense(), flow.numpy())
    assert rows.blocks[-1][0].shape[1] == bundle.detector.raw_dim  # the fusion's forest input, handed over whole


def test_attach_kb_joins_the_block_and_leaves_it_unbuilt(bundle, windows):
    stream = bundle.pipeline.stream()
    w = windows[1]
    graph = stream.builder.build(w)
    flow_in, node_in = graph.edge_attr.float().clone(), graph.x.float().clone()
    data, kb = stream._attach_kb(w, graph)
    assert kb._edge is None  # nothing [E, K]-sized built for the window
    ref = stream.kf.transform(w.table, data.edge_index.numpy(), int(data.num_nodes))
    assert torch.equal(data.edge_attr, torch.cat([flow_in, torch.from_numpy(ref.edge)], 1))
    assert torch.equal(data.x, torch.cat([node_in, torch.from_numpy(ref.node)], 1))
    for k in (0, len(ref.edge) // 2, len(ref.edge) - 1):
        assert np.array_equal(kb.edge_row(k), ref.edge[k])
    assert kb.top_technique_array().tolist() == ref.top_technique_array().tolist()


def test_warm_up_leaves_the_serving_scorer_alone(bundle, windows):
    sc, ref = bundle.stream_scorer(), bundle.stream_scorer()
    first = sc.score_window(windows[0])
    assert sc.stream.ids.to_dict() != ref.stream.ids.to_dict()  # scoring moved the state (so the check below bites)
    ref.score_window(windows[0])
    ids, windows_seen = sc.stream.ids.to_dict(), sc.windows
    memory = {k: v.clone() for k, v in sc.model.memory.named_buffers()}  # node states, owners, last seen
    try:
        seconds = warm_up(sc)
        assert seconds > 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
    assert sc.stream.ids.to_dict() == ids and sc.windows == windows_seen
    assert memory and all(np.array_equal(v.numpy(), memory[k].numpy(), equal_nan=True)
                          for k, v in sc.model.memory.named_buffers())
    for w in windows[1:4]:  # and it scores on as a scorer that was never warmed up
        _same(sc.score_window(w), ref.score_window(w))
    assert first.window_start == windows[0].start


def test_warm_up_of_a_plugin_scorer_never_raises():
    class Plugin:
        def score_window(self, window):  # pragma: no cover - not called
            raise AssertionError

    try:
        assert warm_up(Plugin(), freeze_heap=False) >= 0
    finally:
        gc.unfreeze()

"""The fast paths of scoring: IForestDetector's tree walks over its node arrays (the compiled walk of
``detector.iforest_walk``, or its NumPy walk) equal sklearn's ``score_samples``, also after a round trip
through ``state`` / ``from_state``;
``STGNN.embed_many`` (encoder on the union of a group's graphs) equals ``embed`` window by window."""
import pickle

import numpy as np
import pytest
import torch
from sklearn.ensemble import IsolationForest
from torch_geometric.data import Data

from detector import iforest_walk
from detector.detectors import IForestDetector
from detector.models import STGNN, ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- isolation forest ------------------------------------------------------------------------------

# (a detector fitted by the training pipeline, on real flow embeddings: tests/detector/test_scoring_batch.py)

@pytest.fixture(params=[True, False], ids=["compiled", "numpy_walk"])
def walk_kind(request, monkeypatch):
    """Run the test with the compiled walk and with the NumPy walk over the node arrays."""
    if request.param and not iforest_walk.available():
        pytest.skip("numba is not installed: no compiled walk")
    monkeypatch.setattr(IForestDetector, "COMPILED", request.param)
    return request.param


def _sklearn_decision(det: IForestDetector, X: np.ndarray) -> np.ndarray:
    """The reference: scikit-learn's own scoring of the forest the detector was fitted with."""
    return -det.model_.score_samples(det._scale(X))


@pytest.mark.parametrize("n_features,max_samples,n_estimators", [(3, 256, 100), (40, 64, 17), (192, "auto", 30)])
def test_fast_iforest_equals_sklearn_score_samples(n_features, max_samples, n_estimators, monkeypatch, walk_kind):
    rng = np.random.default_rng(n_features)
    train = rng.normal(size=(1200, n_features))
    X = np.vstack([rng.normal(size=(2500, n_features)), rng.normal(loc=3.0, size=(100, n_features)),
                   train[:50]])  # unseen, shifted, and training rows
    det = IForestDetector(n_estimators=n_estimators, max_samples=max_samples).fit(train)
    assert (det._forest()[0] == "complete") == walk_kind  # the walk under test is the one used
    ref = _sklearn_decision(det, X)
    np.testing.assert_allclose(det.decision_function(X), ref, rtol=0, atol=1e-12)
    monkeypatch.setattr(IForestDetector, "SCORE_BLOCK", 7)  # many blocks, a ragged last one
    for threads in (1, 2, 3):  # one thread per row range; the count does not change a score
        monkeypatch.setattr(IForestDetector, "SCORE_THREADS", threads)
        np.testing.assert_allclose(det.decision_function(X), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(det.decision_function(X[:1]), ref[:1], rtol=0, atol=1e-12)
    # training scores (fit uses the fast path too) are sklearn's as well
    np.testing.assert_allclose(det.decision_scores_, _sklearn_decision(det, train), rtol=0, atol=1e-12)


def test_fast_iforest_feature_subsampling_forest(walk_kind):
    """A forest fitted with max_features < 1 (trees see a column subset) reads the input's own columns."""
    rng = np.random.default_rng(3)
    train, X = rng.normal(size=(800, 12)), rng.normal(scale=1.5, size=(900, 12))
    det = IForestDetector(n_estimators=20).fit(train)
    det._set_forest(IsolationForest(n_estimators=20, max_samples=128, max_features=0.5, random_state=0).fit(
        det._scale(train)))
    assert len(det.model_.estimators_features_[0]) == 6  # the per-tree column subsets are folded in
    np.testing.assert_allclose(det.decision_function(X), _sklearn_decision(det, X), rtol=0, atol=1e-12)
    back = IForestDetector.from_state(*det.state())
    np.testing.assert_array_equal(back.decision_function(X), det.decision_function(X))


def test_fast_iforest_state_pickle_refit_and_public_arrays(walk_kind):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 6))
    det = IForestDetector(n_estimators=25).fit(X)
    s = det.decision_function(X)
    assert "_forest_cache" in det.__dict__
    # a loaded detector (node arrays only, no sklearn forest) scores bit for bit as the fitted one
    params, arrays = det.state()
    back = IForestDetector.from_state(params, arrays)
    assert not hasattr(back, "model_") and "_forest_cache" not in back.__dict__
    np.testing.assert_array_equal(back.decision_function(X), s)
    np.testing.assert_array_equal(back.decision_scores_, det.decision_scores_)
    # pickled in memory: the walk layout is not carried, the scores are the same
    again = pickle.loads(pickle.dumps(det))
    assert "_forest_cache" not in again.__dict__
    np.testing.assert_array_equal(again.decision_function(X), s)
    # refitting drops the layout of the previous forest
    det.fit(X[::-1] * 2.0)
    np.testing.assert_allclose(det.decision_function(X), _sklearn_decision(det, X), rtol=0, atol=1e-12)
    # a forest without sklearn's private per-tree arrays: the same node values from the public tree arrays
    m = det.model_
    ref = {k: v.copy() for k, v in det.nodes_.items()}
    del m._decision_path_lengths, m._average_path_length_per_tree
    det._set_forest(m)
    for k in ref:
        np.testing.assert_array_equal(det.nodes_[k], ref[k])


def test_complete_forest_layout_and_deep_trees(monkeypatch):
    """Shallow leaves become pass-through chains; a tree deeper than MAX_DEPTH takes the NumPy walk."""
    if not iforest_walk.available():
        pytest.skip("numba is not installed: no compiled walk")
    rng = np.random.default_rng(11)
    train = np.vstack([rng.normal(size=(40, 4)), np.zeros((20, 4))])  # duplicates end in shallow leaves
    det = IForestDetector(n_estimators=10, max_samples=60).fit(train)
    kind, (feat, thr, value) = det._forest()
    trees = [e.tree_ for e in det.model_.estimators_]
    depth = max(t.max_depth for t in trees)
    assert kind == "complete" and list(det.tree_depths_) == [t.max_depth for t in trees]
    assert feat.shape == thr.shape == (10, 2 ** depth - 1) and value.shape == (10, 2 ** depth)
    assert any(t.max_depth < depth or (t.children_left == -1).sum() < 2 ** depth for t in trees)
    assert np.isinf(thr).any()  # pass-through slots exist and are used
    X = np.vstack([rng.normal(scale=2.0, size=(500, 4)), np.zeros((5, 4))])
    np.testing.assert_allclose(det.decision_function(X), _sklearn_decision(det, X), rtol=0, atol=1e-12)
    monkeypatch.setattr(iforest_walk, "MAX_DEPTH", depth - 1)  # now "too deep": the NumPy walk
    det.__dict__.pop("_forest_cache", None)
    assert det._forest()[0] == "nodes"
    np.testing.assert_allclose(det.decision_function(X), _sklearn_decision(det, X), rtol=0, atol=1e-12)


def _broken(nodes: dict, name: str, fn) -> dict:
    out = {k: v.copy() for k, v in nodes.items()}
    out[name] = fn(out[name])
    return out


def test_check_nodes_refuses_arrays_that_are_not_a_forest():
    """Node arrays from a file are checked before a walk reads them (the compiled walk has no bounds checks)."""
    det = IForestDetector(n_estimators=3, max_samples=32).fit(np.random.default_rng(0).normal(size=(100, 4)))
    nodes = det.nodes_
    inner = np.flatnonzero(nodes["children_left"] != -1)
    first_leaf = int(np.flatnonzero(nodes["children_left"] == -1)[0])

    def cycle(a):
        a[inner[1]] = 0  # a child pointing back at the root
        return a

    def two_parents(a):
        a[0] = a[inner[1]]  # the root's left child is also another node's left child
        return a

    cases = [
        (_broken(nodes, "feature", lambda a: np.where(a == a[0], 4, a)), "column outside 0..3"),
        (_broken(nodes, "children_left", cycle), "not after its parent"),
        (_broken(nodes, "children_left", two_parents), "exactly one parent"),
        (_broken(nodes, "children_right", lambda a: np.where(np.arange(len(a)) == first_leaf, 1, a)), "one child"),
        (_broken(nodes, "offsets", lambda a: a[:-1]), "offsets"),
        (_broken(nodes, "threshold", lambda a: a[:-1]), "'threshold' has"),
        (_broken(nodes, "value", lambda a: a.astype(np.int64)), "'value' must be 1-D float"),
        ({k: v for k, v in nodes.items() if k != "children_right"}, "missing: children_right"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            iforest_walk.check_nodes(bad, 4)
    checked, depths = iforest_walk.check_nodes(nodes, 4)
    assert len(depths) == 3 and (depths >= 1).all()


# --- batched encoder -------------------------------------------------------------------------------

def _window(seed: int, n: int, e: int, gid_pool: int = 25, t: float = 0.0) -> Data:
    g = torch.Generator().manual_seed(seed)
    gid = torch.randperm(gid_pool, generator=g)[:n] + 1000  # endpoints recur across windows
    return Data(x=torch.randn(n, 3, generator=g), edge_index=torch.randint(0, n, (2, e), generator=g),
                edge_attr=torch.randn(e, 6, generator=g), edge_dt_window=torch.rand(e, generator=g) * 60,
                edge_dt_prev=torch.rand(e, generator=g) * 100 - 10, node_gid=gid, num_nodes=n, window_end=t)


def _windows(k: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [_window(seed * 1000 + i, int(rng.integers(1, 15)), int(rng.integers(1, 40)), t=60.0 * i)
            for i in range(k)]


@pytest.mark.parametrize("temporal", [True, False])
@pytest.mark.parametrize("parts", ["src,dst,edge", "dst,edge,raw"])
def test_embed_many_equals_embed_window_by_window(temporal, parts):
    torch.manual_seed(0)
    m = STGNN(ModelConfig(node_in=3, edge_in=6, hidden=16, temporal=temporal, flow_parts=parts,
                          memory_capacity=32)).eval()
    ref_m = STGNN(m.config).eval()
    ref_m.load_state_dict(m.state_dict())
    windows = _windows(30)
    with torch.no_grad():
        # two consecutive groups: the temporal state carries from the first into the second
        got = torch.cat([m.embed_many(windows[:12]), m.embed_many(windows[12:])])
        ref = torch.cat([ref_m.embed(w)[2] for w in windows])
    assert got.shape == ref.shape == (sum(w.edge_index.size(1) for w in windows), m.edge_emb_dim)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
    if temporal:
        assert torch.allclose(m.memory.state, ref_m.memory.state, rtol=1e-5, atol=1e-6)
        assert torch.equal(m.memory.owner, ref_m.memory.owner)
        assert torch.equal(m.memory.last_seen.nan_to_num(-1), ref_m.memory.last_seen.nan_to_num(-1))
    assert m.embed_many([]).shape == (0, m.edge_emb_dim)


@pytest.mark.parametrize("parts", ["src,dst,edge", "dst,edge,raw", "edge,src"])
def test_embed_many_factored_holds_the_same_rows(parts):
    """factored=True: the endpoint blocks stay once per node (a node index per flow); same rows, same state."""
    torch.manual_seed(0)
    m = STGNN(ModelConfig(node_in=3, edge_in=6, hidden=16, flow_parts=parts, memory_capacity=32)).eval()
    ref_m = STGNN(m.config).eval()
    ref_m.load_state_dict(m.state_dict())
    windows = _windows(10)
    with torch.no_grad():
        got, ref = m.embed_many(windows, factored=True), ref_m.embed_many(windows)
    gathered = [i is not None for _a, i in got.blocks]
    assert gathered == [p in ("src", "dst") for p in parts.split(",")]
    n_nodes = sum(int(w.num_nodes) for w in windows)
    assert all(a.shape[0] == n_nodes for a, i in got.blocks if i is not None)  # one row per node, not per flow
    assert got.shape == tuple(ref.shape)
    np.testing.assert_array_equal(np.asarray(got), ref.numpy())
    assert torch.equal(m.memory.state, ref_m.memory.state)
    assert m.embed_many([], factored=True).shape == (0, m.edge_emb_dim)


def test_embed_many_rejects_bad_windows_before_touching_the_state():
    torch.manual_seed(0)
    m = STGNN(ModelConfig(node_in=3, edge_in=6, hidden=16)).eval()
    windows = _windows(4)
    bad = windows[2].clone()
    bad.node_gid = bad.node_gid[:-1]
    with torch.no_grad(), pytest.raises(ValueError, match="node_gid"):
        m.embed_many([windows[0], windows[1], bad])
    assert (m.memory.owner == -1).all() and not m.memory.state.any()


# --- factored knowledge block ----------------------------------------------------------------------

def _factored(windows: list, k: int = 4, distinct: int = 5, seed: int = 1) -> tuple[list, list]:
    """The same windows twice: with ``k`` knowledge columns joined into ``edge_attr`` and factored as
    ``edge_kb = (shared rows, index)`` (``distinct`` rows shared by all windows, as one group's blocks)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.rand(distinct, k, generator=g)
    joined, factored = [], []
    for w in windows:
        idx = torch.randint(0, distinct, (w.edge_index.size(1),), generator=g)
        a, b = w.clone(), w.clone()
        a.edge_attr = torch.cat([w.edge_attr, rows[idx]], 1)
        b.edge_kb = (rows, idx)
        joined.append(a)
        factored.append(b)
    return joined, factored


@pytest.mark.parametrize("use_time", [True, False])
@pytest.mark.parametrize("parts", ["src,dst,edge", "dst,edge,raw"])
def test_factored_knowledge_block_equals_joined(use_time, parts):
    """``edge_kb`` (each distinct row projected once, then gathered) gives the joined input's embeddings."""
    from detector.models.stgnn import full_edge_attr

    torch.manual_seed(0)
    cfg = ModelConfig(node_in=3, edge_in=10, hidden=16, flow_parts=parts, memory_capacity=32, use_time=use_time)
    m, ref_m = STGNN(cfg).eval(), STGNN(cfg).eval()
    ref_m.load_state_dict(m.state_dict())
    joined, factored = _factored(_windows(12))
    for a, b in zip(joined, factored):
        assert torch.equal(full_edge_attr(b), a.edge_attr) and full_edge_attr(a) is a.edge_attr
    with torch.no_grad():
        got, ref = m.embed_many(factored), ref_m.embed_many(joined)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
        # one window alone (the scorer's fallback) joins the block itself
        assert torch.allclose(m.embed(factored[0], update_state=False)[2],
                              ref_m.embed(joined[0], update_state=False)[2], rtol=1e-5, atol=1e-6)
        # windows whose rows are not shared (a window built alone) are joined, not mis-projected
        mixed = factored[:3] + [joined[3]]
        assert torch.allclose(m.embed_many(mixed, update_state=False),
                              ref_m.embed_many(joined[:4], update_state=False), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        m.encoder(factored[0].x, factored[0].edge_index, factored[0].edge_attr[:, :5], factored[0].edge_dt_window,
                  factored[0].edge_dt_prev, edge_kb=factored[0].edge_kb)

"""KnowledgeFeaturizer on hand-made windows with the bundled artifact."""
from __future__ import annotations

import numpy as np
import pytest

from knowledge.features import KnowledgeBlock, KnowledgeFeaturizer
from tests.knowledge.flowkit import T0, attack, background, many, table


@pytest.fixture(scope="module")
def kf():
    return KnowledgeFeaturizer.default()


def _ip_graph(t):
    ips = sorted(set(t.column("src_ip").to_pylist()) | set(t.column("dst_ip").to_pylist()))
    idx = {ip: i for i, ip in enumerate(ips)}
    ei = np.array([[idx[x] for x in t.column("src_ip").to_pylist()], [idx[x] for x in t.column("dst_ip").to_pylist()]])
    return ei, len(ips), idx


def _run(kf, rows):
    t = table(rows)
    ei, n, idx = _ip_graph(t)
    return kf.transform(t, ei, n), idx, np.array([r.get("attack") == "x" for r in rows])


def _tech_cols(kb, ids):
    return [kb.names.index(f"tech:{t}") for t in ids if f"tech:{t}" in kb.names]


def test_default_artifact_loads_and_is_small(kf):
    assert kf.hash and len(kf.hash) == 64 and kf.version
    assert len(kf.predicates) >= 30 and len(kf.tech_ids) >= 40 and len(kf.tactics) == 14
    assert kf.width == len(kf.predicates) + len(kf.tech_ids) + 14
    for t in ("T1046", "T1595", "T1498", "T1499", "T1110", "T1071", "T1571"):
        assert t in kf.tech_ids, t


def test_block_shape_names_and_range(kf):
    kb, idx, _ = _run(kf, background())
    assert kb.edge.shape == (6, kf.width) and kb.node.shape == (len(idx), kf.width)
    assert kb.edge.dtype == np.float32 and kb.names == kf.names and len(set(kb.names)) == len(kb.names)
    assert np.isfinite(kb.edge).all() and kb.edge.min() >= 0 and kb.edge.max() <= 1
    # ordinary traffic: no technique reaches the top-technique floor
    assert kb.top_technique() == [None] * 6


SCENARIOS = {
    "scan": (attack(many(40, lambda i: dict(src_ip="10.0.0.66", dst_ip=f"10.0.2.{i}", dst_port=8000 + i % 3,
                                             conn_state="S0", src_bytes=0, dst_bytes=0, dst_pkts=0))),
             {"T1046", "T1595", "T1595.001", "T1595.002", "T1018"}),
    "flood": (attack(many(2000, lambda i: dict(ts=T0 + i * 0.005, src_ip=f"10.2.{i % 50}.1", conn_state="S0",
                                                src_bytes=0, dst_bytes=0, dst_pkts=0, src_pkts=1))),
              {"T1498", "T1498.001", "T1499", "T1499.001", "T1499.002"}),
    "reflection": (attack(many(1500, lambda i: dict(ts=T0 + i / 150, proto="udp", src_port=123, dst_port=40000 + i % 100,
                                                     src_bytes=4000, dst_bytes=0, dst_pkts=0))),
                   {"T1498", "T1498.002"}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_attack_windows_score_their_techniques(kf, name):
    rows, expected = SCENARIOS[name]
    kb, _, target = _run(kf, background() + rows)
    s = kb.edge[:, kb.tech_slice]
    exp_cols = [j - kb.n_pred for j in _tech_cols(kb, expected)]
    # on attack rows, the expected family is among the 5 best techniques and well above benign rows
    best_expected = s[target][:, exp_cols].max(axis=1)
    fifth = np.sort(s[target], axis=1)[:, -5]
    assert (best_expected >= fifth).all()
    assert best_expected.min() > 0.5 > s[~target][:, exp_cols].max()


def test_explain_edge_and_node(kf):
    rows, _ = SCENARIOS["reflection"]
    kb, idx, target = _run(kf, background() + rows)
    e = int(np.flatnonzero(target)[0])
    ex = kf.explain(kb, edge=e)
    top = ex["techniques"][0]
    assert top["id"].startswith("T1498") and top["score"] > 0.5
    assert {"name", "value", "confidence"} <= set(top["predicates"][0])
    assert any(p["name"] in ("amplification", "reflection_source_port") for p in top["predicates"])
    assert top["refs"]["attack"].startswith("https://attack.mitre.org/techniques/T1498")
    nx_ = kf.explain(kb, node=idx["10.0.0.1"])  # the reflection victim
    assert nx_["techniques"] and nx_["techniques"][0]["id"].startswith("T149")
    with pytest.raises(ValueError, match="exactly one"):
        kf.explain(kb)


def test_d3fend_refs_present_for_network_technique(kf):
    info = kf.technique_info("T1498.001") or kf.technique_info("T1048")
    assert info and info["d3fend"] and info["d3fend"][0]["url"].startswith("https://d3fend.mitre.org/")


def test_empty_window(kf):
    kb = kf.transform(table(background()).slice(0, 0), np.zeros((2, 0), dtype=np.int64), 0)
    assert kb.edge.shape == (0, kf.width) and kb.top_technique() == []


@pytest.mark.parametrize("rows", [0, 1, 40, 20000])
def test_sparse_and_dense_propagation_agree(kf, rows):
    rng = np.random.default_rng(0)
    a = ((rng.random((rows, len(kf.predicates))) > 0.85) * rng.random((rows, len(kf.predicates)))).astype(np.float32)
    np.testing.assert_allclose(kf._log_keep_of(a), a @ kf.log_keep, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- several windows in one call

@pytest.mark.parametrize("small_rows", [0, 100, 10 ** 9])  # either way of taking the signature/tactic max, or both
def test_transform_many_equals_transform_per_window(kf, small_rows, monkeypatch):
    from tests.knowledge.test_predicates import _windows_mix

    monkeypatch.setattr(type(kf), "SMALL_ROWS", small_rows)

    ws = _windows_mix()
    graphs = [_ip_graph(w) if w.num_rows else (np.zeros((2, 0), np.int64), 0, {}) for w in ws]
    # some windows without a graph (edge block only, node block of zeros)
    eis = [g[0] for g in graphs]
    nns = [g[1] for g in graphs]
    eis[5], nns[5] = None, None
    many_kb = kf.transform_many(ws, eis, nns)
    assert len(many_kb) == len(ws)
    for i, w in enumerate(ws):
        one = kf.transform(w, eis[i], nns[i])
        got = many_kb[i]
        # top technique from the shared rows (before `edge` exists) = from the materialized block
        ids = np.arange(w.num_rows)[::-1]
        assert got.top_technique() == KnowledgeBlock(one.edge, one.node, kf.names, one.n_pred, one.n_tech,
                                                     one.technique_ids).top_technique()
        assert got.top_technique(ids) == [one.top_technique()[k] for k in ids]
        assert np.array_equal(got.edge, one.edge), f"edge block of window {i} differs"
        assert np.array_equal(got.node, one.node), f"node block of window {i} differs"
        assert got.top_technique() == one.top_technique()
        assert got.edge.shape == (w.num_rows, kf.width) and got.names == kf.names


@pytest.mark.parametrize("small_rows", [0, 100, 10 ** 9])
def test_transform_many_matches_a_real_capture(kf, samples, small_rows, monkeypatch):
    """Zeek windows (conn_state, service, nulls in syn_count) from a real sample, 60 s windows."""
    monkeypatch.setattr(type(kf), "SMALL_ROWS", small_rows)
    from ingest.readers import open_inputs
    from ingest.windows import Tumbling, window_all

    path = samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    windows, _ = window_all(open_inputs([str(path)]), Tumbling(60.0), lateness=1e9)
    tables = [w.table for w in windows]
    assert len(tables) > 20
    graphs = [_ip_graph(t) for t in tables]
    got = kf.transform_many(tables, [g[0] for g in graphs], [g[1] for g in graphs])
    for t, g, kb in zip(tables, graphs, got):
        one = kf.transform(t, g[0], g[1])
        assert np.array_equal(kb.edge, one.edge) and np.array_equal(kb.node, one.node)


def test_transform_many_bad_graph_input(kf):
    t = table(background())
    ei, n, _ = _ip_graph(t)
    assert kf.transform_many([]) == []
    with pytest.raises(ValueError, match="tables but"):
        kf.transform_many([t, t], [ei], [n])
    kbs = kf.transform_many([t, t], [ei, ei + 100], [n, n])  # ids outside the second window's nodes
    assert np.array_equal(kbs[0].edge, kbs[1].edge)
    with pytest.raises(IndexError):
        kbs[1].node


def test_stacked_blocks_equal_the_windows_blocks_in_order(kf):
    """stack_edges/stack_nodes (one gather for a transform_many group) = concatenating each window's block."""
    from knowledge.features import stack_edges, stack_nodes
    from tests.knowledge.test_predicates import _windows_mix

    ws = [w for w in _windows_mix() if w.num_rows]
    graphs = [_ip_graph(w) for w in ws]
    kbs = kf.transform_many(ws, [g[0] for g in graphs], [g[1] for g in graphs])
    edge, node = stack_edges(kbs), stack_nodes(kbs)
    fresh = kf.transform_many(ws, [g[0] for g in graphs], [g[1] for g in graphs])  # blocks not yet materialized
    assert np.array_equal(edge, np.concatenate([kb.edge for kb in fresh]))
    assert np.array_equal(node, np.concatenate([kb.node for kb in fresh]))
    assert edge.dtype == node.dtype == np.float32
    # written in place into the right-hand columns of a wider array (as the pipeline joins them)
    wide = np.full((edge.shape[0], edge.shape[1] + 3), -1.0, dtype=np.float32)
    assert stack_edges(kbs, out=wide[:, 3:]) is not None and np.array_equal(wide[:, 3:], edge)
    assert (wide[:, :3] == -1).all()
    wide_n = np.zeros((node.shape[0], node.shape[1] + 2), dtype=np.float32)
    stack_nodes(kbs, out=wide_n[:, 2:])
    assert np.array_equal(wide_n[:, 2:], node)
    with pytest.raises(ValueError):
        stack_edges(kbs, out=wide[1:, 3:])
    # blocks of different calls, or a subset out of order: the plain concatenation
    mixed = [kbs[1], fresh[0]]
    assert np.array_equal(stack_nodes(mixed), np.concatenate([kbs[1].node, fresh[0].node]))
    assert np.array_equal(stack_edges(mixed), np.concatenate([kbs[1].edge, fresh[0].edge]))


def test_top_technique_array_equals_the_list(kf):
    from tests.knowledge.test_predicates import _windows_mix

    ws = [w for w in _windows_mix() if w.num_rows]
    graphs = [_ip_graph(w) for w in ws]
    for kb in kf.transform_many(ws, [g[0] for g in graphs], [g[1] for g in graphs]):
        arr = kb.top_technique_array()
        assert arr.dtype == object and arr.tolist() == kb.top_technique()
        alone = KnowledgeBlock(kb.edge, kb.node, kf.names, kb.n_pred, kb.n_tech, kb.technique_ids)
        assert alone.top_technique_array().tolist() == kb.top_technique()
    assert any(t is not None for kb in kf.transform_many(ws, [g[0] for g in graphs], [g[1] for g in graphs])
               for t in kb.top_technique())


# ---------------------------------------------------------------- compiled propagation = NumPy's, bit for bit

def _random_act(rng, rows: int, P: int) -> np.ndarray:
    """Sparse activations in [0, 1] with repeated rows, all-zero / all-one rows, exact 1s and tiny values."""
    a = ((rng.random((rows, P)) > 0.85) * rng.random((rows, P))).astype(np.float32)
    if rows:
        a[rng.random((rows, P)) > 0.97] = 1.0
        a[::5] = a[rng.integers(0, rows)]  # duplicates
        a[1::17] = 0.0
        a[2::19] = 1.0
        a[3::23, rng.integers(0, P)] = np.float32(1e-44)  # a * log_keep underflows to -0
        a[4::29, rng.integers(0, P)] = np.float32(1e-30)
    return a


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def _featurizer(kf, n_pred: int | None = None, context_factor: float | None = None) -> KnowledgeFeaturizer:
    spec = dict(kf.spec)
    if n_pred is not None:
        spec["predicates"] = kf.predicates[:n_pred]
    if context_factor is not None:
        spec["context_factor"] = context_factor
    return KnowledgeFeaturizer(spec, kf.manifest)


@pytest.mark.parametrize("rows", [0, 1, 2, 7, 8, 9, 64, 65, 3001])
@pytest.mark.parametrize("variant", ["default", "odd_predicates", "context_factor"])
def test_compiled_propagation_equals_numpy(kf, rows, variant):
    pytest.importorskip("numba")
    f = {"default": kf, "odd_predicates": _featurizer(kf, n_pred=len(kf.predicates) - 1),
         "context_factor": _featurizer(kf, context_factor=0.37)}[variant]
    P = len(f.predicates)
    assert (P % 2 == 1) == (variant == "odd_predicates")  # odd: rows hashed as 32-bit words
    a = _random_act(np.random.default_rng(rows), rows, P)
    ref = f._propagate_rows_numpy(a)
    assert f._compiled(a) is not None
    assert np.array_equal(_bits(f._propagate_rows(a)), _bits(ref))
    rows_, idx = f._propagate_compact(a)
    assert np.array_equal(_bits(rows_ if idx is None else rows_[idx]), _bits(ref))
    if rows > 64:
        assert idx is not None and len(rows_) < rows  # the duplicates were computed once


def test_compiled_dedup_is_exact(kf):
    """Rows that differ in one bit (or in the sign of a zero) stay apart; equal rows share one id."""
    pytest.importorskip("numba")
    from knowledge.features.kernels import _kernels

    rng = np.random.default_rng(3)
    a = _random_act(rng, 500, 8)
    a[10] = a[11]
    a[12] = a[11]
    a[12, 3] = np.nextafter(a[11, 3], np.float32(2))
    a[13] = 0.0
    a[14] = 0.0
    a[14, 0] = -0.0
    first, inv = _kernels()[0](a.view(np.uint64), kf._row_mult(4))
    assert np.array_equal(a[first][inv], a)
    assert inv[10] == inv[11] != inv[12] and inv[13] != inv[14]
    assert len(first) == len(np.unique(a.view(np.uint64), axis=0))
    assert (np.diff(first) > 0).all()  # ids in order of first occurrence


def test_non_finite_activations_take_the_numpy_path(kf):
    pytest.importorskip("numba")
    a = _random_act(np.random.default_rng(1), 100, len(kf.predicates))
    a[7, 2], a[9, 4] = np.inf, np.nan
    ref = kf._propagate_rows_numpy(a)
    assert np.isnan(ref[7]).any()  # inf * 0 in the dense product: NaN in the whole row
    assert np.array_equal(_bits(kf._propagate_rows(a)), _bits(ref))
    rows_, idx = kf._propagate_compact(a)
    assert np.array_equal(_bits(rows_ if idx is None else rows_[idx]), _bits(ref))


def test_transform_many_compiled_equals_numpy(kf, samples, monkeypatch):
    """Whole blocks (edges, nodes, top techniques) with and without the compiled kernels."""
    pytest.importorskip("numba")
    from ingest.readers import open_inputs
    from ingest.windows import Tumbling, window_all
    from tests.knowledge.test_predicates import _windows_mix

    path = samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    windows, _ = window_all(open_inputs([str(path)]), Tumbling(60.0), lateness=1e9)
    for ws in ([w.table for w in windows], [w for w in _windows_mix() if w.num_rows]):
        graphs = [_ip_graph(w) for w in ws]
        args = (ws, [g[0] for g in graphs], [g[1] for g in graphs])
        got = kf.transform_many(*args)
        monkeypatch.setattr(type(kf), "COMPILED", False)
        ref = kf.transform_many(*args)
        monkeypatch.setattr(type(kf), "COMPILED", True)
        for a, b in zip(got, ref):
            assert np.array_equal(_bits(a.edge), _bits(b.edge)) and np.array_equal(_bits(a.node), _bits(b.node))
            assert a.top_technique() == b.top_technique()

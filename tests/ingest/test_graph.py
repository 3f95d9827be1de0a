"""GraphBuilder and NodeIdMap: a known window checked exactly, stable ids, eviction, dt_prev."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pytest
import torch

from ingest.features import FlowPreprocessor
from ingest.graph import GraphBuilder, NodeIdMap, iter_window_graphs
from ingest.schema import FLOW_SCHEMA, conform
from ingest.windows import Sliding, Tumbling, Window


def flows(ts: Sequence[float], rows: Sequence[int] | None = None, **cols: Any) -> pa.Table:
    n = len(ts)
    data = {
        "row": pa.array(list(range(n)) if rows is None else list(rows), pa.int64()),
        "ts": pa.array([int(round(t * 1e6)) for t in ts], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }
    for name, values in cols.items():
        data[name] = pa.array(list(values), FLOW_SCHEMA.field(name).type)
    return conform(pa.table(data), FLOW_SCHEMA)


def known_window() -> Window:
    t = flows(
        [100, 105, 103, 110],
        rows=[10, 11, 12, 13],
        src_ip=["A", "A", "B", "A"],
        dst_ip=["B", "C", "A", "B"],
        src_port=[5000, 5001, 53, 5002],
        dst_port=[80, 22, 53, 80],
        proto=["tcp", "tcp", "udp", "tcp"],
        src_bytes=[100, 50, 7, 10],
        dst_bytes=[1000, 0, 9, 20],
        src_pkts=[2, 1, 1, 1],
        dst_pkts=[3, 0, 1, 1],
        label=[0, 1, None, 0],
    )
    return Window(start=100.0, end=160.0, table=t)


def test_known_window_graph_exact() -> None:
    win = known_window()
    pre = FlowPreprocessor().fit(win.table)
    g = GraphBuilder("ip", preprocessor=pre).build(win)
    g.validate(raise_on_error=True)
    assert g.node_key == ["A", "B", "C"]
    assert g.num_nodes == 3 and g.num_edges == 4
    assert g.edge_index.tolist() == [[0, 0, 1, 0], [1, 2, 0, 1]]
    assert g.edge_index.dtype == torch.long
    expected = np.log1p(
        np.array(
            [
                # out, in, dst peers, src peers, ports out, ports in, bytes sent, bytes recv, pkts sent, pkts recv
                [3, 1, 2, 1, 2, 1, 100 + 50 + 10 + 9, 1000 + 0 + 20 + 7, 2 + 1 + 1 + 1, 3 + 0 + 1 + 1],
                [1, 2, 1, 1, 1, 1, 7 + 1000 + 20, 9 + 100 + 10, 1 + 3 + 1, 1 + 2 + 1],
                [0, 1, 0, 1, 0, 1, 0, 50, 0, 1],
            ],
            dtype=np.float64,
        )
    ).astype(np.float32)
    assert g.x.dtype == torch.float32 and g.x.shape == (3, len(GraphBuilder.NODE_FEATURES))
    assert np.array_equal(g.x.numpy(), expected)
    assert np.array_equal(g.edge_attr.numpy(), pre.transform(win.table))
    assert g.edge_ts.dtype == torch.float64 and g.edge_ts.tolist() == [100.0, 105.0, 103.0, 110.0]
    assert g.edge_dt_window.dtype == torch.float32 and g.edge_dt_window.tolist() == [0.0, 5.0, 3.0, 10.0]
    # A's flows in time order: 100 (row 10), 105 (row 11), 110 (row 13); B's only flow is row 12.
    assert g.edge_dt_prev.tolist() == [-1.0, 5.0, -1.0, 5.0]
    assert g.edge_row.tolist() == [10, 11, 12, 13]
    assert g.edge_label.tolist() == [0, 1, -1, 0]
    assert g.node_gid.tolist() == [0, 1, 2]
    assert (g.window_start, g.window_end) == (100.0, 160.0)


def test_dt_prev_and_ids_carry_across_windows() -> None:
    b = GraphBuilder("ip")
    g1 = b.build(known_window())
    w2 = Window(160.0, 220.0, flows([170, 165], rows=[14, 15], src_ip=["A", "C"], dst_ip=["C", "A"]))
    g2 = b.build(w2)
    assert g2.node_key == ["A", "C"]
    assert g2.node_gid.tolist() == [g1.node_gid[0].item(), g1.node_gid[2].item()]  # same endpoints, same ids
    # row 14: A's previous flow was at 110 in window 1; row 15: C never originated a flow.
    assert g2.edge_dt_prev.tolist() == [60.0, -1.0]
    assert g2.edge_attr.shape == (2, 0)  # no preprocessor


def test_dt_prev_is_exact_with_sliding_windows() -> None:
    t = flows([10, 40, 50, 70], src_ip=["A"] * 4, dst_ip=["B"] * 4)
    b = GraphBuilder("ip")
    seen: dict[int, set[float]] = {}
    for win, g in iter_window_graphs([t], Sliding(60, 30), b, lateness=0):
        for r, d in zip(g.edge_row.tolist(), g.edge_dt_prev.tolist()):
            seen.setdefault(r, set()).add(d)
    # Each flow gets its true predecessor gap in every window it appears in.
    assert seen == {0: {-1.0}, 1: {30.0}, 2: {10.0}, 3: {20.0}}


def test_out_of_order_rows_in_window_keep_edge_order() -> None:
    win = Window(0.0, 60.0, flows([30, 10, 20], src_ip=["A"] * 3, dst_ip=["B", "C", "D"]))
    g = GraphBuilder().build(win)
    assert g.edge_row.tolist() == [0, 1, 2]  # edge i is row i
    assert g.edge_dt_prev.tolist() == [10.0, -1.0, 10.0]  # predecessor in event time


def test_ipport_and_as_modes() -> None:
    t = flows(
        [0, 1, 2],
        src_ip=["10.0.0.1", "2001:db8::1", "10.0.0.1"],
        src_port=[1234, 443, None],
        dst_ip=["10.0.0.2", "2001:db8::2", "10.0.0.2"],
        dst_port=[80, 8443, None],
    )
    g = GraphBuilder("ipport").build(Window(0.0, 60.0, t))
    assert g.node_key == ["10.0.0.1:1234", "[2001:db8::1]:443", "10.0.0.1", "10.0.0.2:80", "[2001:db8::2]:8443", "10.0.0.2"]
    assert g.edge_index.tolist() == [[0, 1, 2], [3, 4, 5]]
    lu = flows([0, 1], src_ip=["786", "4134"], dst_ip=["4134", "786"])
    g2 = GraphBuilder("as").build(Window(0.0, 60.0, lu))
    assert g2.node_key == ["786", "4134"] and g2.edge_index.tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="node_mode must be one of"):
        GraphBuilder("mac")


def test_node_id_map_lru_eviction_rule() -> None:
    m = NodeIdMap(capacity=2)
    assert m.lookup(["a", "b"])[0].tolist() == [0, 1]
    assert m.lookup(["a"])[0].tolist() == [0]  # a is now most recent
    assert m.lookup(["c"])[0].tolist() == [2]  # evicts b (least recently used)
    assert "b" not in m and m.get("a") == 0
    assert m.lookup(["b"])[0].tolist() == [3]  # b is back with a NEW id; ids are never reused
    assert m.evictions == 2 and len(m) == 2
    gids, slots = m.lookup(["c", "x", "y"])  # more than capacity in one call: overflow, none of them evicted
    assert gids.tolist() == [2, 4, 5] and m.overflows == 1 and len(m) == 3
    assert len(set(slots.tolist())) == 3
    m.lookup(["z"])  # shrinks back to capacity
    assert len(m) == 2 and "z" in m
    assert m.ids(["z", "z", "y"]).tolist() == [6, 6, 5]


def test_node_id_map_save_load(tmp_path) -> None:
    m = NodeIdMap(capacity=10)
    m.lookup(["a", "b", "c"])
    m.save(tmp_path / "ids.json")
    m2 = NodeIdMap.load(tmp_path / "ids.json")
    assert m2.lookup(["b", "d"])[0].tolist() == [1, 3]


def test_eviction_resets_temporal_state_and_ids() -> None:
    ids = NodeIdMap(capacity=2)
    b = GraphBuilder("ip", id_map=ids)
    g1 = b.build(Window(0.0, 60.0, flows([10], src_ip=["A"], dst_ip=["B"])))
    g2 = b.build(Window(60.0, 120.0, flows([70], rows=[1], src_ip=["C"], dst_ip=["D"])))  # evicts A and B
    g3 = b.build(Window(120.0, 180.0, flows([130], rows=[2], src_ip=["A"], dst_ip=["C"])))
    assert g1.node_gid.tolist() == [0, 1] and g2.node_gid.tolist() == [2, 3]
    assert g3.node_gid.tolist() == [4, 2]  # A got a new id; C kept its own
    assert g3.edge_dt_prev.tolist() == [-1.0]  # A's state was forgotten with its id
    # C's state survives: it was the source at 70.
    g4 = b.build(Window(180.0, 240.0, flows([200], rows=[3], src_ip=["C"], dst_ip=["A"])))
    assert g4.edge_dt_prev.tolist() == [130.0]


def test_larger_random_window_invariants() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    t = flows(
        np.sort(rng.uniform(0, 60, n)).tolist(),
        src_ip=[f"h{i}" for i in rng.integers(0, 300, n)],
        dst_ip=[f"h{i}" for i in rng.integers(0, 300, n)],
        dst_port=[int(p) for p in rng.integers(0, 100, n)],
        src_bytes=[int(v) for v in rng.integers(0, 1000, n)],
        dst_bytes=[int(v) for v in rng.integers(0, 1000, n)],
    )
    g = GraphBuilder().build(Window(0.0, 60.0, t))
    keys = np.array(g.node_key)
    ei = g.edge_index.numpy()
    assert (keys[ei[0]] == np.asarray(t.column("src_ip"))).all()
    assert (keys[ei[1]] == np.asarray(t.column("dst_ip"))).all()
    x = np.expm1(g.x.numpy().astype(np.float64))
    assert np.allclose(x[:, 0].sum(), n) and np.allclose(x[:, 1].sum(), n)
    total = np.asarray(t.column("src_bytes")).sum() + np.asarray(t.column("dst_bytes")).sum()
    assert np.isclose(x[:, 6].sum(), total, rtol=1e-5) and np.isclose(x[:, 7].sum(), total, rtol=1e-5)
    # distinct peers checked against a plain Python count for a few nodes
    for j in rng.integers(0, len(keys), 10):
        peers = {d for s, d in zip(ei[0], ei[1]) if s == j}
        assert round(x[j, 2]) == len(peers)


def test_iter_window_graphs_tumbling_covers_all_rows() -> None:
    t = flows([1, 61, 62, 130], src_ip=["a", "b", "a", "c"], dst_ip=["b", "a", "c", "a"])
    out = list(iter_window_graphs([t], Tumbling(60), GraphBuilder(), lateness=0))
    assert [g.edge_row.tolist() for _, g in out] == [[0], [1, 2], [3]]
    assert [(w.start, g.window_start) for w, g in out] == [(0.0, 0.0), (60.0, 60.0), (120.0, 120.0)]


@pytest.mark.parametrize("windower", [Tumbling(20), Sliding(30, 10)])
def test_build_many_equals_one_window_at_a_time(windower) -> None:
    rng = np.random.default_rng(1)
    n = 3000
    t = flows(
        np.sort(rng.uniform(0, 600, n)).tolist(),
        src_ip=[f"h{i}" for i in rng.integers(0, 60, n)],
        dst_ip=[f"h{i}" for i in rng.integers(0, 60, n)],
        src_port=[int(p) for p in rng.integers(1000, 1010, n)],
        dst_port=[int(p) for p in rng.integers(0, 30, n)],
        src_bytes=[int(v) for v in rng.integers(0, 1000, n)],
        label=[int(v) for v in rng.integers(0, 2, n)],
    )
    from ingest.windows import window_all

    wins, w = window_all(t.to_batches(max_chunksize=500), windower, lateness=0)
    assert w.stats.late == 0 and len(wins) > 20
    pre = FlowPreprocessor().fit(t)
    one = GraphBuilder("ipport", pre, NodeIdMap(capacity=100))  # small: evictions happen
    many = GraphBuilder("ipport", pre, NodeIdMap(capacity=100))
    seq = [one.build(x) for x in wins]
    bat = many.build_many(wins[:7]) + many.build_many(wins[7:])
    assert one.id_map.evictions > 0 and one.id_map.evictions == many.id_map.evictions
    for a, b in zip(seq, bat):
        assert a.node_key == b.node_key and a.num_nodes == b.num_nodes
        for name in ("x", "edge_index", "edge_attr", "edge_ts", "edge_dt_window", "edge_dt_prev", "edge_row", "edge_label", "node_gid"):
            assert torch.equal(a[name], b[name]), name
    assert any((g.edge_dt_prev > 0).any() for g in seq)


def test_fast_data_construction_matches_public_constructor() -> None:
    from torch_geometric.data import Data

    g = GraphBuilder().build(known_window())
    ref = Data(**{k: g[k] for k in g.keys()})
    assert sorted(g.keys()) == sorted(ref.keys())
    assert g.num_nodes == ref.num_nodes == 3 and g.num_edges == ref.num_edges == 4
    assert g.validate()
    moved = g.to("cpu")
    assert torch.equal(moved.edge_index, ref.edge_index) and moved.node_key == ref.node_key
    from torch_geometric.data import Batch

    b1, b2 = Batch.from_data_list([g, g]), Batch.from_data_list([ref, ref])
    assert torch.equal(b1.edge_index, b2.edge_index) and torch.equal(b1.edge_index[:, 4:], g.edge_index + 3)

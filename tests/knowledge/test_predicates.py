"""Every predicate: a hand-made window where it must fire and one where it must not."""
from __future__ import annotations

import numpy as np
import pytest

import pyarrow as pa

from knowledge.predicates import (PREDICATE_NAMES, PREDICATES, compute_predicates, compute_predicates_many,
                                  node_activations)
from knowledge.predicates.kernels import _group
from tests.knowledge.flowkit import T0, attack, background, flow, many, table

BG = background


def _S0(**kw):
    return dict(conn_state="S0", src_bytes=0, dst_bytes=0, src_pkts=1, dst_pkts=0, history="S", **kw)


CASES: dict[str, list[tuple[list[dict], list[dict]]]] = {
    "horizontal_scan": [(attack(many(25, lambda i: dict(src_ip="10.0.0.66", dst_ip=f"10.0.2.{i}", dst_port=445, **_S0()))),
                         BG() + many(3, lambda i: dict(dst_ip=f"10.0.2.{i}", dst_port=445)))],
    "vertical_scan": [(attack(many(25, lambda i: dict(src_ip="10.0.0.66", dst_port=1 + i, **_S0()))),
                       BG() + many(3, lambda i: dict(dst_port=8000 + i)))],
    "port_spread": [(attack(many(60, lambda i: dict(dst_ip=f"10.0.2.{i % 3}", dst_port=1000 + i, **_S0()))), BG())],
    "fan_out": [(attack(many(120, lambda i: dict(dst_ip=f"10.0.{i // 100}.{i % 100}", dst_port=443))),
                 BG() + many(10, lambda i: dict(dst_ip=f"10.0.3.{i}")))],
    "fan_in": [(attack(many(60, lambda i: dict(src_ip=f"10.1.0.{i}", dst_ip="10.0.0.2"))),
                BG() + many(5, lambda i: dict(src_ip=f"10.1.0.{i}", dst_ip="10.0.0.2")))],
    "failed_connection_ratio": [
        (attack(many(20, lambda i: dict(src_ip="10.0.0.66", ts=T0 + i, **_S0()))),
         BG() + many(20, lambda i: dict(src_ip="10.0.0.66", ts=T0 + i))),
        # no Zeek state: TCP attempts with no responder packets
        (attack(many(20, lambda i: dict(src_ip="10.0.0.66", conn_state=None, dst_pkts=0, dst_bytes=0, src_bytes=0))),
         [dict(r, conn_state=None) for r in BG()])],
    "syn_only": [(BG() + attack(many(3, lambda i: _S0(dst_ip=f"10.0.2.{i}"))), BG()),
                 (attack(many(3, lambda i: dict(conn_state=None, syn_count=1, dst_pkts=0, src_bytes=0, dst_bytes=0))),
                  [dict(r, conn_state=None) for r in BG()])],
    "rejected_connection": [(BG() + attack([flow(conn_state="REJ", src_bytes=0, dst_bytes=0, dst_pkts=1)]), BG()),
                            (attack([flow(conn_state=None, rst_count=1, src_bytes=0, dst_bytes=0)]),
                             [dict(r, conn_state=None) for r in BG()])],
    "zero_payload": [(BG() + attack([flow(src_bytes=0, dst_bytes=0)]), BG())],
    "small_packets": [(BG() + attack([flow(src_bytes=0, dst_bytes=0, src_pkts=2, dst_pkts=1)]), BG())],
    "flood": [(attack(many(2000, lambda i: dict(ts=T0 + i * 0.005, src_ip=f"10.2.{i % 50}.1", **_S0()))),
               BG() + many(30, lambda i: dict(ts=T0 + 2 * i, **_S0())))],
    "request_burst": [(attack(many(250, lambda i: dict(ts=T0 + i * 0.1))), BG() + many(10, lambda i: dict(ts=T0 + i)))],
    "high_packet_rate": [(BG() + attack([flow(src_pkts=4000, dst_pkts=1000, duration=1.0)]), BG())],
    "amplification": [(BG() + attack([flow(proto="udp", dst_ip="10.0.0.53", dst_port=53, src_bytes=60,
                                           dst_bytes=3000, src_pkts=1, dst_pkts=3)]), BG())],
    "reflection_source_port": [(BG() + attack([flow(proto="udp", src_port=123, dst_port=40000, src_bytes=4000,
                                                    dst_bytes=0, dst_pkts=0)]), BG())],
    "udp_volume": [(attack(many(1500, lambda i: dict(ts=T0 + i / 150, proto="udp", dst_port=9999))), BG())],
    "beaconing": [(BG() + attack(many(10, lambda i: dict(ts=T0 + 60 * i, dst_ip="10.9.9.9", dst_port=8443))),
                   BG() + many(10, lambda i: dict(ts=T0 + [0, 1, 51, 54, 174, 181, 381, 382, 390, 600][i],
                                                  dst_ip="10.9.9.9", dst_port=8443)))],
    "long_low_volume": [(BG() + attack([flow(duration=1200.0, src_bytes=500, dst_bytes=500)]),
                         BG() + [flow(duration=1200.0, src_bytes=10_000_000)])],
    "slow_sessions": [(BG() + attack(many(12, lambda i: dict(duration=60.0, src_bytes=300, dst_bytes=0))),
                       BG() + many(2, lambda i: dict(duration=60.0, src_bytes=300, dst_bytes=0)))],
    "large_outbound_transfer": [(BG() + attack([flow(src_bytes=20_000_000, dst_bytes=10_000)]),
                                 BG() + [flow(src_bytes=1000, dst_bytes=20_000_000)])],
    "outbound_asymmetry": [(BG() + attack([flow(src_bytes=100_000, dst_bytes=500)]), BG())],
    "large_inbound_transfer": [(BG() + attack([flow(src_bytes=1000, dst_bytes=10_000_000)]), BG())],
    "external_upload_volume": [(BG() + attack(many(5, lambda i: dict(dst_ip="8.8.4.4", src_bytes=20_000_000))),
                                BG() + many(5, lambda i: dict(dst_ip="10.0.4.4", src_bytes=20_000_000)))],
    "brute_force": [(BG() + attack(many(30, lambda i: dict(ts=T0 + 2 * i, dst_ip="10.0.0.9", dst_port=22, duration=2.0))),
                     BG() + many(3, lambda i: dict(ts=T0 + 2 * i, dst_ip="10.0.0.9", dst_port=22, duration=2.0)))],
    "password_spray": [(BG() + attack(many(25, lambda i: dict(dst_ip=f"10.0.5.{i}", dst_port=3389))),
                        BG() + many(2, lambda i: dict(dst_ip=f"10.0.5.{i}", dst_port=3389)))],
    "repeated_short_sessions": [(BG() + attack(many(60, lambda i: dict(ts=T0 + i, duration=0.5, dst_port=8081))),
                                 BG() + many(60, lambda i: dict(ts=T0 + i, duration=30.0, dst_port=8081)))],
    "auth_service": [(BG() + attack([flow(dst_port=22)]), BG())],
    "lateral_admin": [(BG() + attack([flow(dst_ip="10.0.0.7", dst_port=445)]),
                       BG() + [flow(dst_ip="8.8.8.8", dst_port=445), flow(src_ip="198.51.100.7", dst_port=3389)])],
    "internal_fan_out_admin": [(BG() + attack(many(12, lambda i: dict(dst_ip=f"10.0.6.{i}", dst_port=445))),
                                BG() + [flow(dst_ip="10.0.6.1", dst_port=445)])],
    "smb_traffic": [(BG() + attack([flow(dst_port=445)]), BG())],
    "remote_desktop": [(BG() + attack([flow(dst_port=3389)]), BG())],
    "inbound_remote_service": [(BG() + attack([flow(src_ip="203.0.113.5", dst_ip="10.0.0.9", dst_port=22)]),
                                BG() + [flow(dst_ip="10.0.0.9", dst_port=22)])],
    "nonstandard_port": [(BG() + attack([flow(service="http", dst_port=4444)]), BG())],
    "uncommon_port": [(BG() + attack([flow(dst_port=4444)]), BG())],
    "high_entropy_payload": [(BG() + attack([flow(entropy=7.9)]), BG() + [flow(entropy=5.0)])],
    "low_entropy_payload": [(BG() + attack([flow(entropy=1.5)]), BG() + [flow(entropy=7.5)])],
    "icmp_sweep": [(BG() + attack(many(25, lambda i: dict(proto="icmp", dst_ip=f"10.0.7.{i}", dst_port=8, src_port=None,
                                                        src_bytes=56, dst_bytes=0, src_pkts=1, dst_pkts=0))),
                    BG() + many(2, lambda i: dict(proto="icmp", dst_ip=f"10.0.7.{i}", dst_port=8, src_port=None)))],
    "icmp_large_payload": [(BG() + attack([flow(proto="icmp", dst_port=8, src_bytes=12000, dst_bytes=0, src_pkts=10,
                                                dst_pkts=0)]),
                            BG() + [flow(proto="icmp", dst_port=8, src_bytes=56, dst_bytes=56, src_pkts=1, dst_pkts=1)])],
    "icmp_flood": [(attack(many(2000, lambda i: dict(ts=T0 + i * 0.005, proto="icmp", dst_port=8, src_port=None))),
                    BG() + many(5, lambda i: dict(ts=T0 + i, proto="icmp", dst_port=8, src_port=None)))],
    "dns_query_volume": [(attack(many(400, lambda i: dict(ts=T0 + i * 0.1, proto="udp", dst_ip="10.0.0.53",
                                                          dst_port=53, src_bytes=40, dst_bytes=200))), BG())],
    "dns_large_query": [(BG() + attack([flow(proto="udp", dst_port=53, src_bytes=220, src_pkts=1, dst_bytes=100,
                                             dst_pkts=1)]), BG())],
    "dns_external_resolver": [(BG() + attack([flow(proto="udp", dst_ip="8.8.8.8", dst_port=53)]), BG())],
    "cleartext_protocol": [(BG() + attack([flow(dst_port=23)]), BG())],
    "web_traffic": [(BG() + attack([flow(dst_port=80)]), BG()[4:])],
    "proxy_port": [(BG() + attack([flow(dst_port=9050)]), BG())],
    "irc_port": [(BG() + attack([flow(dst_port=6667)]), BG())],
    "file_transfer_protocol": [(BG() + attack([flow(dst_port=21)]), BG())],
    "database_access": [(BG() + attack([flow(dst_port=3306)]), BG())],
    "outbound_external": [(BG() + attack([flow(dst_ip="93.184.216.34", dst_port=443)]),
                           BG() + [flow(proto="udp", dst_ip="239.255.255.250", dst_port=1900)])],
    "inbound_external": [(BG() + attack([flow(src_ip="198.51.100.7", dst_ip="10.0.0.2")]),
                          BG() + [flow(dst_ip="93.184.216.34", dst_port=443)])],
    "internal_internal": [(attack(BG()), [flow(src_ip="198.51.100.7", dst_ip="93.184.216.34")])],
    "many_destinations_same_payload": [(attack(many(60, lambda i: dict(dst_ip=f"10.0.8.{i}", src_bytes=1234))),
                                        BG() + many(60, lambda i: dict(dst_ip=f"10.0.8.{i}", src_bytes=1000 + 7 * i)))],
}

PARAMS = [pytest.param(name, k, id=f"{name}-{k}") for name, cases in CASES.items() for k in range(len(cases))]


def test_every_predicate_has_a_case_and_a_definition():
    assert len(PREDICATE_NAMES) >= 30
    assert set(CASES) == set(PREDICATE_NAMES)
    for p in PREDICATES.values():
        assert len(p.description) > 30, p.name


@pytest.mark.parametrize("name,k", PARAMS)
def test_fires(name, k):
    fire, _ = CASES[name][k]
    t = table(fire)
    act = compute_predicates(t, (name,))[:, 0]
    target = np.array([r.get("attack") == "x" for r in fire])
    assert target.any()
    assert act[target].min() >= 0.9, f"{name} should fire on every target row: {act[target]}"


@pytest.mark.parametrize("name,k", PARAMS)
def test_does_not_fire(name, k):
    _, quiet = CASES[name][k]
    act = compute_predicates(table(quiet), (name,))[:, 0]
    assert act.max() <= 0.05, f"{name} fired on a window where it must not: {act}"


def test_all_predicates_shape_range_and_nodes():
    rows = BG() + many(25, lambda i: dict(src_ip="10.0.0.66", dst_ip=f"10.0.2.{i}", dst_port=445, **_S0()))
    t = table(rows)
    a = compute_predicates(t)
    assert a.shape == (len(rows), len(PREDICATE_NAMES)) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    # nodes = IPs; node activation is the max over incident edges
    ips = sorted(set(t.column("src_ip").to_pylist()) | set(t.column("dst_ip").to_pylist()))
    idx = {ip: i for i, ip in enumerate(ips)}
    ei = np.array([[idx[x] for x in t.column("src_ip").to_pylist()], [idx[x] for x in t.column("dst_ip").to_pylist()]])
    node = node_activations(a, ei, len(ips))
    j = PREDICATE_NAMES.index("horizontal_scan")
    assert node[idx["10.0.0.66"], j] == 1.0 and node[idx["10.0.0.1"], j] == 0.0


def test_empty_and_missing_columns():
    t = table(BG())
    bare = t.select(["row", "ts", "src_ip", "dst_ip"])
    a = compute_predicates(bare)
    assert a.shape == (t.num_rows, len(PREDICATE_NAMES)) and np.isfinite(a).all()
    assert compute_predicates(t.slice(0, 0)).shape == (0, len(PREDICATE_NAMES))


def test_nulls_in_numeric_columns():
    rows = [dict(r, syn_count=None, rst_count=None, duration=None, src_bytes=None, dst_pkts=None, dst_port=None)
            for r in BG()]
    a = compute_predicates(table(rows + BG()))
    assert np.isfinite(a).all() and a.shape[0] == 2 * len(BG())


# ---------------------------------------------------------------- several windows in one call

def _windows_mix() -> list:
    """Windows that reuse the same addresses (groups must not cross windows), differ in columns, nulls,
    NaN and span, plus empty windows and a RecordBatch."""
    ws = []
    for cases in CASES.values():
        for fire, quiet in cases:
            ws += [table(fire), table(quiet)]
    t = table(BG())
    ws.insert(3, t.slice(0, 0))
    ws.insert(10, t.select(["row", "ts", "src_ip", "dst_ip"]))            # bare columns
    nul = [dict(r, syn_count=None, duration=None, src_bytes=None, dst_port=None, conn_state=None) for r in BG()]
    ws.insert(20, table(nul + BG()))                                       # nulls
    nan = table(CASES["brute_force"][0][0])                                # NaN that is not a null
    dur = nan.column("duration").to_numpy().copy()
    dur[-1] = np.nan  # alone, this window's brute_force is NaN -> 0; filled with 0 it would fire
    ws.insert(21, nan.set_column(nan.schema.get_field_index("duration"), "duration", pa.array(dur)))
    ws.insert(30, table(BG()).to_batches()[0])
    ws.append(t.slice(0, 0))
    return ws


def test_many_windows_equal_one_at_a_time():
    ws = _windows_mix()
    act, sizes = compute_predicates_many(ws)
    assert sizes.tolist() == [w.num_rows for w in ws] and act.shape == (sum(sizes), len(PREDICATE_NAMES))
    off = np.r_[0, np.cumsum(sizes)]
    for i, w in enumerate(ws):
        one = compute_predicates(w)
        assert np.array_equal(act[off[i]:off[i + 1]], one), f"window {i} differs"
    # the rows of a scan still fire only in their own window (the next window reuses the addresses)
    j = PREDICATE_NAMES.index("horizontal_scan")
    fire, quiet = CASES["horizontal_scan"][0]
    a2, s2 = compute_predicates_many([table(fire), table(quiet)], ("horizontal_scan",))
    assert a2[: s2[0]].max() >= 0.9 and a2[s2[0]:].max() <= 0.05 and j >= 0


def test_many_windows_rates_use_each_window_span():
    burst = many(300, lambda i: dict(ts=T0 + i * 0.001, proto="udp", src_ip=f"10.9.{i % 200}.1", dst_port=9999))
    slow = many(300, lambda i: dict(ts=T0 + i * 10.0, proto="udp", src_ip=f"10.9.{i % 200}.1", dst_port=9999))
    act, _ = compute_predicates_many([table(burst), table(slow)], ("udp_volume",))
    assert act[:300].min() >= 0.9 and act[300:].max() == 0.0


def test_many_windows_edge_cases():
    assert compute_predicates_many([])[0].shape == (0, len(PREDICATE_NAMES))
    t = table(BG())
    act, sizes = compute_predicates_many([t.slice(0, 0), t.slice(0, 0)])
    assert act.shape == (0, len(PREDICATE_NAMES)) and sizes.tolist() == [0, 0]


def test_group_key_does_not_overflow():
    big = np.array([0, 2 ** 40, 2 ** 40, 5], dtype=np.int64)
    g, k = _group(big, big, np.array([0, 1, 1, 0]))
    assert k == 3 and g[1] == g[2] and len({g[0], g[1], g[3]}) == 3


def test_node_activations_is_the_max_over_incident_edges():
    rng = np.random.default_rng(0)
    act = rng.random((200, 7)).astype(np.float32) * (rng.random((200, 7)) < 0.3)
    ei = rng.integers(0, 40, size=(2, 200))
    ref = np.zeros((45, 7), np.float32)
    np.maximum.at(ref, ei[0], act)
    np.maximum.at(ref, ei[1], act)
    assert np.array_equal(node_activations(act, ei, 45), ref)
    assert node_activations(act[:0], ei[:, :0], 3).shape == (3, 7)


# ---------------------------------------------------------------- fast paths = the straightforward computation

def test_rank_equals_unique():
    from knowledge.predicates.kernels import _rank

    rng = np.random.default_rng(0)
    for n, hi in [(0, 0), (1, 0), (1, 7), (50, 3), (1000, 100), (1000, 10 ** 6), (5000, 2 ** 40)]:
        key = rng.integers(0, hi + 1, size=n).astype(np.int64)
        inv, k = _rank(key, int(key.max(initial=0)))
        u, ref = np.unique(key, return_inverse=True)
        assert inv.dtype == np.int64 and np.array_equal(inv, ref.ravel()) and k == len(u)
    neg = np.array([-3, 5, -3, 0], dtype=np.int64)
    inv, k = _rank(neg, 5, nonneg=False)
    assert inv.tolist() == [0, 2, 0, 1] and k == 3


def _weird_ports_window():
    """Ports outside [0, 65535] (bad data): the port codes are the ports themselves there."""
    rows = BG() + many(30, lambda i: dict(dst_ip=f"10.0.2.{i % 7}", dst_port=[70000, -1, 445, 2 ** 20][i % 4],
                                          src_port=-(i % 3)))
    return table(rows)


def test_dense_and_sorted_grouping_agree(monkeypatch, samples):
    """Group ids and distinct counts from tables over the key range = from sorting (np.unique)."""
    import knowledge.predicates.kernels as kp
    from ingest.readers import open_inputs
    from ingest.windows import Tumbling, window_all

    windows, _ = window_all(open_inputs([str(samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled")]),
                            Tumbling(60.0), lateness=1e9)
    inputs = [_windows_mix() + [_weird_ports_window()], [w.table for w in windows]]
    fast = [compute_predicates_many(ws)[0] for ws in inputs]
    one = compute_predicates(_weird_ports_window())
    monkeypatch.setattr(kp, "_DENSE_PER_ROW", 0)
    monkeypatch.setattr(kp, "_DENSE_FIXED", 0)
    for ws, got in zip(inputs, fast):
        assert np.array_equal(compute_predicates_many(ws)[0].view(np.uint32), got.view(np.uint32))
    assert np.array_equal(compute_predicates(_weird_ports_window()), one)


def test_group_ids_do_not_depend_on_an_order_preserving_recoding():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 300), rng.integers(0, 40, 300)
    g1, k1 = _group(a, b)
    g2, k2 = _group(a * 1000 + 7, b * 3)  # same order, other codes (and a key range over the table limit)
    assert k1 == k2 and np.array_equal(g1, g2)


@pytest.mark.parametrize("kind", ["clean", "nan_and_signed_zeros"])
def test_node_activations_compiled_equals_torch(kind, monkeypatch):
    import knowledge.predicates.kernels as kp

    pytest.importorskip("numba")
    pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    act = (rng.random((3000, 9)) * (rng.random((3000, 9)) < 0.4)).astype(np.float32)
    act[::50] = act[0]
    if kind != "clean":
        act[rng.random(act.shape) < 0.01] = np.nan
        act[rng.random(act.shape) < 0.05] = -0.0
    ei = rng.integers(0, 300, size=(2, 3000))
    got = node_activations(act, ei, 310)
    assert got.dtype == np.float32 and got.shape == (310, 9)
    monkeypatch.setattr(kp, "_NODE_KERNEL", [None])
    ref = node_activations(act, ei, 310)  # torch's scatter_reduce
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    with pytest.raises(IndexError):
        monkeypatch.undo()
        node_activations(act, np.array([[0, 1], [2, 400]]).repeat(1500, axis=1), 310)


def _beaconing_lexsort(c) -> np.ndarray:
    """beaconing with the rows ordered by np.lexsort, as it was written (the reference for the two-sort order)."""
    from knowledge.predicates.definitions import _beacon_activation

    g, k = c.group("flow")
    order = np.lexsort((c.ts, g))
    return _beacon_activation(g[order], c.ts[order], k)[g]


def test_beaconing_order_equals_lexsort():
    """Equal timestamps inside a group (ties broken differently by the two sorts) give the same values."""
    from knowledge.predicates.context import WindowContext
    from knowledge.predicates.definitions import beaconing

    rng = np.random.default_rng(4)
    periodic = many(12, lambda i: dict(ts=T0 + 60 * i, dst_ip="10.9.8.1", dst_port=8443))  # fires
    twice = many(12, lambda i: dict(ts=T0 + 60 * i, dst_ip="10.9.8.2", dst_port=8443))
    tied = many(400, lambda i: dict(ts=T0 + 60 * int(rng.integers(0, 12)) + 0.5 * (i % 3 == 0),
                                    dst_ip=f"10.9.9.{int(rng.integers(0, 4))}", dst_port=int(rng.choice([443, 8443]))))
    rows = periodic + twice + twice[:3] + tied  # equal times within and across groups
    rows = [rows[i] for i in rng.permutation(len(rows))]
    for t, sizes in [(table(rows), None), (table(rows + BG() + rows[:50]), np.array([len(rows), 56]))]:
        c = WindowContext(t, sizes)
        got = beaconing(c)
        assert got.max() > 0 and np.array_equal(got.view(np.uint64), _beaconing_lexsort(c).view(np.uint64))


def test_ts_and_all_null_columns_read_as_before():
    """ts from the datetime64 ticks = the Arrow int64 cast; an all-null string column = what encoding gives."""
    import pyarrow.compute as pc

    from knowledge.predicates.context import WindowContext, _dict

    t = table(BG() + many(5, lambda i: dict(ts=T0 + 0.123457 * i, service=None, conn_state=None)))
    ref = np.nan_to_num(np.asarray(t.column("ts").cast(pa.int64()).to_numpy(), dtype=np.float64)) / 1e6
    assert np.array_equal(WindowContext(t).ts, ref)
    tn = table(BG()[:2])
    with_null = pa.array([1_600_000_000_000_000, None], pa.timestamp("us", tz="UTC"))
    tn = tn.set_column(tn.schema.get_field_index("ts"), "ts", with_null)
    assert WindowContext(tn).ts.tolist() == [1_600_000_000.0, 0.0]  # a null ts: 0, as before
    blank = pa.table({"service": pa.chunked_array([pa.array([None, None], pa.string()), pa.array([None], pa.string())])})
    enc = pc.dictionary_encode(blank.column("service").combine_chunks(), null_encoding="encode")
    codes, values = _dict(blank, "service")
    assert codes.tolist() == enc.indices.to_pylist() == [0, 0, 0] and values == enc.dictionary.to_pylist() == [None]

"""Behaviour state across windows (ingest.behaviour) on synthetic streams, with the behaviour predicates
(knowledge.behaviour_predicates) that read its features: beacons vs Poisson arrivals, reconnect storms
vs normal connections, slow uploads, rare ports, LRU bounds, checkpoint/restore, memory under a flood."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from ingest.behaviour import FEATURE_NAMES, BehaviourParams, BehaviourState
from ingest.behaviour.hashing import hash_strings, hash_text
from ingest.behaviour.store import EntityStore
from ingest.schema import FLOW_SCHEMA, conform
from knowledge.behaviour_predicates import BEHAVIOUR_PREDICATE_NAMES, compute_behaviour_predicates, fired

T0 = 1_700_000_000.0  # event time origin, seconds


def flows(ts, src, dst, port=443, state="SF", up=300, down=200, proto="tcp") -> pa.Table:
    """A FLOW_SCHEMA table; scalars are broadcast to the length of ``ts`` (seconds after T0)."""
    ts = np.asarray(ts, dtype=np.float64)
    n = len(ts)

    def col(v, dtype=None):
        return np.asarray(v if np.ndim(v) else [v] * n, dtype=dtype)

    t = pa.table({
        "row": np.arange(n, dtype=np.int64),
        "ts": pa.array(np.round((T0 + ts) * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "src_ip": pa.array(col(src, object), pa.string()), "dst_ip": pa.array(col(dst, object), pa.string()),
        "dst_port": pa.array(col(port, np.int32)), "proto": pa.array(col(proto, object), pa.string()),
        "conn_state": pa.array(col(state, object), pa.string()),
        "src_bytes": pa.array(col(up, np.int64)), "dst_bytes": pa.array(col(down, np.int64)),
    })
    return conform(t, FLOW_SCHEMA)


def merge(*tables: pa.Table) -> pa.Table:
    return pa.concat_tables(tables)


def activation(feats: pa.Table, name: str) -> np.ndarray:
    return compute_behaviour_predicates(feats)[:, BEHAVIOUR_PREDICATE_NAMES.index(name)]


def has(techs: pa.ListArray, tech: str) -> np.ndarray:
    return np.array([tech in v for v in techs.to_pylist()], dtype=bool)


def rows_of(table: pa.Table, src: str, dst: str | None = None) -> np.ndarray:
    s = np.array(table.column("src_ip").to_pylist(), dtype=object) == src
    if dst is not None:
        s &= np.array(table.column("dst_ip").to_pylist(), dtype=object) == dst
    return np.flatnonzero(s)


# ---------------------------------------------------------------- periodicity


def test_beacon_fires_periodicity_poisson_same_rate_does_not():
    rng = np.random.default_rng(7)
    n = 120  # 60 s beacon over 2 h, +-1 s jitter
    beacon_ts = np.arange(n) * 60.0 + rng.uniform(-1, 1, n)
    poisson_ts = np.cumsum(rng.exponential(60.0, n))  # same rate
    table = merge(flows(beacon_ts, "10.0.0.5", "203.0.113.7"), flows(poisson_ts, "10.0.0.6", "198.51.100.9"))
    feats = BehaviourState().update(table)
    act = activation(feats, "periodic_beacon")
    techs = fired(feats)
    b, p = rows_of(table, "10.0.0.5"), rows_of(table, "10.0.0.6")
    cv = feats.column("pair_gap_cv").to_numpy()
    print(f"beacon gap CV at the end {cv[b[-1]]:.3f}, Poisson {cv[p[-1]]:.3f}; Poisson max activation "
          f"{act[p].max():.3f}")
    # after 15 minutes (and >= 12 gaps) every beacon flow is fully periodic and names T1071
    late = b[beacon_ts >= 15 * 60]
    assert act[late].min() > 0.95
    assert has(techs, "T1071")[late].all()
    assert act[b[:5]].max() == 0.0  # too few arrivals yet
    # Poisson arrivals at the same rate never look periodic
    assert act[p].max() < 0.2
    assert not has(techs, "T1071")[p].any()
    assert abs(feats.column("pair_gap_mean_s").to_numpy()[b[-1]] - 60.0) < 2.0


def test_poisson_never_periodic_over_seeds():
    """The CV threshold holds for Poisson arrivals whatever the draw (20 independent 2 h streams)."""
    rng = np.random.default_rng(11)
    tables = [flows(np.cumsum(rng.exponential(60.0, 120)), f"10.1.0.{i}", "198.51.100.9") for i in range(20)]
    feats = BehaviourState().update(merge(*tables))
    act = activation(feats, "periodic_beacon")
    print(f"max periodic_beacon over 20 Poisson streams: {act.max():.3f}")
    assert act.max() < 0.5


def test_repeating_retry_schedule_is_periodic():
    """A bot retrying its C2 on a fixed schedule (gaps 7.2, 8.5, 16.6, 47.7 s, over and over, as IoT-23
    capture 8's C&C flows do) has a high gap CV but repeats itself at lag 4: periodic."""
    rng = np.random.default_rng(4)
    gaps = np.tile([7.2, 8.5, 16.6, 47.7], 90) + rng.uniform(-0.1, 0.1, 360)
    shuffled = rng.permutation(gaps)  # the same gaps in random order: no pattern
    table = merge(flows(np.cumsum(gaps), "10.0.0.5", "203.0.113.7", port=50, state="S0"),
                  flows(np.cumsum(shuffled), "10.0.0.6", "203.0.113.8", port=50, state="S0"))
    feats = BehaviourState().update(table)
    act = activation(feats, "periodic_beacon")
    sched, rand = rows_of(table, "10.0.0.5"), rows_of(table, "10.0.0.6")
    cv = feats.column("pair_gap_cv").to_numpy()
    assert cv[sched[-1]] > 0.7  # the CV alone would miss it
    assert feats.column("pair_gap_lag").to_numpy()[sched[-1]] == 4
    assert act[sched[60:]].min() > 0.95  # after 15 minutes
    assert act[rand].max() < 0.5


def test_beacon_with_burst_of_flows_per_beat_is_one_arrival():
    """A beacon that opens two connections per beat (DNS-less HTTP + keep-alive) is still periodic."""
    base = np.arange(100) * 30.0
    ts = np.sort(np.concatenate([base, base + 0.1]))
    feats = BehaviourState().update(flows(ts, "10.0.0.5", "203.0.113.7"))
    assert feats.column("pair_gaps").to_numpy()[-1] == 99
    assert activation(feats, "periodic_beacon")[-1] > 0.95


# ---------------------------------------------------------------- reconnection / failure streak


def test_reconnect_storm_fires_failure_streak_normal_connections_do_not():
    secs = np.arange(600.0)  # 10 minutes, one attempt per second
    table = merge(flows(secs, "10.0.0.7", "192.0.2.1", port=4444, state="REJ"),
                  flows(secs + 0.5, "10.0.0.8", "192.0.2.2", port=80, state="SF"))
    feats = BehaviourState().update(table)
    act = activation(feats, "failure_streak")
    storm, ok = rows_of(table, "10.0.0.7"), rows_of(table, "10.0.0.8")
    streak = feats.column("pair_fail_streak").to_numpy()
    assert np.array_equal(streak[storm], np.arange(1, 601))
    assert act[storm[20:]].min() == 1.0 and act[storm[:4]].max() == 0.0
    assert act[ok].max() == 0.0 and streak[ok].max() == 0
    rate = feats.column("pair_rate_1m").to_numpy()[storm[-1]]
    assert 55 < rate < 66, rate  # ~ attempts per minute
    assert feats.column("svc_fail_share").to_numpy()[storm[-1]] == 1.0
    assert feats.column("svc_fail_share").to_numpy()[ok[-1]] == 0.0


def test_streak_resets_on_success():
    states = ["S0"] * 10 + ["SF"] + ["S0"] * 3
    feats = BehaviourState().update(flows(np.arange(14.0), "10.0.0.7", "192.0.2.1", state=np.array(states)))
    assert feats.column("pair_fail_streak").to_numpy().tolist() == list(range(1, 11)) + [0, 1, 2, 3]


def test_fallback_new_destination_after_streak_fires_t1008():
    table = merge(flows(np.arange(60.0), "10.0.0.7", "192.0.2.1", port=4444, state="REJ"),
                  flows([120.0], "10.0.0.7", "192.0.2.99", port=443),          # fallback, 1 min later
                  flows([120.0], "10.0.0.9", "192.0.2.99", port=443),          # a new destination, no streak
                  flows([5000.0], "10.0.0.7", "192.0.2.77", port=443))         # much later: not a fallback
    feats = BehaviourState().update(table)
    act = activation(feats, "fallback_after_failures")
    techs = fired(feats)
    assert act[60] == 1.0 and "T1008" in techs[60].as_py()
    assert act[61] == 0.0 and act[62] == 0.0
    assert not has(techs, "T1008")[:60].any()  # the streak alone names no technique


# ---------------------------------------------------------------- upload asymmetry


def test_slow_steady_upload_fires_asymmetry():
    rng = np.random.default_rng(3)
    ts = np.arange(0, 3 * 3600, 30.0)  # a flow every 30 s for 3 h: ~40 KB up, 500 B down (~1.3 KB/s)
    n = len(ts)
    table = merge(flows(ts, "10.0.0.8", "203.0.113.50", up=rng.integers(30_000, 50_000, n), down=500),
                  flows(ts + 1, "10.0.0.9", "203.0.113.60", up=500, down=rng.integers(30_000, 50_000, n)))
    feats = BehaviourState().update(table)
    act = activation(feats, "sustained_upload")
    techs = fired(feats)
    up, down = rows_of(table, "10.0.0.8"), rows_of(table, "10.0.0.9")
    late = up[ts >= 3600]
    assert act[late].min() > 0.95 and has(techs, "T1041")[late].all()
    assert act[up[ts < 600]].max() == 0.0  # not sustained yet
    assert act[down].max() == 0.0 and not has(techs, "T1041")[down].any()
    up_1h = feats.column("pair_up_1h").to_numpy()[up[-1]]
    assert 0.8 * 4.8e6 < up_1h < 1.2 * 4.8e6, up_1h  # ~ bytes per hour


def test_periodic_upload_fires_t1029_and_equal_chunks_fire_t1030():
    rng = np.random.default_rng(5)
    sched = np.arange(24) * 300.0 + rng.uniform(-2, 2, 24)         # every 5 min, ~16 KB, for 2 h
    chunks = np.cumsum(rng.exponential(120.0, 40))                   # irregular times, exactly 64 KiB each
    random_sizes = np.cumsum(rng.exponential(120.0, 40))             # irregular times, sizes all over
    table = merge(flows(sched, "10.0.0.20", "203.0.113.20", up=rng.integers(15_000, 17_000, 24), down=300),
                  flows(chunks, "10.0.0.21", "203.0.113.21", up=65_536, down=200),
                  flows(random_sizes, "10.0.0.22", "203.0.113.22",
                        up=rng.lognormal(10, 1, 40).astype(np.int64), down=200))
    feats = BehaviourState().update(table)
    techs = fired(feats)
    s, c, r = rows_of(table, "10.0.0.20"), rows_of(table, "10.0.0.21"), rows_of(table, "10.0.0.22")
    assert has(techs, "T1029")[s[-5:]].all()
    assert not has(techs, "T1029")[np.concatenate([c, r])].any()
    assert has(techs, "T1030")[c[16:]].all()
    assert not has(techs, "T1030")[np.concatenate([s, r])].any()


# ---------------------------------------------------------------- port rarity


def test_first_use_of_rare_port_fires_rarity_usual_port_does_not():
    rng = np.random.default_rng(9)
    ts = np.sort(rng.uniform(0, 3600, 200))
    dsts = np.array([f"198.51.100.{i}" for i in rng.integers(1, 250, 200)], dtype=object)
    habit = flows(ts, "10.0.0.9", dsts, port=443)
    table = merge(habit, flows([3700.0, 3710.0], "10.0.0.9", "203.0.113.99", port=np.array([4444, 443])))
    feats = BehaviourState().update(table)
    act = activation(feats, "rare_port_for_host")
    techs = fired(feats)
    assert act[200] == 1.0 and "T1571" in techs[200].as_py()
    assert act[201] == 0.0 and act[:200].max() == 0.0
    share = feats.column("src_port_share").to_numpy()
    assert share[200] == 0.0 and share[201] > 0.95  # read before the flow is counted
    np.testing.assert_allclose(feats.column("src_port_history").to_numpy()[:3], [0, 1, 2], rtol=1e-3)
    # a host without a port habit (random high ports, as P2P) gets no rarity from one more port
    ports = rng.integers(1024, 65535, 200)
    feats = BehaviourState().update(merge(flows(ts, "10.0.0.10", dsts, port=ports),
                                          flows([3700.0], "10.0.0.10", "203.0.113.99", port=4444)))
    assert activation(feats, "rare_port_for_host").max() == 0.0


# ---------------------------------------------------------------- bounds: LRU and memory


def test_entity_store_evicts_least_recently_seen_and_keeps_capacity():
    h = dict(zip("abcdefvwxyz", hash_text("abcdefvwxyz", seed=1).tolist()))
    store = EntityStore(4, {"last_ts": (np.float64, (), np.nan)})
    slots, fresh = store.lookup(np.array([h[k] for k in "abcd"], dtype=np.uint64))
    assert fresh.all() and len(store) == 4
    store.arrays["last_ts"][slots] = [4.0, 1.0, 3.0, 2.0]
    # "b" (1.0) and "d" (2.0) are the least recently seen; "b" is in use by this call, so "d" and "c" go
    slots2, fresh2 = store.lookup(np.array([h[k] for k in "bef"], dtype=np.uint64))
    assert fresh2.tolist() == [False, True, True] and slots2[0] == slots[1]
    assert len(store) == 4 and h["d"] not in store and h["c"] not in store and h["a"] in store and h["b"] in store
    with pytest.raises(ValueError):
        store.lookup(np.array([h[k] for k in "vwxyz"], dtype=np.uint64))
    assert len(store) <= 4
    assert store.evicted == 2


def test_entity_store_index_survives_churn():
    """Many evictions (tombstones, index rebuilds): every held key is found at its slot, no other key is."""
    rng = np.random.default_rng(6)
    store = EntityStore(1000, {"last_ts": (np.float64, (), np.nan), "tag": (np.uint64, (), 0)})
    t = 0.0
    for _ in range(50):
        keys = np.unique(rng.integers(0, 2**63, 700, dtype=np.uint64))
        slots, fresh = store.lookup(keys)
        store.arrays["tag"][slots[fresh]] = keys[fresh]
        store.arrays["last_ts"][slots] = t = t + 1.0
        assert len(store) <= 1000
        assert np.array_equal(store.arrays["tag"][slots], keys)  # each key sees its own row
    held = store.state("k")[1]["k.hash"]
    again, fresh = store.lookup(held)
    assert not fresh.any() and np.array_equal(store.arrays["tag"][again], held)
    assert store.evicted == 50 * 700 - len(held) and len(held) == 1000  # every key was new (random 63-bit)


def test_behaviour_state_capacity_keeps_most_recent_sources():
    cap = 100
    ts = np.arange(1000.0)
    srcs = np.array([f"10.9.{i // 256}.{i % 256}" for i in range(1000)], dtype=object)
    state = BehaviourState(BehaviourParams(capacity=cap))
    state.update(flows(ts, srcs, "192.0.2.80", port=80))
    assert state.sizes() == {"pair": cap, "src": cap, "svc": 1}
    held = hash_text(srcs, state.params.hash_seed)
    assert all(h in state.stores["src"] for h in held[-cap:].tolist())
    assert not any(h in state.stores["src"] for h in held[:-cap].tolist())
    assert state.stores["src"].evicted == 900
    # an evicted source comes back as new: its next flow is a new destination again
    feats = state.update(flows([2000.0], srcs[0], "192.0.2.80", port=80))
    assert feats.column("pair_new").to_numpy()[0] == 1.0


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_flood_of_spoofed_sources_keeps_memory_bounded():
    """1,000,000 distinct spoofed sources to one server, capacity 200k: the stores never hold more than
    their capacity and RSS growth stays far under 1 GB."""
    cap, total, batch = 200_000, 1_000_000, 100_000
    state = BehaviourState(BehaviourParams(capacity=cap))
    BehaviourState.warm_up()  # compile / load the kernels before measuring
    before = _rss_bytes()
    peak = before
    t0 = time.perf_counter()
    for b in range(total // batch):
        i = np.arange(b * batch, (b + 1) * batch)
        srcs = np.char.add(np.char.add("10.", (i >> 16).astype(str)),
                           np.char.add(np.char.add(".", ((i >> 8) & 255).astype(str)),
                                       np.char.add(".", (i & 255).astype(str)))).astype(object)
        state.update(flows(1.0 + i * 1e-3, srcs, "192.0.2.80", port=80, state="S0", up=0, down=0))
        sizes = state.sizes()
        assert max(sizes.values()) <= cap, sizes
        peak = max(peak, _rss_bytes())
    elapsed = time.perf_counter() - t0
    growth = peak - before
    print(f"flood: {total:,} sources in {elapsed:.1f} s ({total / elapsed:,.0f} flows/s); sizes {state.sizes()}; "
          f"RSS growth {growth / 2**20:.0f} MiB; evicted {state.stores['src'].evicted:,}")
    assert state.sizes() == {"pair": cap, "src": cap, "svc": 1}
    assert state.stores["src"].evicted == total - cap
    assert growth < 1 << 30


# ---------------------------------------------------------------- checkpoint


def _mixed_stream(rng, n=20_000, span=4 * 3600) -> pa.Table:
    ts = np.sort(rng.uniform(0, span, n))
    src = np.array([f"10.0.{i // 50}.{i % 50}" for i in rng.integers(0, 300, n)], dtype=object)
    dst = np.array([f"203.0.113.{i}" for i in rng.zipf(1.5, n) % 256], dtype=object)
    return flows(ts, src, dst, port=rng.choice([22, 53, 80, 443, 4444, 8080], n),
                 state=rng.choice(["SF", "S0", "REJ", "RSTO", "SF", "SF"], n),
                 up=rng.integers(0, 100_000, n), down=rng.integers(0, 100_000, n),
                 proto=rng.choice(["tcp", "udp"], n))


def test_checkpoint_restore_equals_one_run(tmp_path):
    rng = np.random.default_rng(21)
    table = _mixed_stream(rng)
    cut = table.num_rows // 2
    a, b = table.slice(0, cut), table.slice(cut)
    whole = BehaviourState()
    one = whole.update(table)

    first = BehaviourState()
    feats_a = first.update(a)
    first.save(tmp_path)
    restored = BehaviourState.load(tmp_path)
    feats_b = restored.update(b)
    assert BehaviourState.load(tmp_path).sizes() == first.sizes()
    assert restored.sizes() == whole.sizes() and min(whole.sizes().values()) > 0
    for name in FEATURE_NAMES:
        got = np.concatenate([feats_a.column(name).to_numpy(), feats_b.column(name).to_numpy()])
        assert np.array_equal(got, one.column(name).to_numpy()), name
    # in memory too: state() / from_state() round trip, then the same next batch
    meta, arrays = first.state()
    again = BehaviourState.from_state(meta, arrays).update(b)
    assert again.equals(feats_b)


def test_rows_come_back_in_input_order():
    rng = np.random.default_rng(2)
    table = _mixed_stream(rng, n=2000)
    perm = rng.permutation(table.num_rows)
    shuffled = table.take(pa.array(perm))
    f1 = BehaviourState().update(table)
    f2 = BehaviourState().update(shuffled)
    # same times are rare (uniform floats), so the shuffled batch gives each flow the same features
    assert f2.take(pa.array(np.argsort(perm))).equals(f1)


def test_checkpoint_files_from_two_saves_are_refused(tmp_path):
    rng = np.random.default_rng(8)
    table = _mixed_stream(rng, n=3000)
    state = BehaviourState()
    state.update(table.slice(0, 1000))
    state.save(tmp_path / "a")
    state.update(table.slice(1000))
    state.save(tmp_path / "b")
    (tmp_path / "a" / "behaviour.json").write_bytes((tmp_path / "b" / "behaviour.json").read_bytes())
    with pytest.raises(ValueError, match="different checkpoints"):
        BehaviourState.load(tmp_path / "a")
    assert BehaviourState.load(tmp_path / "b").flows_seen == 3000
    assert not list(tmp_path.glob("*/*.tmp"))


def test_batch_processed_in_steps_equals_one_step():
    """A batch larger than capacity // 2 goes through in steps; with no eviction the features are the same."""
    rng = np.random.default_rng(13)
    table = _mixed_stream(rng, n=5000)  # 300 sources, <= 256 destinations, few hundred services and pairs
    big = BehaviourState(BehaviourParams(capacity=200_000)).update(table)
    small_state = BehaviourState(BehaviourParams(capacity=4000))  # steps of 2000 rows
    small = small_state.update(table)
    assert max(small_state.sizes().values()) < 4000 and small_state.stores["pair"].evicted == 0
    assert small.equals(big)


def test_python_fallback_kernels_give_the_same_features(monkeypatch):
    """Without numba the kernels run as plain Python (ingest.jit); both paths give the same bits."""
    from ingest.behaviour import pair, service, source

    table = _mixed_stream(np.random.default_rng(17), n=1500)
    compiled = BehaviourState().update(table)
    monkeypatch.setattr(pair, "_kernel", pair._pair_kernel)
    monkeypatch.setattr(source, "_kernel", source._source_kernel)
    monkeypatch.setattr(service, "_kernel", service._service_kernel)
    python = BehaviourState().update(table)
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(python.column(name).to_numpy(), compiled.column(name).to_numpy(),
                                   rtol=1e-6, atol=1e-6, err_msg=name)


def test_minimal_columns_nulls_and_record_batches():
    """Only ts/src_ip/dst_ip present, or every optional column null (formats without them): no failure,
    no port, zero bytes; a RecordBatch gives what the same Table gives; an empty batch gives no rows."""
    ts = pa.array(np.round((T0 + np.arange(20.0) * 60) * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC"))
    minimal = pa.table({"ts": ts, "src_ip": ["10.0.0.1"] * 20, "dst_ip": ["10.0.0.2"] * 20})
    full_nulls = conform(minimal.append_column("row", pa.array(np.arange(20))), FLOW_SCHEMA)  # others null
    a = BehaviourState().update(minimal)
    b = BehaviourState().update(full_nulls)
    c = BehaviourState().update(full_nulls.to_batches()[0])
    assert a.equals(b) and b.equals(c)
    assert a.num_rows == 20 and a.column("flow_failed").to_numpy().max() == 0
    assert a.column("pair_up_1h").to_numpy().max() == 0 and a.column("pair_gaps").to_numpy()[-1] == 19
    empty = BehaviourState().update(full_nulls.slice(0, 0))
    assert empty.num_rows == 0 and empty.column_names == list(FEATURE_NAMES)


def test_key_hashes_ignore_slicing_and_nulls_and_depend_on_the_seed():
    arr = pa.array(["pad", "10.0.0.1", None, "2001:db8::1"])
    got = hash_strings(arr.slice(1), seed=3)
    assert got.tolist() == hash_text(["10.0.0.1", "", "2001:db8::1"], seed=3).tolist()
    assert len(set(got.tolist())) == 3
    assert hash_text(["10.0.0.1"], seed=4)[0] != got[0]

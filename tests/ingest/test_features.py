"""FlowPreprocessor: label-free, fitted on training data only, saved and reapplied identically."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from ingest.features import FORBIDDEN, FlowPreprocessor
from ingest.schema import FLOW_SCHEMA, conform


def random_flows(n: int, seed: int, row0: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)

    def maybe_null(values: list, p: float = 0.1) -> list:
        return [None if rng.random() < p else v for v in values]

    services = ["http", "dns", "ssl", "ssh", "smtp", "ftp", "irc"]
    states = ["SF", "S0", "REJ", "RSTO", "OTH"]
    data = {
        "row": np.arange(row0, row0 + n),
        "uid": [f"C{seed}x{i}" for i in range(n)],
        "ts": pa.array(1_600_000_000_000_000 + np.sort(rng.integers(0, 3_600_000_000, n))).cast(
            pa.timestamp("us", tz="UTC")
        ),
        "duration": maybe_null(list(rng.exponential(3.0, n))),
        "src_ip": [f"10.0.0.{i}" for i in rng.integers(0, 20, n)],
        "src_port": maybe_null([int(p) for p in rng.integers(0, 65536, n)]),
        "dst_ip": [f"10.0.1.{i}" for i in rng.integers(0, 20, n)],
        "dst_port": maybe_null([int(p) for p in rng.choice([22, 53, 80, 443, 999, 8081, 60000], n)]),
        "proto": maybe_null(list(rng.choice(["tcp", "udp", "icmp", "other:47"], n))),
        "service": maybe_null(list(rng.choice(services, n, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02])), 0.3),
        "conn_state": maybe_null(list(rng.choice(states, n))),
        "src_bytes": maybe_null([int(v) for v in rng.integers(0, 100_000, n)]),
        "dst_bytes": maybe_null([int(v) for v in rng.integers(0, 1_000_000, n)]),
        "src_pkts": [int(v) for v in rng.integers(0, 100, n)],
        "dst_pkts": [int(v) for v in rng.integers(0, 100, n)],
        "entropy": maybe_null(list(rng.uniform(0, 8, n))),
        "label": pa.array(rng.integers(0, 2, n), pa.int8()),
        "attack": rng.choice(["benign", "dos"], n),
        "source": ["test"] * n,
    }
    return conform(pa.table(data), FLOW_SCHEMA)


def with_column(t: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, values)


def test_round_trip_save_load_gives_identical_output(tmp_path) -> None:
    train, test = random_flows(2000, 0), random_flows(500, 1, row0=2000)
    pre = FlowPreprocessor(top_k=4).fit(train)
    path = tmp_path / "pre.json"
    pre.save(path)
    loaded = FlowPreprocessor.load(path)
    assert loaded.feature_names == pre.feature_names
    for t in (train, test):
        a, b = pre.transform(t), loaded.transform(t)
        assert a.dtype == np.float32 and a.shape == (t.num_rows, pre.num_features)
        assert np.array_equal(a, b)
    assert json.loads(path.read_text())["kind"] == "FlowPreprocessor"


def test_labels_and_ids_have_no_influence() -> None:
    train = random_flows(1500, 2)
    other = with_column(train, "label", pa.array(1 - np.asarray(train.column("label")), pa.int8()))
    other = with_column(other, "attack", pa.array(["x"] * other.num_rows))
    other = with_column(other, "row", pa.array(np.arange(other.num_rows)[::-1].copy()))
    other = with_column(other, "uid", pa.nulls(other.num_rows, pa.string()))
    other = with_column(other, "source", pa.array(["elsewhere"] * other.num_rows))
    a = FlowPreprocessor().fit(train)
    b = FlowPreprocessor().fit(other)
    assert a.to_dict() == b.to_dict()
    assert np.array_equal(a.transform(train), a.transform(other))
    assert np.array_equal(a.transform(train), b.transform(other))
    # ... and without those columns at all.
    bare = train.drop_columns(list(FORBIDDEN))
    assert np.array_equal(a.transform(train), a.transform(bare))
    assert not any(f in name for name in a.feature_names for f in FORBIDDEN)


def test_fit_uses_training_data_only() -> None:
    train, test = random_flows(3000, 3), random_flows(3000, 4)
    # Shift test traffic: ten times the bytes.
    test = with_column(test, "src_bytes", pa.compute.multiply(test.column("src_bytes"), 10))
    pre = FlowPreprocessor().fit(train)
    j = pre.feature_names.index("log_src_bytes")
    xtr, xte = pre.transform(train)[:, j], pre.transform(test)[:, j]
    assert abs(xtr.mean()) < 1e-5 and abs(xtr.std() - 1) < 1e-3  # standardised on train
    assert xte.mean() > 0.3  # test is scaled with train's statistics, not its own
    assert FlowPreprocessor().fit(test).to_dict() != pre.to_dict()


def test_streaming_fit_equals_fit_on_whole_table() -> None:
    t = random_flows(3000, 5)
    whole = FlowPreprocessor().fit(t)
    streamed = FlowPreprocessor().fit(t.to_batches(max_chunksize=700))
    assert whole.states_ == streamed.states_ and whole.services_ == streamed.services_
    np.testing.assert_allclose(whole.mean_, streamed.mean_, rtol=1e-12)
    np.testing.assert_allclose(whole.transform(t), streamed.transform(t), atol=1e-5)


def test_categorical_and_port_encodings_exact() -> None:
    train = conform(
        pa.table(
            {
                "row": [0, 1, 2, 3, 4],
                "ts": pa.array([0, 1, 2, 3, 4]).cast(pa.timestamp("us", tz="UTC")),
                "src_ip": ["a"] * 5,
                "dst_ip": ["b"] * 5,
                "service": ["dns", "dns", "http", "http", "ssh"],
                "conn_state": ["SF", "SF", "S0", None, "REJ"],
            }
        ),
        FLOW_SCHEMA,
    )
    pre = FlowPreprocessor(top_k=2).fit(train)
    assert pre.services_ == ["dns", "http"]  # ties broken by name; ssh is beyond top-2
    assert pre.states_ == ["SF", "REJ"]
    test = conform(
        pa.table(
            {
                "row": [0, 1, 2, 3, 4],
                "ts": pa.array([0, 1, 2, 3, 4]).cast(pa.timestamp("us", tz="UTC")),
                "src_ip": ["a"] * 5,
                "dst_ip": ["b"] * 5,
                "proto": ["tcp", "udp", "icmp", "other:47", None],
                "service": ["http", "ssh", None, "dns", "quic"],
                "dst_port": [443, 1000, 8081, 60000, None],
                "src_port": [1023, 1024, 49151, 49152, None],
            }
        ),
        FLOW_SCHEMA,
    )
    x = pre.transform(test)
    names = pre.feature_names

    def hot(prefix: str) -> list[str]:
        cols = [i for i, n in enumerate(names) if n.startswith(prefix)]
        return [names[cols[int(np.argmax(x[r, cols]))]] if x[r, cols].sum() == 1 else "?" for r in range(5)]

    assert hot("proto") == ["proto=tcp", "proto=udp", "proto=icmp", "proto=other", "proto=missing"]
    assert hot("service") == ["service=http", "service=other", "service=missing", "service=dns", "service=other"]
    assert hot("dport") == ["dport=443", "dport:system", "dport:registered", "dport:ephemeral", "dport:missing"]
    assert hot("sport") == ["sport:system", "sport:registered", "sport:registered", "sport:ephemeral", "sport:missing"]
    assert hot("state") == ["state=missing"] * 5


def test_missing_and_non_finite_values() -> None:
    t = random_flows(10, 6)
    t = with_column(t, "duration", pa.array([None, float("nan"), float("inf"), -1.0, 2.0] * 2, pa.float64()))
    pre = FlowPreprocessor().fit(random_flows(200, 7))
    x = pre.transform(t)
    assert np.isfinite(x).all()
    miss = x[:, pre.feature_names.index("miss_duration")]
    assert miss.tolist() == [1, 1, 1, 0, 0] * 2


def test_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ValueError, match="not fitted"):
        FlowPreprocessor().transform(random_flows(3, 8))
    with pytest.raises(ValueError, match="at least one flow"):
        FlowPreprocessor().fit([])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "Other"}))
    with pytest.raises(ValueError, match="not a FlowPreprocessor"):
        FlowPreprocessor.load(bad)
    assert "not fitted" in repr(FlowPreprocessor())


def test_empty_table_transforms_to_empty_matrix() -> None:
    pre = FlowPreprocessor().fit(random_flows(50, 9))
    assert pre.transform(FLOW_SCHEMA.empty_table()).shape == (0, pre.num_features)

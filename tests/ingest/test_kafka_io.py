"""Kafka I/O: message codecs, malformed messages, offset tracking, replay keying (real broker)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detector"))
from daemon_helpers import make_flows  # noqa: E402
from kafka_fixtures import kafka_bootstrap, new_topic  # noqa: E402,F401

from ingest.kafka_io import (  # noqa: E402
    OffsetTracker,
    decode_messages,
    encode_arrow,
    iter_topic,
    make_producer,
    parse_speed,
    partition_for,
    replay,
    sniff_message,
    table_to_json_messages,
)
from ingest.schema import FLOW_SCHEMA  # noqa: E402


class ListDL:
    def __init__(self):
        self.items = []

    def add(self, source, line, reason, raw):
        self.items.append((reason, raw))


def test_json_and_arrow_round_trip_to_the_same_table():
    t = make_flows(n_benign=50, n_scan=10)
    js = table_to_json_messages(t)
    assert sniff_message(js[0]) == "json" and sniff_message(encode_arrow(t)) == "arrow"
    a = decode_messages(js, "auto", "flows").table
    b = decode_messages([encode_arrow(t)], "auto", "flows").table
    assert a.schema.equals(FLOW_SCHEMA) and b.schema.equals(FLOW_SCHEMA)
    for col in ("row", "ts", "src_ip", "dst_port", "src_bytes", "uid"):
        assert a.column(col).to_pylist() == t.column(col).to_pylist() == b.column(col).to_pylist(), col


def test_malformed_messages_are_dead_lettered_with_reasons():
    good = table_to_json_messages(make_flows(n_benign=3, n_scan=0))
    bad = [b"{not json", b"\xff\xff\xff\xffgarbage", b"plain text", None, b'{"src_ip": "1.2.3.4"}',
           b'{"ts": "yesterday", "src_ip": "a", "dst_ip": "b"}', b'[1, 2]', b'{"ts": 1, "src_ip": "a", "dst_ip": "b", "src_port": "x"}']
    dl = ListDL()
    d = decode_messages(good + bad, "auto", "flows", dl)
    assert d.table.num_rows == 3
    assert d.malformed == {"bad_json": 1, "bad_arrow": 1, "unknown_format": 3, "missing_ts": 1, "bad_ts": 1,
                           "bad_src_port": 1}
    assert sum(d.malformed.values()) == len(dl.items) == len(bad)


def test_forced_format_rejects_the_other():
    t = make_flows(n_benign=3, n_scan=0)
    d = decode_messages([encode_arrow(t)], "json", "flows")
    assert d.table.num_rows == 0 and d.malformed == {"bad_json": 1}


def test_offset_tracker_commits_only_contiguous_done_chunks():
    tr = OffsetTracker()
    tr.add("t", 0, 0, 9, 0, 10)       # rows 0..9
    tr.add("t", 1, 0, 4, 10, 15)      # rows 10..14
    tr.add("t", 0, 10, 19, 15, 25)    # rows 15..24
    tr.add("t", 0, 20, 20, 25, 25)    # a chunk of only malformed messages: nothing to wait for
    assert tr.committable() == {}
    tr.done_rows(np.arange(15, 25))   # the later chunk of partition 0 finished first
    assert tr.committable() == {}     # ...but the earlier one is not done: nothing for partition 0
    tr.done_rows(np.array([10, 11, 12, 13, 14]))
    assert tr.committable() == {("t", 1): 5}
    tr.done_rows(np.arange(0, 10))
    assert tr.committable() == {("t", 1): 5, ("t", 0): 21}
    assert tr.pending() == 0


@pytest.mark.parametrize("s, v", [("10x", 10.0), ("max", None), ("2.5", 2.5), (None, None)])
def test_parse_speed(s, v):
    assert parse_speed(s) == v


def test_parse_speed_rejects_nonsense():
    with pytest.raises(ValueError, match="positive"):
        parse_speed("0x")


@pytest.mark.kafka
def test_replay_keys_by_source_endpoint_in_both_formats(kafka_bootstrap):
    t = make_flows(n_benign=200, n_scan=50)
    out = {}
    for fmt in ("json", "arrow"):
        topic = new_topic(kafka_bootstrap, 3)
        p = make_producer({"bootstrap": kafka_bootstrap})
        counts = replay([t], p, topic, 3, fmt=fmt, arrow_batch=64)
        p.close()
        assert counts["records"] == t.num_rows
        msgs = list(iter_topic(kafka_bootstrap, topic, idle_s=1.5))
        by_part = {}
        for m in msgs:
            tab = decode_messages([m.value], "auto", "flows").table
            for s in tab.column("src_ip").to_pylist():
                by_part.setdefault(s, set()).add(m.partition)
        assert all(len(v) == 1 for v in by_part.values())  # one source endpoint, one partition
        assert all(next(iter(v)) == partition_for(k.encode(), 3) for k, v in by_part.items())
        out[fmt] = sum(decode_messages([m.value], "auto", "flows").table.num_rows for m in msgs)
        if fmt == "arrow":
            assert len(msgs) < t.num_rows / 10  # batched
    assert out == {"json": t.num_rows, "arrow": t.num_rows}


@pytest.mark.kafka
def test_replay_speed_keeps_scaled_gaps(kafka_bootstrap):
    t = make_flows(n_benign=40, n_scan=0, duration=4.0)
    topic = new_topic(kafka_bootstrap, 1)
    p = make_producer({"bootstrap": kafka_bootstrap, "client_options": {}}, linger_ms=0)
    import time

    t0 = time.monotonic()
    replay([t], p, topic, 1, fmt="json", speed=4.0)
    took = time.monotonic() - t0
    p.close()
    span = (t.column("ts").cast(pa.int64()).to_numpy()[-1] - t.column("ts").cast(pa.int64()).to_numpy()[0]) / 1e6
    assert took >= span / 4.0 * 0.8  # a 4 s capture at 4x takes about a second, not milliseconds
    msgs = list(iter_topic(kafka_bootstrap, topic, idle_s=1.0))
    assert len(msgs) == t.num_rows and json.loads(msgs[0].value)["uid"] == t.column("uid")[0].as_py()


@pytest.mark.kafka
def test_source_pauses_when_the_queue_is_full_and_resumes_when_drained(kafka_bootstrap):
    import queue
    import time

    from ingest.kafka_io import KafkaSource

    t = make_flows(n_benign=3000, n_scan=300, duration=100.0)
    topic = new_topic(kafka_bootstrap, 1)
    p = make_producer({"bootstrap": kafka_bootstrap})
    replay([t], p, topic, 1, fmt="arrow", arrow_batch=100)
    p.close()
    q: queue.Queue = queue.Queue(maxsize=3)
    tracker = OffsetTracker()
    src = KafkaSource({"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-bp", "max_poll_records": 1},
                      q, tracker).start()
    try:
        deadline = time.monotonic() + 30
        while src.pauses == 0:                  # nobody drains the queue: the source must pause
            assert time.monotonic() < deadline, "source never paused"
            time.sleep(0.1)
        time.sleep(1.0)
        assert q.qsize() <= 3 and src.max_depth <= 3   # paused, not buffering more
        n = 0
        deadline = time.monotonic() + 60
        while n < t.num_rows:                   # drain: it resumes and delivers everything
            assert time.monotonic() < deadline, f"only {n} records delivered"
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                continue
            n += item.table.num_rows
        assert n == t.num_rows
    finally:
        src.stop()
        src.join(15)


@pytest.mark.kafka
def test_stop_at_end_delivers_every_record_of_every_partition_before_ending(kafka_bootstrap):
    """A slow reader (the source pauses often) on two keyed partitions: the end is the real end.

    Two traps this guards: polls of a paused consumer return nothing (that is not the end), and a
    broker's ListOffsets(latest) may lag the fetch high watermark (Tansu answers with the last
    batch's base offset), so positions must be compared with the true end.
    """
    import queue
    import time

    from ingest.kafka_io import KafkaSource

    t = make_flows(n_benign=1500, n_scan=300, duration=60.0, seed=5)
    topic = new_topic(kafka_bootstrap, 2)
    p = make_producer({"bootstrap": kafka_bootstrap})
    replay([t], p, topic, 2, fmt="json")
    p.close()
    per_part = np.bincount([partition_for(str(k).encode(), 2) for k in t.column("src_ip").to_pylist()], minlength=2)
    q: queue.Queue = queue.Queue(maxsize=2)
    src = KafkaSource({"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-end", "max_poll_records": 10},
                      q, OffsetTracker(), stop_at_end=True).start()
    rows: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline, f"no end of stream after {len(rows)} records"
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                break
            rows.extend(item.table.column("row").to_pylist())
            if item.last_offset >= per_part[item.partition] - 40:
                time.sleep(1.0)                 # near each partition's end the source stays paused 3+ polls
    finally:
        src.stop()
        src.join(15)
    assert src.error is None
    assert src.pauses > 0
    assert sorted(rows) == list(range(t.num_rows))


@pytest.mark.kafka
@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_a_held_partition_is_paused_until_released_and_the_end_waits_for_it(kafka_bootstrap, backend):
    """``hold({0})`` (the window stage's event-time alignment) pauses partition 0 only: partition 1 is read whole
    meanwhile, and stop_at_end does not end the stream while partition 0 is held; released, it is read to its end."""
    import queue
    import time

    from ingest.kafka_io import source_class

    if backend == "confluent":
        pytest.importorskip("confluent_kafka")
    t = make_flows(n_benign=1500, n_scan=100, duration=60.0, seed=9)
    topic = new_topic(kafka_bootstrap, 2)
    p = make_producer({"bootstrap": kafka_bootstrap})
    replay([t], p, topic, 2, fmt="json")
    p.close()
    per_part = np.bincount([partition_for(str(k).encode(), 2) for k in t.column("src_ip").to_pylist()], minlength=2)
    q: queue.Queue = queue.Queue()
    src = source_class(backend)({"bootstrap": kafka_bootstrap, "topic": topic, "group_id": f"g-hold-{backend}",
                                 "max_poll_records": 50}, q, OffsetTracker(), stop_at_end=True)
    src.hold({0})  # asked before the first poll: applied once partition 0 is assigned
    src.start()
    got = np.zeros(2, dtype=np.int64)

    def drain(until: float) -> bool:  # True at the end-of-stream marker
        while time.monotonic() < until:
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return True
            got[item.partition] += item.table.num_rows
        return False

    try:
        deadline = time.monotonic() + 60
        while got[1] < per_part[1]:
            assert time.monotonic() < deadline, f"partition 1 not read whole while 0 is held: {got}"
            assert not drain(time.monotonic() + 0.5), "the stream ended while a partition was held"
        assert not drain(time.monotonic() + 3.0), "the stream ended while a partition was held"
        assert got[0] < per_part[0]  # held (it may have delivered a first poll before the hold applied)
        src.hold(set())
        assert drain(time.monotonic() + 60), f"no end of stream after the release: {got}"
        assert got.tolist() == per_part.tolist()
    finally:
        src.stop()
        src.join(15)

"""Batch JSON decoding is exact: a poll decoded at once gives the same rows, scores and dead letters as
decoding every message alone, and each row knows its message."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detector"))
from daemon_helpers import FanoutScorer, ListDL, json_flow_messages, make_flows  # noqa: E402
from kafka_fixtures import kafka_bootstrap, new_topic  # noqa: E402,F401

from ingest.kafka_io import decode_messages  # noqa: E402
from ingest.kafka_io.json_batch import decode_json_batch, parse_json_message  # noqa: E402
from ingest.schema import FLOW_SCHEMA  # noqa: E402


def good_messages(n: int = 300, seed: int = 3) -> list[bytes]:
    return json_flow_messages(n, seed)


def _obj(msg: bytes, **change) -> bytes:
    rec = json.loads(msg)
    for k, v in change.items():
        if v is _DROP:
            rec.pop(k, None)
        else:
            rec[k] = v
    return json.dumps(rec).encode()


_DROP = object()

# (name, message built from a good one): each either a dead letter with its reason or a record the careful path keeps
BAD = [
    ("not_json", lambda m: b'{"ts": 1, "src_ip": '),
    ("array", lambda m: b'[1, 2, 3]'),
    ("none", lambda m: None),
    ("empty", lambda m: b""),
    ("bad_utf8", lambda m: b'{"ts": 1.0, "src_ip": "\xff\xfe"}'),
    ("missing_src_ip", lambda m: _obj(m, src_ip=_DROP)),
    ("empty_dst_ip", lambda m: _obj(m, dst_ip="")),
    ("missing_ts", lambda m: _obj(m, ts=_DROP)),
    ("ts_text", lambda m: _obj(m, ts="yesterday")),
    ("ts_bool", lambda m: _obj(m, ts=True)),
    ("ts_nan", lambda m: m.replace(b'"ts":', b'"ts":NaN,"x":')),
    ("port_word", lambda m: _obj(m, dst_port="http")),
    ("huge_int", lambda m: _obj(m, src_bytes=2 ** 70)),
    # kept, by the careful path: a type it converts, an ISO timestamp, a float port, an upper-case proto
    ("port_text", lambda m: _obj(m, dst_port="443")),
    ("ts_iso", lambda m: _obj(m, ts="2023-11-14T22:13:20.5Z")),
    ("port_float", lambda m: _obj(m, dst_port=22.0)),
    ("proto_upper", lambda m: _obj(m, proto="TCP")),
    ("row_text", lambda m: _obj(m, row="7")),
]


def mixed(seed: int = 0, every: int = 7) -> list:
    msgs = good_messages()
    rng = np.random.default_rng(seed)
    out = list(msgs)
    for j, i in enumerate(range(3, len(out), every)):
        out[i] = BAD[(j + int(rng.integers(0, len(BAD)))) % len(BAD)][1](msgs[i])
    return out


def one_by_one(values: list, fmt: str = "json") -> tuple[pa.Table, list[tuple], list[int]]:
    """The reference: every message decoded alone, dead letters numbered by the message."""
    tables, dls, idx = [], [], []
    for i, v in enumerate(values):
        dl = ListDL()
        d = decode_messages([v], fmt, "flows", dl)
        tables.append(d.table)
        idx += [i] * d.table.num_rows
        dls += [(i, reason, raw) for _, reason, raw in dl.items]
    return pa.concat_tables(tables), dls, idx


def scores_of(t: pa.Table) -> np.ndarray:
    return FanoutScorer(threshold=5.0).score_window(SimpleNamespace(table=t, start=0.0, end=1e12)).scores


@pytest.mark.parametrize("seed,every", [(0, 7), (1, 2), (2, 31), (3, 1)])
def test_a_poll_decodes_like_each_message_alone(seed, every):
    values = mixed(seed, every)
    ref_t, ref_dl, ref_idx = one_by_one(values)
    dl = ListDL()
    d = decode_messages(values, "json", "flows", dl)
    assert d.table.schema.equals(FLOW_SCHEMA)
    assert d.table.equals(ref_t)
    assert sorted(dl.items) == sorted(ref_dl)
    assert d.msg_index.tolist() == ref_idx
    np.testing.assert_array_equal(scores_of(d.table), scores_of(ref_t))
    reasons = {r for _, r, _ in dl.items}
    assert sum(d.malformed.values()) == len(dl.items) and set(d.malformed) == reasons
    per_message_dl = ListDL()  # the whole-poll path (pyarrow.json) == orjson per message, dead letters in order
    t, idx, bad = decode_json_batch(values, "flows", per_message_dl, fast=False)
    assert t.equals(d.table) and idx.tolist() == ref_idx and per_message_dl.items == dl.items
    assert bad == d.malformed


def test_one_bad_message_is_one_dead_letter_and_its_neighbours_are_scored():
    msgs = good_messages()
    values = list(msgs)
    values[150] = b'{"ts": oops}'
    dl = ListDL()
    d = decode_messages(values, "json", "flows", dl)
    assert [(line, reason) for line, reason, _ in dl.items] == [(150, "bad_json")]
    assert d.table.num_rows == len(msgs) - 1
    full = decode_messages(msgs, "json", "flows").table
    keep = [i for i in range(len(msgs)) if i != 150]
    assert d.table.equals(full.take(keep))
    assert d.msg_index.tolist() == keep


def test_every_reason_is_named():
    msgs = good_messages(40)
    dl = ListDL()
    values = [f(msgs[i]) for i, (_, f) in enumerate(BAD)]
    d = decode_messages(values, "json", "flows", dl)
    got = {line: reason for line, reason, _ in dl.items}
    names = [name for name, _ in BAD]
    assert got == {
        names.index("not_json"): "bad_json", names.index("array"): "bad_json", names.index("none"): "bad_json",
        names.index("empty"): "bad_json", names.index("bad_utf8"): "bad_json",
        names.index("missing_src_ip"): "missing_src_ip", names.index("empty_dst_ip"): "missing_dst_ip",
        names.index("missing_ts"): "missing_ts", names.index("ts_text"): "bad_ts", names.index("ts_bool"): "bad_ts",
        names.index("ts_nan"): "bad_ts", names.index("port_word"): "bad_dst_port",
        names.index("huge_int"): "bad_value",
    }
    kept = d.table.to_pylist()
    assert {443, 22} <= {r["dst_port"] for r in kept}
    assert -1 in {r["row"] for r in kept}  # a row that is no integer: kept, with row -1
    assert {r["proto"] for r in kept} <= {"tcp", "udp", "icmp"}
    iso = d.table.column("ts").cast(pa.int64()).to_pylist()
    assert 1_700_000_000_500_000 in iso


def test_auto_format_mixes_arrow_and_json_with_the_same_rules():
    from ingest.kafka_io import encode_arrow

    msgs = mixed(5, 3)[:60]
    arrow = encode_arrow(make_flows(n_benign=20, n_scan=0, duration=5.0, seed=9))
    values = msgs[:30] + [arrow] + msgs[30:]
    dl = ListDL()
    d = decode_messages(values, "auto", "flows", dl)
    ref_t, ref_dl, _ = one_by_one(values, "auto")
    assert sorted(dl.items) == sorted(ref_dl)   # numbered by the place in the poll, Arrow message included
    key = ["uid", "ts", "dst_port"]
    assert d.table.select(key).sort_by([(k, "ascending") for k in key]).equals(
        ref_t.select(key).sort_by([(k, "ascending") for k in key]))


def test_parse_json_message_reads_what_the_standard_library_reads():
    assert parse_json_message(b'{"a": NaN}')["a"] != parse_json_message(b'{"a": NaN}')["a"]  # NaN
    assert parse_json_message('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert parse_json_message(b'{"a": 123456789012345678901234567890}')["a"] == pytest.approx(1.2345678901e29)
    assert parse_json_message(b"[1]") is None and parse_json_message(b"{") is None and parse_json_message(None) is None


def test_decode_json_batch_numbers_dead_letters_by_the_given_indexes():
    msgs = good_messages(10)
    dl = ListDL()
    t, idx, bad = decode_json_batch([msgs[0], b"nope", msgs[2]], "flows", dl, msg_index=[10, 11, 12])
    assert idx.tolist() == [10, 12] and t.num_rows == 2
    assert [(line, reason) for line, reason, _ in dl.items] == [(11, "bad_json")] and bad == {"bad_json": 1}


@pytest.mark.kafka
def test_the_source_places_every_row_at_its_message(kafka_bootstrap):
    """Through a real broker: a JSON topic with bad messages; every row's offset is its message's."""
    import queue
    import time

    from ingest.kafka_io import KafkaSource, OffsetTracker, make_producer

    values = mixed(7, 5)
    topic = new_topic(kafka_bootstrap, 1)
    p = make_producer({"bootstrap": kafka_bootstrap})
    for v in values:
        p.send(topic, value=v if v is not None else b"", partition=0)
    p.flush()
    p.close()
    q: queue.Queue = queue.Queue(maxsize=100)
    dl = ListDL()
    src = KafkaSource({"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-batch", "max_poll_records": 500},
                      q, OffsetTracker(), dead_letter=dl, fmt="json", stop_at_end=True).start()
    got: list = []
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline
            item = q.get(timeout=30)
            if item is None:
                break
            got.append(item)
    finally:
        src.stop()
        src.join(15)
    sent = [v if v is not None else b"" for v in values]
    ref_t, ref_dl, ref_idx = one_by_one(sent)
    t = pa.concat_tables([b.table for b in got])
    offs = np.concatenate([b.offsets for b in got])
    assert t.equals(ref_t)
    assert offs.tolist() == ref_idx            # offset i holds message i (one partition from 0)
    assert all((b.indexes == 0).all() for b in got)
    assert sorted((r, raw) for _, r, raw in dl.items) == sorted((r, raw) for _, r, raw in ref_dl)

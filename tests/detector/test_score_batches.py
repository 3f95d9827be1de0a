"""Offline scoring while the input is still being read (``score_batches``), and the event-time
windowing of ``score_table``: both must give exactly the output of scoring the time-sorted input."""
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from detector.scoring import StreamScorer, score_batches, score_table
from ingest.schema import FLOW_SCHEMA
from ingest.windows import Tumbling, window_all
from training.pretrain import TrainConfig, train_bundle
from training.synthetic import synthetic_flows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DAY = 600.0  # one synthetic "capture" (file) spans 600 s


@pytest.fixture(scope="module")
def bundle():
    table = synthetic_flows(n_benign=1500, n_attack=150, duration=1200, seed=5)
    return train_bundle([table], TrainConfig(epochs=1, hidden=32, seed=0, benign_only=True, objective="contrastive",
                                             window=60.0), progress=False)


def captures(k: int = 4, seed: int = 0) -> list[pa.Table]:
    """``k`` consecutive captures, each shuffled inside (like LUFlow's daily files), rows numbered across them."""
    rng = np.random.default_rng(seed)
    out, first = [], 0
    for i in range(k):
        t = synthetic_flows(n_benign=250, n_attack=25 * (i % 2), duration=DAY, seed=seed + i, t0=1.7e9 + i * DAY)
        t = t.take(pa.array(rng.permutation(t.num_rows)))
        t = t.set_column(0, "row", pa.array(np.arange(first, first + t.num_rows), pa.int64()))
        first += t.num_rows
        out.append(t)
    return out


def batches_of(tables: list[pa.Table], size: int = 97) -> list[pa.RecordBatch]:
    return [b for t in tables for b in t.to_batches(max_chunksize=size)]


def reference(bundle, table: pa.Table) -> pa.Table:
    """The definition: records sorted by (ts, row), windowed with no lateness, scored window by window."""
    order = pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("row", "ascending")])
    wins, _ = window_all([table.take(order)], Tumbling(bundle.window["size"]), lateness=0.0)
    scores = np.full(table.num_rows, np.nan)
    pos = {r: i for i, r in enumerate(table.column("row").to_pylist())}
    for ws in bundle.stream_scorer().score_windows(wins):
        scores[[pos[r] for r in ws.rows.tolist()]] = ws.scores
    return scores


def test_score_table_any_input_order_equals_time_sorted_reference(bundle):
    table = pa.concat_tables(captures(3, seed=1))
    shuffled = table.take(pa.array(np.random.default_rng(2).permutation(table.num_rows)))
    out = score_table(bundle, shuffled)
    assert out.column("row").to_pylist() == shuffled.column("row").to_pylist()
    assert np.array_equal(out.column("score").to_numpy(), reference(bundle, shuffled))


def test_score_batches_time_ordered_captures_equal_score_table_and_score_while_reading(bundle, monkeypatch):
    monkeypatch.setattr(StreamScorer, "BATCH_RECORDS", 100)  # groups of ~2 windows: many groups
    tables = captures(4)
    pulled, first_scored_at = [0], []
    original = StreamScorer._score_flows

    def batches():
        for b in batches_of(tables):
            pulled[0] += 1
            yield b

    def spy(self, windows, built):
        first_scored_at.append(pulled[0])
        return original(self, windows, built)

    monkeypatch.setattr(StreamScorer, "_score_flows", spy)
    got = score_batches(bundle, batches())
    monkeypatch.setattr(StreamScorer, "_score_flows", original)
    want = score_table(bundle, pa.concat_tables(tables))
    assert got.equals(want)
    assert np.array_equal(got.column("score").to_numpy(), reference(bundle, pa.concat_tables(tables)))
    # the first windows were scored before the last capture was read (3 batches each), not after reading all
    assert first_scored_at and first_scored_at[0] <= len(batches_of(tables)) - 3


def test_score_batches_out_of_order_inputs_fall_back_to_whole_input(bundle, caplog):
    tables = captures(4, seed=3)
    backwards = batches_of(tables[::-1])  # the latest capture first: the guess fails on the second one
    with caplog.at_level(logging.INFO, logger="detector.scoring"):
        got = score_batches(bundle, iter(backwards))
    assert "not in time order" in caplog.text
    table = pa.Table.from_batches(backwards)
    assert got.equals(score_table(bundle, table))
    assert got.column("row").to_pylist() == table.column("row").to_pylist()  # input order kept
    assert got.column("reason").null_count == got.num_rows  # every record scored, none late


def test_score_batches_stream_order_and_invalid_ts_equal_score_table(bundle):
    tables = captures(2, seed=4)
    table = pa.concat_tables(tables)
    # two records lose their ts: reason invalid_ts, never dropped
    ts = table.column("ts").to_pylist()
    ts[5] = ts[300] = None
    i = table.column_names.index("ts")
    table = table.set_column(i, pa.field("ts", table.schema.field("ts").type), pa.array(ts, table.schema.field("ts").type))
    for stream_order in (False, True):
        got = score_batches(bundle, table.to_batches(max_chunksize=61), stream_order=stream_order, lateness=5.0)
        want = score_table(bundle, table, stream_order=stream_order, lateness=5.0)
        assert got.equals(want)
        reasons = got.column("reason").to_pylist()
        assert reasons[5] == reasons[300] == "invalid_ts"
        assert ("late" in reasons) == stream_order  # shuffled captures: late only in stream order


def test_score_batches_empty_input(bundle):
    out = score_batches(bundle, iter([]), schema=FLOW_SCHEMA)
    assert out.num_rows == 0 and out.column_names == ["row", "uid", "ts", "score", "alert", "top_technique", "reason"]
    with pytest.raises(ValueError, match="schema"):
        score_batches(bundle, iter([]))


def test_a_window_that_fails_gets_an_error_reason_and_the_others_are_scored(bundle, monkeypatch):
    from detector.pipeline import GraphStream

    table = pa.concat_tables(captures(2, seed=5))
    bad_start = (1.7e9 + 130.0) // 60 * 60  # a 60 s window early in the first capture (windows align to 0)

    def no_batch(self, windows, factored_kb=False):
        raise RuntimeError("batched build unavailable")  # each window is then built alone

    original = GraphStream.build

    def build(self, window):
        if window.start == bad_start:
            raise RuntimeError("broken window")
        return original(self, window)

    monkeypatch.setattr(GraphStream, "build_many", no_batch)
    monkeypatch.setattr(GraphStream, "build", build)
    out = score_batches(bundle, table.to_batches(max_chunksize=100))
    ts = table.column("ts").cast(pa.int64()).to_numpy() / 1e6
    in_bad = (ts >= bad_start) & (ts < bad_start + 60.0)
    reasons = np.array(out.column("reason").to_pylist(), dtype=object)
    assert in_bad.any() and (reasons[in_bad] == "error:RuntimeError").all()
    assert all(r is None for r in reasons[~in_bad])
    assert np.isnan(out.column("score").to_numpy(zero_copy_only=False)[in_bad]).all()

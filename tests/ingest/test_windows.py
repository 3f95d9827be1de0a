"""Event-time windows on hand-made streams: late, out-of-order, duplicate, empty, idle."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pytest

from ingest.schema import FLOW_SCHEMA, conform
from ingest.windows import EventTimeWindower, Sliding, Tumbling, Window, parse_duration, window_all


def flows(ts: Sequence[float | None], rows: Sequence[int] | None = None, **cols: Any) -> pa.RecordBatch:
    """A FLOW_SCHEMA batch with ``ts`` in epoch seconds."""
    n = len(ts)
    rows = list(range(n)) if rows is None else list(rows)
    us = [None if t is None else int(round(t * 1_000_000)) for t in ts]
    data = {
        "row": pa.array(rows, pa.int64()),
        "ts": pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "src_ip": pa.array(cols.pop("src_ip", ["10.0.0.1"] * n), pa.string()),
        "dst_ip": pa.array(cols.pop("dst_ip", ["10.0.0.2"] * n), pa.string()),
    }
    for name, values in cols.items():
        data[name] = pa.array(list(values), FLOW_SCHEMA.field(name).type)
    table = pa.table(data)
    if any(t is None for t in ts):
        return table.to_batches()[0]  # schema forbids null ts: skip conform on purpose
    return pa.RecordBatch.from_pydict(conform(table, FLOW_SCHEMA).to_pydict(), schema=FLOW_SCHEMA)


def rows_of(w: Window) -> list[int]:
    return w.table.column("row").to_pylist()


def spans(ws: list[Window]) -> list[tuple[float, float]]:
    return [(w.start, w.end) for w in ws]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tumbling_in_order_closes_by_watermark_and_flushes() -> None:
    w = EventTimeWindower(Tumbling(60), lateness=0)
    out = w.push(flows([0, 10, 59.999999, 60, 61, 130]))
    assert spans(out) == [(0, 60), (60, 120)]
    assert [rows_of(x) for x in out] == [[0, 1, 2], [3, 4]]
    assert w.watermark == 130
    assert w.open_windows == [(120, 180)]
    rest = w.flush()
    assert spans(rest) == [(120, 180)] and rows_of(rest[0]) == [5]
    assert w.flush() == []
    assert w.stats.windows == 3 and w.stats.late == 0 and w.stats.records == 6


def test_window_closes_only_after_lateness() -> None:
    w = EventTimeWindower(Tumbling(60), lateness=10)
    assert w.push(flows([5, 65])) == []          # watermark 55 < 60
    assert w.push(flows([69.9], rows=[2])) == []  # watermark 59.9
    out = w.push(flows([70], rows=[3]))          # watermark 60 -> [0,60) closes
    assert spans(out) == [(0, 60)] and rows_of(out[0]) == [0]


def test_lateness_is_judged_in_arrival_order_within_a_batch() -> None:
    # 100 then 10: when 10 arrives the watermark is 90, [0,60) is closed -> late.
    w = EventTimeWindower(Tumbling(60), lateness=10)
    out = w.push(flows([100, 10]))
    assert out == [] and w.stats.late == 1
    assert w.late[0].column("row").to_pylist() == [1]
    # 10 then 100: 10 is on time and its window closes right after.
    w2 = EventTimeWindower(Tumbling(60), lateness=10)
    out2 = w2.push(flows([10, 100]))
    assert spans(out2) == [(0, 60)] and rows_of(out2[0]) == [0]
    assert w2.stats.late == 0


def test_out_of_order_within_lateness_lands_in_its_window() -> None:
    w = EventTimeWindower(Tumbling(60), lateness=10)
    out = w.push(flows([50, 65, 55, 72]))
    # 55 arrives at watermark 55: window [0,60) still open. 72 -> watermark 62 closes it.
    assert spans(out) == [(0, 60)] and rows_of(out[0]) == [0, 2]
    rest = w.flush()
    assert spans(rest) == [(60, 120)] and rows_of(rest[0]) == [1, 3]
    assert w.stats.late == 0


def test_late_record_goes_to_side_output_and_is_counted() -> None:
    w = EventTimeWindower(Tumbling(60), lateness=5)
    w.push(flows([1, 30, 70]))  # watermark 65: [0,60) emitted
    out = w.push(flows([59, 66], rows=[3, 4], src_bytes=[111, 222]))
    assert out == []
    assert w.stats.late == 1 and w.stats.late_partial == 0
    (late,) = w.late
    assert late.column("row").to_pylist() == [3]
    assert late.column("src_bytes").to_pylist() == [111]  # the whole record, not just its row id
    rest = w.flush()
    assert [rows_of(x) for x in rest] == [[2, 4]]
    assert w.drain_late()[0].num_rows == 1 and w.late == []


def test_duplicates_are_kept() -> None:
    # Same content twice with different row ids, and a replay of the same row id.
    b = flows([10, 10, 20], rows=[0, 1, 1], src_bytes=[5, 5, 7])
    out, w = window_all([b], Tumbling(60))
    assert rows_of(out[0]) == [0, 1, 1]
    assert out[0].table.column("src_bytes").to_pylist() == [5, 5, 7]
    assert w.stats.records == 3


def test_empty_windows_are_not_emitted() -> None:
    out, _ = window_all([flows([0, 300, 301])], Tumbling(60), lateness=0)
    assert spans(out) == [(0, 60), (300, 360)]
    out2, _ = window_all([flows([0, 300])], Sliding(60, 30), lateness=0)
    assert spans(out2) == [(-30, 30), (0, 60), (270, 330), (300, 360)]


def test_empty_batch_is_a_no_op() -> None:
    w = EventTimeWindower(Tumbling(60))
    assert w.push(flows([])) == []
    assert w.watermark is None and w.stats.records == 0


def test_rows_in_window_follow_row_order() -> None:
    out, _ = window_all([flows([3, 1, 2], rows=[7, 5, 6]), flows([4], rows=[4])], Tumbling(60))
    assert rows_of(out[0]) == [4, 5, 6, 7]


def test_sliding_assignment_and_partial_lateness() -> None:
    w = EventTimeWindower(Sliding(60, 30), lateness=10)
    assert w.push(flows([45])) == []
    assert w.open_windows == [(0, 60), (30, 90)]
    out = w.push(flows([100], rows=[1]))  # watermark 90: [0,60) and [30,90) close
    assert spans(out) == [(0, 60), (30, 90)]
    assert [rows_of(x) for x in out] == [[0], [0]]
    out = w.push(flows([75], rows=[2]))  # belongs to [30,90) (closed) and [60,120) (open)
    assert out == []
    assert w.stats.late == 1 and w.stats.late_partial == 1
    assert w.late[0].column("row").to_pylist() == [2]
    rest = w.flush()
    assert spans(rest) == [(60, 120), (90, 150)]
    assert [rows_of(x) for x in rest] == [[1, 2], [1]]


def test_sliding_non_multiple_slide() -> None:
    out, _ = window_all([flows([10])], Sliding(25, 10), lateness=0)
    # ts 10 is in [-10,15), [0,25), [10,35)
    assert spans(out) == [(-10, 15), (0, 25), (10, 35)]


def test_idle_timeout_flushes_with_fake_clock() -> None:
    clock = FakeClock()
    w = EventTimeWindower(Tumbling(60), lateness=10, idle_timeout=5, clock=clock)
    assert w.poll() == []  # nothing open
    w.push(flows([10, 20]))
    clock.now += 4.9
    assert w.poll() == []
    clock.now += 0.2
    out = w.poll()
    assert spans(out) == [(0, 60)] and rows_of(out[0]) == [0, 1]
    assert w.stats.idle_flushes == 1
    assert w.watermark == 60  # advanced to the flushed window's end, never back
    assert w.poll() == []
    w.push(flows([30], rows=[2]))  # its window was flushed: late, not dropped
    assert w.stats.late == 1
    clock.now += 100
    assert w.poll() == []  # the late record opened nothing


def test_idle_timer_restarts_on_each_push() -> None:
    clock = FakeClock()
    w = EventTimeWindower(Tumbling(60), idle_timeout=5, clock=clock)
    w.push(flows([10]))
    clock.now += 4
    w.push(flows([11], rows=[1]))
    clock.now += 4
    assert w.poll() == []
    clock.now += 1
    assert len(w.poll()) == 1


def test_null_ts_is_counted_and_kept() -> None:
    w = EventTimeWindower(Tumbling(60))
    w.push(flows([1, None, 2]))
    assert w.stats.invalid == 1 and w.invalid[0].column("row").to_pylist() == [1]
    out = w.flush()
    assert rows_of(out[0]) == [0, 2]


def test_infinite_lateness_windows_any_order_like_sorted_input() -> None:
    """lateness=inf: records join their window whatever their order; nothing closes until the source
    advances the watermark or flushes; the windows equal those of the time-sorted input."""
    ts = [130, 5, 70, 59, 3, 140, 65, 121]
    w = EventTimeWindower(Tumbling(60), lateness=float("inf"))
    assert w.push(flows(ts)) == [] and w.watermark is None
    got = w.flush()
    order = sorted(range(len(ts)), key=lambda i: (ts[i], i))
    ref, _ = window_all([flows([ts[i] for i in order], rows=order)], Tumbling(60), lateness=0)
    assert spans(got) == spans(ref) == [(0, 60), (60, 120), (120, 180)]
    assert [rows_of(x) for x in got] == [rows_of(x) for x in ref] == [[1, 3, 4], [2, 6], [0, 5, 7]]
    assert w.stats.late == 0


def test_advance_watermark_emits_closed_windows_and_later_records_are_late() -> None:
    w = EventTimeWindower(Tumbling(60), lateness=float("inf"))
    w.push(flows([70, 5, 130], rows=[0, 1, 2]))
    out = w.advance_watermark(120.0)  # the source: nothing before t=120 is still to come
    assert spans(out) == [(0, 60), (60, 120)] and w.watermark == 120
    assert w.advance_watermark(100.0) == [] and w.watermark == 120  # never backwards
    assert w.push(flows([50, 150], rows=[3, 4])) == []  # 50 missed [0, 60): late
    assert w.stats.late == 1 and w.late[0].column("row").to_pylist() == [3]
    rest = w.flush()
    assert spans(rest) == [(120, 180)] and rows_of(rest[0]) == [2, 4]


def test_infinite_lateness_only_for_inf() -> None:
    with pytest.raises(ValueError, match="lateness"):
        EventTimeWindower(Tumbling(60), lateness=float("nan"))


def test_table_input_equals_batch_input() -> None:
    b = flows([5, 70, 3, 140, 65])
    a, _ = window_all([b], Sliding(60, 20), lateness=10)
    t, _ = window_all([pa.Table.from_batches([b.slice(0, 2), b.slice(2)])], Sliding(60, 20), lateness=10)
    assert spans(a) == spans(t) and [rows_of(x) for x in a] == [rows_of(x) for x in t]


def reference(ts: list[float], size: float, slide: float, lateness: float, chunks: list[int]):
    """Record-at-a-time reference windower (slow, obviously correct)."""
    open_: dict[int, list[int]] = {}
    closed: set[int] = set()
    emitted: list[tuple[float, list[int]]] = []
    late: list[int] = []
    max_ts = -np.inf
    pos = 0
    for c in chunks:
        for i in range(pos, pos + c):
            t = ts[i]
            max_ts = max(max_ts, t)
            wm = max_ts - lateness
            k = int(np.floor(t / slide))
            missed = False
            while k * slide + size > t:
                if k * slide + size <= wm or k in closed:
                    missed = True
                else:
                    open_.setdefault(k, []).append(i)
                k -= 1
            if missed:
                late.append(i)
        pos += c
        wm = max_ts - lateness
        for k in sorted(open_):
            if k * slide + size <= wm:
                emitted.append((k * slide, sorted(open_.pop(k))))
                closed.add(k)
    for k in sorted(open_):
        emitted.append((k * slide, sorted(open_.pop(k))))
    return emitted, late


@pytest.mark.parametrize("size,slide", [(60, 60), (60, 30), (60, 20), (50, 15)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_record_at_a_time_reference(size: float, slide: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    base = np.sort(rng.uniform(0, 2000, n))
    ts = (base + rng.normal(0, 15, n)).round(3)  # jitter: out of order, some beyond lateness
    ts[rng.integers(0, n, 10)] -= 200  # a few very late ones
    chunks = []
    left = n
    while left:
        c = int(min(left, rng.integers(1, 60)))
        chunks.append(c)
        left -= c
    exp_windows, exp_late = reference(ts.tolist(), size, slide, 10.0, chunks)

    w = EventTimeWindower(Sliding(size, slide) if slide != size else Tumbling(size), lateness=10.0)
    got: list[Window] = []
    wms = []
    pos = 0
    for c in chunks:
        got += w.push(flows(ts[pos : pos + c].tolist(), rows=range(pos, pos + c)))
        wms.append(w.watermark)
        pos += c
    got += w.flush()
    assert [(x.start, rows_of(x)) for x in got] == exp_windows
    late_rows = [r for b in w.late for r in b.column("row").to_pylist()]
    assert late_rows == exp_late
    assert w.stats.late == len(exp_late)
    assert all(a <= b for a, b in zip(wms, wms[1:])), "watermark went backwards"
    assert len(exp_late) > 0  # the stream does exercise lateness
    for x in got:  # every row really lies in its window
        tsx = x.table.column("ts").cast(pa.int64()).to_numpy() / 1e6
        assert np.all((tsx >= x.start) & (tsx < x.end))
    if slide == size:  # tumbling: each record in exactly one window or late
        assert sum(x.num_rows for x in got) + w.stats.late == n


def test_watermark_never_goes_backwards_with_old_batch() -> None:
    w = EventTimeWindower(Tumbling(10), lateness=2)
    w.push(flows([100]))
    assert w.watermark == 98
    w.push(flows([5, 6], rows=[1, 2]))
    assert w.watermark == 98 and w.stats.late == 2


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Tumbling(0), "size must be > 0"),
        (lambda: Tumbling(-5), "size must be > 0"),
        (lambda: Sliding(60, 90), "slide .* must be <= size"),
        (lambda: Sliding(60, 0), "slide must be > 0"),
        (lambda: EventTimeWindower(Tumbling(60), lateness=-1), "lateness must be >= 0"),
        (lambda: EventTimeWindower(Tumbling(60), idle_timeout=0), "idle_timeout must be > 0"),
        (lambda: EventTimeWindower("60s"), "Tumbling or Sliding"),
    ],
)
def test_bad_config_is_a_clear_error(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "text,seconds",
    [("60s", 60), ("5m", 300), ("1h", 3600), ("1d", 86400), ("250ms", 0.25), ("90", 90), (" 1.5m ", 90), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "6x", "-5s", "abc", "1hh", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)

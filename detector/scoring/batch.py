"""Offline scoring of whole inputs (``graphsentry score`` and the evaluation harness): :func:`score_table`
and :func:`score_batches` give one output row per input row, in input order.
"""
from __future__ import annotations

import logging

import numpy as np

from detector.runtime import torch_threads
from detector.scoring.behaviour import behaviour_top
from detector.scoring.records import FlowScores

log = logging.getLogger(__name__)


def scores_schema():
    import pyarrow as pa

    return pa.schema([
        pa.field("row", pa.int64(), nullable=False),
        pa.field("uid", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("score", pa.float64()),
        pa.field("alert", pa.bool_()),
        pa.field("top_technique", pa.string()),
        pa.field("reason", pa.string()),
    ])


class _Results:
    """Scored flows (a group's :class:`FlowScores` at a time) and failed records, placed at the records'
    positions in the input once it is complete."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.alerts: list[np.ndarray] = []
        self.tops: list[np.ndarray] = []
        self.failed: list[tuple[np.ndarray, str]] = []  # (rows, reason), applied after the scores

    def put(self, fs: FlowScores) -> None:
        self.rows.append(fs.rows)
        self.scores.append(fs.scores)
        self.alerts.append(fs.alerts)
        top = fs.top_technique
        if fs.behaviour_scores is not None and fs.alerts.any():
            # an alert without a knowledge technique gets its best fired behaviour technique, if any
            need = fs.alerts & np.equal(top, None)
            if need.any():
                top = top.copy()
                top[need] = behaviour_top(fs.behaviour_scores[need])
        self.tops.append(top)

    def fail(self, table, reason: str) -> None:
        self.failed.append((_rows_of(table), reason))

    def table(self, table, windower):
        """The output table: one row per row of ``table`` (the whole input), in its order."""
        import pyarrow as pa

        n = table.num_rows
        rows_np = table.column("row").to_numpy().astype(np.int64)
        if np.array_equal(rows_np, np.arange(n)):  # the readers' numbering: a row's position is its value
            def positions(rows: np.ndarray) -> np.ndarray:
                return rows
        else:  # rows are unique within one scoring call
            order = np.argsort(rows_np, kind="stable")
            sorted_rows = rows_np[order]

            def positions(rows: np.ndarray) -> np.ndarray:
                return order[np.searchsorted(sorted_rows, rows)]

        score, alert = np.full(n, np.nan), np.zeros(n, dtype=bool)
        top = np.empty(n, dtype=object)  # all None (object arrays start empty)
        reasons = ["not_scored"]  # reason codes: -1 = null (scored), else an index in this list
        reason = np.zeros(n, dtype=np.int16)
        if self.rows:
            pos = positions(np.concatenate(self.rows))
            score[pos], alert[pos] = np.concatenate(self.scores), np.concatenate(self.alerts)
            top[pos], reason[pos] = np.concatenate(self.tops), -1
        failed = self.failed + [(_rows_of(b), "late") for b in windower.late] + \
            [(_rows_of(b), "invalid_ts") for b in windower.invalid]
        for rows, why in failed:
            if why not in reasons:
                reasons.append(why)
            pos = positions(rows)
            score[pos], alert[pos], reason[pos] = np.nan, False, reasons.index(why)
        uid = table.column("uid") if "uid" in table.column_names else pa.nulls(n, pa.string())
        if "uid" not in table.column_names and "tx_id" in table.column_names:
            uid = table.column("tx_id")
        return pa.table({
            "row": pa.array(rows_np, pa.int64()), "uid": uid.cast(pa.string()),
            "ts": table.column("ts").cast(pa.timestamp("us", tz="UTC")),
            "score": pa.array(score, mask=np.isnan(score), type=pa.float64()),
            "alert": pa.array(alert, pa.bool_()), "top_technique": pa.array(top, pa.string()),
            "reason": pa.array(reasons, pa.string()).take(pa.array(reason, mask=reason < 0)),
        }, schema=scores_schema())


def _rows_of(batch) -> np.ndarray:
    return batch.column(batch.schema.get_field_index("row")).to_numpy().astype(np.int64)


class _OutOfOrder(Exception):
    """A record arrived for a window already scored (the speculation of :func:`score_batches` failed)."""


def _batch_min_seconds(batch) -> float | None:
    """Earliest ``ts`` of a batch in epoch seconds (None: no valid ts)."""
    import pyarrow.compute as pc

    from ingest.windows import ts_us

    if batch.num_rows == 0:
        return None
    lo = pc.min(ts_us(batch)).as_py()
    return None if lo is None else lo / 1e6


def _table_source(table, chunk: int = 65536):
    """``(batch, watermark)`` for a complete table: the watermark after batch ``i`` is the earliest
    ``ts`` of the batches after it, known exactly (None for the last one)."""
    batches = table.to_batches(max_chunksize=chunk)
    lows = [_batch_min_seconds(b) for b in batches]
    after, wms = None, []
    for lo in reversed(lows):
        wms.append(after)
        if lo is not None:
            after = lo if after is None else min(after, lo)
    yield from zip(batches, reversed(wms))


def _stream_source(batches, seen: list):
    """``(batch, watermark)`` for batches still being read: the watermark after a batch is its own
    earliest ``ts`` (a guess: later inputs start no earlier; checked, see :func:`score_batches`).
    Every batch is appended to ``seen``."""
    for batch in batches:
        seen.append(batch)
        yield batch, _batch_min_seconds(batch)


def _score(bundle, source, stream_order: bool, lateness: float | None, whole):
    """Score the ``(batch, watermark)`` pairs of ``source``; ``whole()`` gives the complete input table
    once the source is exhausted. Raises :class:`_OutOfOrder` (event-time order only) when a record
    arrives for a window that was already scored."""
    import logging
    import math

    from ingest.windows import EventTimeWindower, Tumbling

    log = logging.getLogger(__name__)
    win = bundle.window or {}
    size = float(win.get("size", 60.0))
    lat = float(win.get("lateness", 10.0) if lateness is None else lateness)
    scorer = bundle.stream_scorer()
    # event-time order: records join their window whatever their order (infinite lateness) and windows
    # close when the source's watermark passes them; stream order: the daemon's rule (lateness)
    w = EventTimeWindower(Tumbling(size), lateness=lat if stream_order else math.inf)

    def windows():
        for batch, wm in source:
            yield from w.push(batch)
            if not stream_order:
                if w.stats.late:
                    raise _OutOfOrder
                if wm is not None:
                    yield from w.advance_watermark(wm)
        yield from w.flush()

    res, errors = _Results(), 0
    # One lazy pipeline over all windows (graphs batched per group and built ahead in a worker,
    # temporal state still advanced window by window): same scores as one window at a time.
    for _group, flows, failed in scorer.iter_flow_scores(windows()):
        if flows is not None:
            res.put(flows)
        for win_, exc in failed:
            errors += 1
            if errors <= 3:  # one bad window must not take the rest down
                log.warning("window [%s, %s) failed to score: %r", win_.start, win_.end, exc)
            res.fail(win_.table, f"error:{type(exc).__name__}")
    return res.table(whole(), w)


def score_table(bundle, table, stream_order: bool = False, lateness: float | None = None):
    """Score every record of ``table`` (canonical schema); returns one output row per input row, in input order.

    By default records are windowed in event-time order (a file is complete, so nothing is
    late): each window holds the records whose ``ts`` falls in it, in ``row`` order, and windows are
    scored oldest first, whatever the order of the table. With ``stream_order=True`` they are pushed
    in input order through an ``EventTimeWindower`` with the bundle's lateness, like the daemon:
    records that miss their window get a null score with reason ``late``. Records with a null ``ts``
    get reason ``invalid_ts``; a window that fails to score gets ``error:<type>`` for its rows.
    Runs with the single-thread torch setting of :mod:`detector.runtime`.
    """
    with torch_threads():
        return _score(bundle, _table_source(table), stream_order, lateness, lambda: table)


def score_batches(bundle, batches, stream_order: bool = False, lateness: float | None = None, schema=None):
    """:func:`score_table` on the concatenation of ``batches`` (an iterable, e.g. a reader), scoring
    while they are still being read: the same output, bit for bit.

    In event-time order a window is scored once a batch arrives whose earliest record is past its end
    (inputs such as daily captures given in time order). That is a guess about the batches still to
    come: when a later record falls into a window already scored, the partial work is dropped, the
    rest is read and the whole input is scored by :func:`score_table` (logged). ``schema``: of the
    empty table returned when there are no batches.
    """
    import logging

    import pyarrow as pa

    seen: list = []

    def whole():
        if seen:
            return pa.Table.from_batches(seen)
        if schema is None:
            raise ValueError("no input batches and no schema for the empty output")
        return schema.empty_table()

    with torch_threads():
        source = _stream_source(batches, seen)
        try:
            return _score(bundle, source, stream_order, lateness, whole)
        except _OutOfOrder:
            for _ in source:  # read the rest
                pass
            logging.getLogger(__name__).info(
                "inputs are not in time order across batches: scoring them again after reading all")
    table = whole()
    return score_table(bundle, table, stream_order, lateness)

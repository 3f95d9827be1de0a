"""Event-time windows over canonical record batches (tumbling and sliding).

Modelled on Bytewax's windowing operators: a small *windower* config
(:class:`Tumbling`, :class:`Sliding`) says which windows a timestamp belongs to,
and an :class:`EventTimeWindower` holds the state (open windows, watermark,
late side output).

Semantics (all times are event time, UTC):

* ``watermark = max(event ts seen) - lateness``; it never goes backwards. A
  flush (idle or end of input) also advances it to the end of the last window
  it emitted, so records for flushed windows are late afterwards.
* A window ``[start, end)`` is *closed* once ``end <= watermark`` (equivalently
  ``end + lateness <= max ts seen``), and it is then emitted by ``push``.
* Lateness is judged per record, in arrival order, exactly as if records were
  pushed one by one: a record is late for a window if that window was already
  closed by the watermark as it stood when the record arrived. This is computed
  with a running maximum over the batch, not a Python loop per record.
* Late records are never dropped silently: each record that missed at least
  one of its windows is appended (once) to the side output :attr:`late` and
  counted in ``stats.late``. With sliding windows a record can miss an early
  window and still land in a later, open one (``stats.late_partial``).
* Out-of-order records within the lateness go into their proper window(s).
* Empty windows are never emitted (a window exists only once a record lands
  in it). Consumers that need a dense time axis fill gaps from ``start``/``end``.
* Duplicate records (same content, same or different ``row``) are kept as they
  are: deduplication is a reader/source concern (a replayed Kafka offset, a
  file read twice), and silently removing records here would break the
  "one output row per input row" rule of ``graphsentry score``.
* Rows inside an emitted window are in ``row`` order.
* Records whose ``ts`` is null cannot be placed in time: they are counted in
  ``stats.invalid`` and kept in the side output :attr:`invalid`.

Windows are aligned to ``align`` (epoch seconds, default 0): window ``k`` is
``[align + k*slide, align + k*slide + size)``.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

_US = 1_000_000


def _to_us(seconds: float, what: str, allow_zero: bool = False) -> int:
    if not isinstance(seconds, (int, float)) or math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{what} must be a finite number of seconds, got {seconds!r}")
    us = int(round(seconds * _US))
    if us < 0 or (us == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be {rule} seconds (at microsecond resolution), got {seconds!r}")
    return us


@dataclass(frozen=True)
class Tumbling:
    """Non-overlapping windows of ``size`` seconds: each record is in exactly one."""

    size: float
    align: float = 0.0

    def __post_init__(self) -> None:
        _to_us(self.size, "Tumbling size")

    @property
    def slide(self) -> float:
        return self.size


@dataclass(frozen=True)
class Sliding:
    """Windows of ``size`` seconds starting every ``slide`` seconds (``slide <= size``).

    Each record is in ``ceil(size / slide)`` windows or one fewer. ``slide > size``
    (gaps between windows) is refused: records in a gap would belong to no window.
    """

    size: float
    slide: float
    align: float = 0.0

    def __post_init__(self) -> None:
        size = _to_us(self.size, "Sliding size")
        slide = _to_us(self.slide, "Sliding slide")
        if slide > size:
            raise ValueError(
                f"Sliding slide ({self.slide!r}s) must be <= size ({self.size!r}s): "
                "records between windows would belong to no window"
            )


Windower = Tumbling | Sliding


@dataclass
class Window:
    """One closed window: ``[start, end)`` in epoch seconds and its rows (in ``row`` order).

    ``slide`` is the hop to the next window of the same windower (``end - start``
    for tumbling windows); graph builders use it to carry per-endpoint state
    correctly across overlapping windows. Hand-made windows may leave it None.
    """

    start: float
    end: float
    table: pa.Table
    slide: float | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


@dataclass
class WindowStats:
    """Counters of an :class:`EventTimeWindower` (records, not assignments)."""

    records: int = 0          # records pushed (valid ts)
    late: int = 0             # records that missed at least one window (all in `late`)
    late_partial: int = 0     # of those, records that still landed in a later open window (sliding)
    invalid: int = 0          # records with a null ts (all in `invalid`)
    windows: int = 0          # windows emitted
    idle_flushes: int = 0     # times poll() flushed because input was idle

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_NEVER = -(2 ** 62)  # a watermark before any event time (infinite lateness)


def ts_us(batch: pa.RecordBatch) -> pa.Array:
    """The ``ts`` column as int64 microseconds since the epoch (nulls kept)."""
    col = batch.column(batch.schema.get_field_index("ts"))
    t = col.type
    if pa.types.is_timestamp(t):
        if t.unit != "us":
            col = pc.cast(col, pa.timestamp("us", tz=t.tz))
        return pc.cast(col, pa.int64())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        # Numeric ts is read as epoch seconds.
        return pc.cast(pc.round(pc.multiply(pc.cast(col, pa.float64()), float(_US))), pa.int64())
    raise ValueError(f"column 'ts' must be a timestamp or epoch seconds, got {t}")


class EventTimeWindower:
    """Assigns records to event-time windows, tracks the watermark, emits closed windows.

    Args:
        windower: :class:`Tumbling` or :class:`Sliding`.
        lateness: allowed lateness in seconds (default 10): how far behind the
            newest event a record may be and still join its window. ``math.inf``:
            records never move the watermark; only :meth:`advance_watermark` (a
            source that knows its own order) and :meth:`flush` close windows.
        idle_timeout: seconds of the injected ``clock`` without any record after
            which :meth:`poll` flushes every open window (default None: never).
        clock: "now" in seconds, injectable so tests drive it (default ``time.monotonic``).
    """

    def __init__(
        self,
        windower: Windower,
        lateness: float = 10.0,
        idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(windower, (Tumbling, Sliding)):
            raise ValueError(f"windower must be Tumbling or Sliding, got {windower!r}")
        self.windower = windower
        self.lateness = float(lateness)
        self._size = _to_us(windower.size, "window size")
        self._slide = _to_us(windower.slide, "window slide")
        self._align = int(round(windower.align * _US))
        # None: infinite lateness (the watermark moves only by advance_watermark / flush)
        self._lat = None if lateness == math.inf else _to_us(lateness, "lateness", allow_zero=True)
        if idle_timeout is not None and not (idle_timeout > 0):
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {idle_timeout!r}")
        self.idle_timeout = idle_timeout
        self.clock = clock
        # Windows per record: ceil(size/slide); a record may be in one fewer.
        self._per_record = -(-self._size // self._slide)
        self._pending: dict[int, list[pa.RecordBatch]] = {}
        self._order: dict[int, int] = {}      # per open window: max row so far, -1 if pieces interleave
        self._pending_rows = 0
        self._max_ts: int | None = None
        self._wm: int | None = None           # watermark, int us; None before any record
        self._last_arrival = clock()
        self.late: list[pa.RecordBatch] = []
        self.invalid: list[pa.RecordBatch] = []
        self.stats = WindowStats()

    # -- public state -------------------------------------------------------
    @property
    def watermark(self) -> float | None:
        """Current watermark in epoch seconds (None before the first record)."""
        return None if self._wm is None else self._wm / _US

    @property
    def max_event_time(self) -> float | None:
        return None if self._max_ts is None else self._max_ts / _US

    @property
    def pending_rows(self) -> int:
        """Record assignments held in open windows (a record counts once per window)."""
        return self._pending_rows

    @property
    def open_windows(self) -> list[tuple[float, float]]:
        return [self._bounds(k) for k in sorted(self._pending)]

    def drain_late(self) -> list[pa.RecordBatch]:
        """Return and clear the late side output (long-running consumers call this)."""
        out, self.late = self.late, []
        return out

    # -- operations ---------------------------------------------------------
    def push(self, batch: pa.RecordBatch | pa.Table) -> list[Window]:
        """Add records (in arrival order); return the windows this closes, oldest first."""
        if isinstance(batch, pa.Table):
            closed: list[Window] = []
            for b in batch.to_batches():
                closed += self._push_batch(b)
            return closed
        return self._push_batch(batch)

    def poll(self) -> list[Window]:
        """Flush every open window if no record arrived for ``idle_timeout`` clock seconds."""
        if self.idle_timeout is None or not self._pending:
            return []
        if self.clock() - self._last_arrival < self.idle_timeout:
            return []
        self.stats.idle_flushes += 1
        return self._emit_all()

    def advance_watermark(self, t: float) -> list[Window]:
        """The source says no record before ``t`` (epoch seconds) is still to come: emit the windows
        that end at or before ``t``, oldest first. A record pushed later into one of them is late."""
        us = int(round(float(t) * _US))
        self._wm = us if self._wm is None else max(self._wm, us)
        return self._emit_closed()

    def flush(self) -> list[Window]:
        """End of input: emit every open window, oldest first."""
        return self._emit_all()

    # -- internals ----------------------------------------------------------
    def _bounds(self, k: int) -> tuple[float, float]:
        start = self._align + k * self._slide
        return start / _US, (start + self._size) / _US

    def _push_batch(self, batch: pa.RecordBatch) -> list[Window]:
        if batch.num_rows == 0:
            return []
        self._last_arrival = self.clock()
        ts_arr = ts_us(batch)
        if ts_arr.null_count:
            valid = pc.is_valid(ts_arr)
            bad = batch.filter(pc.invert(valid))
            self.invalid.append(bad)
            self.stats.invalid += bad.num_rows
            log.warning("%d record(s) with null ts kept in the invalid side output", bad.num_rows)
            batch = batch.filter(valid)
            ts_arr = ts_arr.filter(valid)
            if batch.num_rows == 0:
                return []
        ts = ts_arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        n = ts.shape[0]
        self.stats.records += n

        # Max event time as each record arrives (including itself: a record can
        # never close its own windows, since end > ts >= ts - lateness).
        cummax = np.maximum.accumulate(ts)
        if self._max_ts is not None:
            np.maximum(cummax, self._max_ts, out=cummax)
        wm_i = cummax - self._lat if self._lat is not None else np.full(n, _NEVER, dtype=np.int64)
        if self._wm is not None:
            np.maximum(wm_i, self._wm, out=wm_i)
        # Window k is closed for record i iff align + k*slide + size <= wm_i.
        k_closed = np.floor_divide(wm_i - self._align - self._size, self._slide)
        k_hi = np.floor_divide(ts - self._align, self._slide)

        late_any = np.zeros(n, dtype=bool)
        landed = np.zeros(n, dtype=bool)
        idx_parts: list[np.ndarray] = []
        k_parts: list[np.ndarray] = []
        for j in range(self._per_record):
            k = k_hi - j
            inwin = ts < self._align + k * self._slide + self._size
            late = inwin & (k <= k_closed)
            ok = inwin & ~late
            late_any |= late
            landed |= ok
            sel = np.flatnonzero(ok)
            if sel.size:
                idx_parts.append(sel)
                k_parts.append(k[sel])

        if late_any.any():
            late_idx = np.flatnonzero(late_any)
            self.late.append(batch.take(pa.array(late_idx)))
            self.stats.late += int(late_idx.size)
            self.stats.late_partial += int(np.count_nonzero(late_any & landed))

        if idx_parts:
            idx = np.concatenate(idx_parts)
            kk = np.concatenate(k_parts)
            row_id = self._row_ids(batch)
            # By window, then `row` (then arrival): each window's piece is already in row order,
            # so emitting needs no per-window sort (pyarrow take costs ~10 us per column).
            order = np.lexsort((idx, row_id[idx], kk))
            idx, kk = idx[order], kk[order]
            rows = batch.take(pa.array(idx))  # one gather, then zero-copy slices per window
            r = row_id[idx]
            uniq, starts = np.unique(kk, return_index=True)
            ends = np.append(starts[1:], kk.size)
            for k, s, e, lo, hi in zip(uniq.tolist(), starts.tolist(), ends.tolist(), r[starts].tolist(), r[ends - 1].tolist()):
                parts = self._pending.get(k)
                if parts is None:
                    self._pending[k] = [rows.slice(s, e - s)]
                    self._order[k] = hi
                else:
                    parts.append(rows.slice(s, e - s))
                    # A piece whose first row precedes an earlier piece's last row needs a sort on emit.
                    self._order[k] = max(self._order[k], hi) if lo >= self._order[k] >= 0 else -1
            self._pending_rows += int(idx.size)

        self._max_ts = int(cummax[-1])
        if self._lat is None:
            return self._emit_closed() if self._wm is not None else []
        wm = int(cummax[-1]) - self._lat
        self._wm = wm if self._wm is None else max(self._wm, wm)
        return self._emit_closed()

    @staticmethod
    def _row_ids(batch: pa.RecordBatch) -> np.ndarray:
        i = batch.schema.get_field_index("row")
        if i < 0:  # not canonical, but still usable: arrival order stands in for `row`
            return np.arange(batch.num_rows, dtype=np.int64)
        return pc.fill_null(batch.column(i), -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    def _emit_closed(self) -> list[Window]:
        assert self._wm is not None
        ready = [k for k in self._pending if self._align + k * self._slide + self._size <= self._wm]
        return [self._emit(k) for k in sorted(ready)]

    def _emit_all(self) -> list[Window]:
        out = [self._emit(k) for k in sorted(self._pending)]
        if out:
            end = int(round(out[-1].end * _US))
            self._wm = end if self._wm is None else max(self._wm, end)
        return out

    def _emit(self, k: int) -> Window:
        parts = self._pending.pop(k)
        in_order = self._order.pop(k) >= 0
        self._pending_rows -= sum(p.num_rows for p in parts)
        try:
            table = pa.Table.from_batches(parts)
        except pa.ArrowInvalid:
            # Batches from different sources may differ in schema metadata/nullability.
            table = pa.concat_tables([pa.Table.from_batches([p]) for p in parts], promote_options="permissive")
        if not in_order and "row" in table.column_names:
            rows = table.column("row").to_numpy()
            table = table.take(pa.array(np.argsort(rows, kind="stable")))
        start, end = self._bounds(k)
        self.stats.windows += 1
        return Window(start=start, end=end, table=table, slide=self._slide / _US)


def window_all(
    batches: Iterable[pa.RecordBatch | pa.Table],
    windower: Windower,
    lateness: float = 10.0,
) -> tuple[list[Window], EventTimeWindower]:
    """Convenience: push every batch, flush, return (windows, windower) for stats/late."""
    w = EventTimeWindower(windower, lateness=lateness)
    out: list[Window] = []
    for b in batches:
        out += w.push(b)
    out += w.flush()
    return out, w


def parse_duration(text: str) -> float:
    """Parse ``"60s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"`` or a bare number of seconds.

    Raises ``ValueError`` with the accepted forms on bad input.
    """
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    raw = str(text).strip().lower()
    num, unit = raw, "s"
    for u in ("ms", "s", "m", "h", "d"):
        if raw.endswith(u):
            num, unit = raw[: -len(u)].strip(), u
            break
    try:
        value = float(num) * units[unit]
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0 or num == "":
        raise ValueError(
            f"invalid duration {text!r}: use a non-negative number with a unit ms, s, m, h or d "
            "(e.g. 60s, 5m, 1h) or a bare number of seconds"
        )
    return value

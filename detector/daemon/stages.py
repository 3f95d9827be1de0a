"""The daemon's threads: the sources (file tail, Kafka), the window stage (partition merge, event-time
windows, late and invalid records) and the score stage (batched scoring, model swaps)."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from detector.alerts.sinks import AlertSink
from detector.daemon.ledger import GatedOffsets, PartitionMerger, _file_dead_letter
from detector.daemon.models import ModelWatcher

log = logging.getLogger("detector.daemon.pipeline")


_IDLE = object()


class Stages:
    """:class:`~detector.daemon.pipeline.Daemon`'s stages (a part of the one class, kept in its own module)."""

    def _make_windower(self):
        from ingest.windows import EventTimeWindower, Tumbling

        w = self.cfg["window"]
        idle = w.get("idle_timeout")
        return EventTimeWindower(Tumbling(float(w["size"])), lateness=float(w["lateness"]),
                                 idle_timeout=float(idle) if idle else None)

    # -- stages --------------------------------------------------------------------------
    def _file_source(self, q_in: queue.Queue) -> threading.Thread:
        from detector.daemon.ledger import FILE_QUEUE_ROWS, QueuedRows
        from ingest.kafka_io import SourceBatch
        from ingest.tail import TailSource

        s = self.cfg["source"]
        self._file_dl = _file_dead_letter(self.cfg["pipeline"].get("dead_letter_path"), self.metrics)
        reading_stop = threading.Event()
        self._file_stop = reading_stop
        src = TailSource(s["paths"], format=s["format"], follow=bool(s["follow"]),
                         poll_interval=float(s["poll_interval"]), dead_letter=self._file_dl, stop=reading_stop)
        max_records = self.cfg["pipeline"].get("max_records")
        queued = QueuedRows(FILE_QUEUE_ROWS)

        def run() -> None:
            n = 0
            try:
                for t in src:
                    self.metrics.records.labels("file").inc(t.num_rows)
                    item = SourceBatch(t, "file", time.time())
                    if not queued.put(q_in, item, t.num_rows, reading_stop.is_set):  # bounded in records
                        return
                    n += t.num_rows
                    if max_records and n >= int(max_records):
                        break
            except BaseException as exc:  # noqa: BLE001
                log.exception("file source failed")
                self._errors.append(exc)
            finally:
                try:  # end-of-stream marker; the window thread drains the queue, so this frees up
                    q_in.put(None, timeout=30)
                except queue.Full:
                    log.error("window stage not draining; end-of-stream marker dropped")

        t = threading.Thread(target=run, name="file-source", daemon=True)
        t.start()
        return t

    def _kafka_source(self, q_in: queue.Queue):
        from kafka.errors import TopicAuthorizationFailedError

        from ingest.kafka_io import (
            KafkaDeadLetter,
            OffsetTracker,
            ensure_topics,
            make_producer,
            retry_kafka,
            source_class,
        )

        k = self.cfg["kafka"]
        cls = source_class(k.get("backend"))
        self.tracker = GatedOffsets(self._frontier) if self._frontier is not None else OffsetTracker()
        dl = None
        cap = self._backoff_cap()
        if k.get("dead_letter_topic"):
            dlt = k["dead_letter_topic"]

            def create() -> None:
                try:
                    ensure_topics(k["bootstrap"], {dlt: 1}, k)
                except TopicAuthorizationFailedError as exc:  # not ours to create: the producer may still send
                    log.warning("may not create dead-letter topic %s (%s); sending to it anyway", dlt, exc)

            retry_kafka(create, self.health, "dead-letter topic", dlt, self.stop_event, cap=cap)
            dl = retry_kafka(lambda: KafkaDeadLetter(make_producer(k), dlt, bootstrap=k["bootstrap"],
                                                     on_add=lambda r: self.metrics.dead_letter.labels(r).inc()),
                             self.health, "dead-letter producer", dlt, self.stop_event, cap=cap)
        self._kafka_dl = dl
        src = cls(k, q_in, self.tracker, self.metrics, dl, kind=self.cfg["source"]["kind"],
                  fmt=k["format"], stop_at_end=bool(k.get("stop_at_end")),
                  commit_interval=float(k.get("commit_interval", 1.0)),
                  on_assign=self._ready.set, health=self.health, backoff_cap=cap)
        self.source = src
        return src.start()

    def _window_stage(self, q_in: queue.Queue, q_win: queue.Queue, drain_open: bool) -> None:
        windower = self._make_windower()
        self.windower = windower
        m = self.metrics

        def handle_side_outputs() -> None:
            late = windower.drain_late()
            for b in late:
                m.late.inc(b.num_rows)
                self.summary.late += b.num_rows
                self._mark_done(b.column("row").to_numpy())
            if late and time.monotonic() - self._late_logged_at >= 60.0:  # at most one line a minute
                self._late_logged_at = time.monotonic()
                log.warning("%d records arrived after their window closed (late, not scored; %d so far); "
                            "raise window.lateness if this persists", sum(b.num_rows for b in late),
                            self.summary.late, extra={"event": "late_records", "late_total": self.summary.late})
            if windower.invalid:
                inv, windower.invalid = windower.invalid, []
                for b in inv:
                    m.malformed.labels("null_ts").inc(b.num_rows)
                    self.summary.invalid += b.num_rows
                    self._mark_done(b.column("row").to_numpy())

        from detector.daemon.ledger import SCORE_QUEUE_ROWS, QueuedRows

        to_score = QueuedRows(SCORE_QUEUE_ROWS)  # the queued windows are scored as one batch: bound its rows

        def emit(windows: list) -> None:
            for w in windows:
                self._closed_at[(w.start, w.end)] = time.time()  # the score stage times what follows from here
                # blocks when scoring falls behind: the backpressure chain starts here
                to_score.put(q_win, w, w.num_rows, self.stop_event.is_set, give_up=False)
                m.queue_depth.labels("windows").set(q_win.qsize())

        quiet_since = time.monotonic()  # when the last chunk came in
        merger = PartitionMerger(idle_after=float(self.cfg["pipeline"].get("partition_idle") or 10.0),
                                 max_rows=int(self.cfg["pipeline"].get("merge_max_rows") or 200_000),
                                 assigned=lambda: {p for _t, p in (self.source.assigned if self.source else ())})
        while True:
            try:
                item = q_in.get(timeout=0.2)
            except queue.Empty:
                item = _IDLE
            m.queue_depth.labels("records").set(q_in.qsize())
            if item is None:
                break
            if item is _IDLE:
                if self.stop_event.is_set() and self.source is None and not self._file_thread.is_alive():
                    break
                released = merger.release()  # a partition may have gone idle: release what waits on it
                if merger.buffered and self._quiet_live(windower, quiet_since):
                    # every partition of a live stream has been silent for longer than the lateness: nothing is
                    # on its way that the merge could still order, so it holds nothing back (the quiet watermark
                    # below then closes the windows on the wall clock)
                    rest = merger.release(everything=True)
                    released = rest if released is None else pa.concat_tables([released, rest])
                if released is not None:
                    emit(windower.push(released))
                    handle_side_outputs()
                if hasattr(self.source, "hold"):
                    self.source.hold(merger.ahead())
                if merger.buffered == 0:
                    emit(windower.poll())
                    emit(self._quiet_watermark(windower, quiet_since))
                continue
            t: pa.Table = item.table
            n = t.num_rows
            quiet_since = time.monotonic()
            ref = t.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
            start = self.ledger.add(ref, item.arrival, self._positions_of(item, ref) if self._archive_on else None)
            if self.tracker is not None and item.partition is not None:
                self.tracker.add(item.topic, item.partition, item.first_offset, item.last_offset, start, start + n)
            elif self._frontier is not None:  # the file source: its position is the records read before
                self._frontier.add("file", start, n, start, start + n - 1)
            self.summary.records_in += n
            if n == 0:
                continue
            t = t.set_column(t.schema.get_field_index("row"), "row",
                             pa.array(np.arange(start, start + n, dtype=np.int64)))
            single = self.source is not None and len(self.source.assigned) <= 1 and merger.buffered == 0
            if item.partition is None or single:
                # One stream (a file, or one partition): arrival order is the order to judge lateness by.
                emit(windower.push(t))
            else:
                merger.add(item.partition, t)
                released = merger.release()
                if released is not None:
                    emit(windower.push(released))
                if hasattr(self.source, "hold"):  # pause the partitions read far ahead of the slowest one
                    self.source.hold(merger.ahead())
            handle_side_outputs()
        rest = merger.release(everything=True)
        if rest is not None and (drain_open or not self.stop_event.is_set()):
            emit(windower.push(rest))
            handle_side_outputs()
        # A finite source that ended by itself (file end, Kafka stop_at_end) scores its open windows;
        # a Kafka source stopped by a signal leaves them uncommitted for the restart to re-read.
        if drain_open or not self.stop_event.is_set():
            emit(windower.flush())
        handle_side_outputs()
        q_win.put(None)

    #: a stream is live when its newest event time is within this many seconds of the wall clock
    LIVE_SKEW = 30.0

    def _quiet_live(self, windower: Any, quiet_since: float) -> bool:
        """No record for longer than ``window.lateness`` on a live stream (see :meth:`_quiet_watermark`)."""
        newest = windower.max_event_time
        if newest is None or abs(time.time() - newest) > self.LIVE_SKEW:
            return False
        return time.monotonic() - quiet_since > float(self.cfg["window"]["lateness"] or 0.0)

    def _quiet_watermark(self, windower: Any, quiet_since: float) -> list:
        """Windows a quiet *live* stream has closed: while no record comes, its event time is taken to go on
        with the wall clock from the newest record, so the last window of a burst closes at its end plus the
        lateness, as it would with records flowing, not ``window.idle_timeout`` later. A backlog (event times
        older than :data:`LIVE_SKEW`) is left to the idle timeout: a pause there says nothing about event time."""
        newest = windower.max_event_time
        if newest is None or abs(time.time() - newest) > self.LIVE_SKEW:
            return []
        quiet = time.monotonic() - quiet_since
        lateness = float(self.cfg["window"]["lateness"] or 0.0)
        if quiet <= lateness:
            return []
        return windower.advance_watermark(newest + quiet - lateness)

    def _file_topic(self) -> str:
        """The archive's ``kafka_topic`` of a file source's records: ``file:`` and the source paths (absolute,
        joined by ``,``); their ``kafka_offset`` is the record's row in the source (continuous across its
        inputs, in read order), as ``graphsentry archive --from-files`` numbers the rows of one file."""
        if getattr(self, "_file_topic_cached", None) is None:
            paths = [str(Path(p).resolve()) for p in self.cfg["source"].get("paths") or []]
            self._file_topic_cached = "file:" + ",".join(paths)
        return self._file_topic_cached

    def _positions_of(self, item: Any, ref: np.ndarray) -> tuple | None:
        """``(topic, partition, offsets, indexes)`` of a source batch's records (None: unknown)."""
        n = len(ref)
        if item.partition is None:  # the file source
            return (self._file_topic(), 0, ref, np.zeros(n, dtype=np.int64))
        offs, idx = getattr(item, "offsets", None), getattr(item, "indexes", None)
        if offs is None or idx is None or len(offs) != n:
            from ingest.archive import chunk_positions

            exact = chunk_positions(n, item.first_offset, item.last_offset) if item.first_offset is not None else None
            if exact is None:
                log.warning("%d records of %s/%s (offsets %s..%s) came without their positions: archived without "
                            "one (never deduplicated)", n, item.topic, item.partition, item.first_offset,
                            item.last_offset)
                return None
            offs, idx = exact
        return (item.topic, int(item.partition), np.asarray(offs, dtype=np.int64), np.asarray(idx, dtype=np.int64))

    def _mark_done(self, rows: np.ndarray) -> None:
        self.ledger.done(rows)
        if self._frontier is not None:
            self._frontier.done(rows)
        if self.tracker is not None:
            self.tracker.done_rows(rows)

    def _score_stage(self, q_win: queue.Queue, sinks: list[AlertSink], watcher: ModelWatcher | None) -> None:
        m = self.metrics
        model = self._model
        while True:
            w = q_win.get()
            if w is None:
                return
            # Take every window already queued (they closed together): a scorer with
            # ``score_windows`` builds their graphs and runs its detector once for all of them.
            batch, last = [w], False
            while len(batch) < self.MAX_SCORE_BATCH:
                try:
                    nxt = q_win.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    last = True
                    break
                batch.append(nxt)
            m.queue_depth.labels("windows").set(q_win.qsize())
            if watcher is not None:
                new = watcher.take()
                if new is not None:  # between windows: this window and later ones use the new model
                    log.info("model swap %s -> %s", model.version, new.version,
                             extra={"event": "model_swapped", "model_version": new.version, "previous": model.version})
                    self._carry_behaviour(model, new)
                    model = self._model = new
                    self._fit.reset()
                    self._fit_warned_at = None
                    m.set_model(new.version, new.path, new.target_fpr, self._model_alias)
                    self._setup_calibration(new)  # another model: its own grace period (or its saved state)
                    m.model_reloads.labels("ok").inc()
                    self.summary.model_reloads += 1
            self._apply_reset(model)
            if not self._beh_resumed:
                self._resume_behaviour(model)
            picked = time.time()
            t0 = time.perf_counter()
            results = self._score_batch(model.scorer, batch)
            per_window = (time.perf_counter() - t0) / len(batch)
            timing = _WindowTiming(self, batch, picked, per_window)
            if self._archive_on and self._cal is None:
                # the archive first, flushed once for the batch: before any of its records is marked done
                prepared = [timing.timed("alerts", self._prepare_window, w, ws, model, per_window)
                            for w, ws in zip(batch, results)]
                archived = self._archive_windows(prepared, model)
                for p in prepared:
                    timing.timed("write", self._emit_window, p, model, sinks, archived)
            else:  # window by window (a calibrator saves its state after each window written: in step)
                for w, ws in zip(batch, results):
                    p = timing.timed("alerts", self._prepare_window, w, ws, model, per_window)
                    archived = self._archive_windows([p], model) if self._archive_on else True
                    timing.timed("write", self._emit_window, p, model, sinks, archived)
            timing.observe()
            self._behaviour_metrics(model)
            if self._beh_unverified:
                self._verify_late_streams()
            self._checkpoint_behaviour(model)
            if last:
                return

    # Windows scored in one call at most (bounds the latency of the first window of a backlog).
    MAX_SCORE_BATCH = 64

    @staticmethod
    def _score_batch(scorer: Any, batch: list) -> list:
        """Scores (or the exception) of each window, in order; batched when the scorer can."""
        if len(batch) > 1 and hasattr(scorer, "score_windows"):
            try:
                return list(scorer.score_windows(batch, return_exceptions=True))
            except Exception:  # noqa: BLE001 - fall back to one window at a time
                log.exception("batched scoring failed; scoring the %d windows one by one", len(batch))
        out: list = []
        for w in batch:
            try:
                out.append(scorer.score_window(w))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


class _WindowTiming:
    """Where a scored batch's seconds went, per window (``graphsentry_window_stage_seconds`` and
    ``Daemon.window_timings``): close (event time past end + lateness to queued; live streams only), queued, score
    (the batch's time shared out), alerts, write."""

    #: a window whose end is this far from the wall clock is a backlog's: its close delay says nothing
    LIVE_SKEW = 30.0

    def __init__(self, daemon: Any, batch: list, picked: float, score_s: float) -> None:
        self.daemon, self.batch, self.score_s = daemon, batch, score_s
        lateness = float(daemon.cfg["window"]["lateness"] or 0.0)
        self.rows = []
        for w in batch:
            closed = daemon._closed_at.pop((w.start, w.end), picked)
            due = float(w.end) + lateness
            self.rows.append({"window_end": float(w.end), "records": int(w.table.num_rows),
                              "close": closed - due if abs(closed - due) <= self.LIVE_SKEW else None,
                              "queued": max(0.0, picked - closed), "score": score_s, "alerts": 0.0, "write": 0.0})
        self._next = {"alerts": 0, "write": 0}

    def timed(self, stage: str, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` for the next window of the batch, its seconds recorded as that window's ``stage``."""
        t = time.perf_counter()
        out = fn(*args)
        self.rows[self._next[stage]][stage] = time.perf_counter() - t
        self._next[stage] += 1
        return out

    def observe(self) -> None:
        h = self.daemon.metrics.window_stage
        for r in self.rows:
            for stage in ("close", "queued", "score", "alerts", "write"):
                if r[stage] is not None:
                    h.labels(stage).observe(max(0.0, r[stage]))
            self.daemon.window_timings.append(r)

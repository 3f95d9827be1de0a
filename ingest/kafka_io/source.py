"""The consumer-group source: poll -> decode -> bounded queue, manual commits, pause/resume, rebalances."""
from __future__ import annotations

import logging
import operator
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.kafka_io.clients import (
    Backoff,
    BrokerHealth,
    KafkaUnavailable,
    _attempt,
    client_options,
    describe_error,
    probe,
)
from ingest.kafka_io.decode import Decoded, decode_messages
from ingest.kafka_io.offsets import OffsetTracker
from ingest.kafka_positions import decode_positions

log = logging.getLogger("ingest.kafka_io")


@dataclass
class SourceBatch:
    """A decoded chunk handed to the pipeline: canonical table + where it came from."""

    table: pa.Table
    source: str
    arrival: float                       # wall time the chunk was read (or the producer's timestamp)
    topic: str | None = None
    partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    # each row's message offset and index inside the message (Kafka; ingest.kafka_positions), else None
    offsets: np.ndarray | None = None
    indexes: np.ndarray | None = None


class KafkaSource:
    """Consumer-group source: poll -> decode -> bounded queue, with manual commits and pause/resume.

    ``out`` is a bounded ``queue.Queue``; when it is at ``high_water`` items the source pauses all
    assigned partitions (it keeps polling, so group heartbeats continue) and resumes at
    ``low_water``: memory stays flat when scoring falls behind. Offsets come from ``tracker``.
    """

    def __init__(
        self, cfg: dict[str, Any], out: queue.Queue[SourceBatch | None], tracker: OffsetTracker,
        metrics=None, dead_letter: Any = None, kind: str = "flows", fmt: str = "auto",
        stop_at_end: bool = False, commit_interval: float = 1.0, on_assign: Callable[[], None] | None = None,
        health: BrokerHealth | None = None, backoff_cap: float = 30.0,
    ) -> None:
        self.cfg, self.out, self.tracker, self.metrics = cfg, out, tracker, metrics
        self.dead_letter, self.kind, self.fmt = dead_letter, kind, fmt
        self.stop_at_end, self.commit_interval = stop_at_end, commit_interval
        self.topic = cfg["topic"]
        self.high_water = max(1, int(out.maxsize * 0.8)) if out.maxsize else 1 << 30
        self.low_water = max(0, int(out.maxsize * 0.3)) if out.maxsize else 0
        self.max_poll_records = int(cfg.get("max_poll_records") or 500)
        self._stop = threading.Event()
        self._stop_reading = threading.Event()
        self._eos_sent = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run_guarded, name="kafka-source", daemon=True)
        self._paused = False
        self._held: set[int] = set()                  # partitions paused for event-time alignment (applied)
        self._hold_req: frozenset[int] = frozenset()  # what the window stage asks for (set from its thread)
        self._last_commit: dict[tuple[str, int], int] = {}
        self._committed_log: dict[tuple[str, int], int] = {}
        self._on_assign = on_assign
        self.assigned: set[tuple[str, int]] = set()
        # (first, last) offset handed on per partition: what stop_at_end logs as read
        self.handed: dict[tuple[str, int], tuple[int, int]] = {}
        self.error: BaseException | None = None
        self.reconnects = 0
        self.health = health
        self.backoff_cap = float(backoff_cap)
        self._broker_down_since: float | None = None   # monotonic time the broker went missing
        self._unhealthy_since: float | None = None     # first failed check of the current streak
        self._down_backoff = Backoff(1.0, self.backoff_cap)
        self._next_down_log = 0.0
        self._revoked_pending: set[tuple[str, int]] = set()
        self._assign_seen = False
        self.redelivered_dropped = 0  # re-delivered messages already held in memory (not handed on twice)
        self.pauses = 0  # times the partitions were paused for backpressure
        self.max_depth = 0
        self.consumer = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> KafkaSource:
        self._thread.start()
        return self

    def stop_reading(self) -> None:
        """Stop polling new records (drain starts); the thread keeps committing until :meth:`stop`."""
        self._stop_reading.set()

    def stop(self) -> None:
        """Final commit of what is durable, close the consumer, end the thread."""
        self._stop_reading.set()
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def hold(self, partitions: set[int]) -> None:
        """Pause these partitions of the topic and resume the others held before: the window stage's event-time
        alignment (a partition read far ahead of the others in event time only fills the partition merge).
        Called from any thread; the poll thread applies it (the consumer is not thread-safe)."""
        self._hold_req = frozenset(partitions)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    # internals ---------------------------------------------------------------------------
    def _make_consumer(self):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        src = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                # Forget partitions we lose: records still in our windows are re-read by the new owner
                # from the last commit (at-least-once). No commit here: kafka-python 3 runs this
                # callback on its IO thread, where a blocking commit is refused; the periodic commits
                # (commit_interval) keep the re-read small.
                tps = {(tp.topic, tp.partition) for tp in revoked}
                src._on_revoked(tps)

            def on_partitions_assigned(self, assigned):
                src._on_assigned({(tp.topic, tp.partition) for tp in assigned})

        opts = client_options(self.cfg)
        opts.update(
            group_id=self.cfg.get("group_id", "graphsentry"),
            enable_auto_commit=False,
            auto_offset_reset=self.cfg.get("auto_offset_reset", "earliest"),
            max_poll_records=self.max_poll_records,
            session_timeout_ms=int(self.cfg.get("session_timeout_ms", 10000)),
            heartbeat_interval_ms=int(self.cfg.get("heartbeat_interval_ms", 3000)),
            max_partition_fetch_bytes=int(self.cfg.get("max_partition_fetch_bytes", 8388608)),
            fetch_max_wait_ms=int(self.cfg.get("fetch_max_wait_ms", 100)),
            reconnect_backoff_max_ms=int(self.cfg.get("reconnect_backoff_max_ms", 2000)),
            request_timeout_ms=int(self.cfg.get("request_timeout_ms", 30000)),
        )
        c = KafkaConsumer(**opts)
        c.subscribe([self.topic], listener=Listener())
        return c

    # rebalances -------------------------------------------------------------------------
    def _on_revoked(self, tps: set[tuple[str, int]]) -> None:
        """A partition taken away may come straight back (a broker restart makes the group rejoin):
        its state is kept until the next assignment shows whether it did (:meth:`_settle_rebalance`)."""
        self._revoked_pending |= tps
        self._assign_seen = False  # settle once the assignment that follows this revocation came
        self.assigned -= tps
        log.info("partitions revoked: %s", sorted(tps), extra={"event": "partitions_revoked"})

    def _on_assigned(self, tps: set[tuple[str, int]]) -> None:
        self.assigned = set(tps)
        self._held = set()  # a new assignment comes unpaused: what is still asked for is paused again
        self._assign_seen = True
        log.info("partitions assigned: %s", sorted(self.assigned), extra={"event": "partitions_assigned"})
        if self._on_assign:
            self._on_assign()

    def _settle_rebalance(self) -> None:
        """After revoke+assign: forget partitions another member owns now; keep reading the ones that
        came back where this source stopped (records it holds are not read and scored twice)."""
        if not self._revoked_pending or not self._assign_seen:
            return
        revoked, self._revoked_pending, self._assign_seen = self._revoked_pending, set(), False
        lost = {tp for tp in revoked if tp not in self.assigned}
        for tp in revoked - lost:
            if tp not in self.handed:
                continue
            try:
                committed = self._committed(tp)
            except Exception as exc:  # noqa: BLE001 - unknown: behave as if the partition moved
                log.info("partition %s came back but its committed offset is unknown (%s); re-reading it", tp, exc)
                lost.add(tp)
                continue
            nxt = self.handed[tp][1] + 1
            # A commit of ours may have reached the broker although the call failed (the outage), so
            # anything up to what this source read is its own doing; beyond it, another member read
            # further in between: its view wins.
            if committed is not None and committed > nxt:
                lost.add(tp)
                continue
            try:
                self._seek(tp, nxt)
            except Exception as exc:  # noqa: BLE001 - the offset filter in the poll loop still drops re-reads
                log.debug("seek %s to %d failed: %s", tp, nxt, exc)
            log.info("partition %s/%d came back after a rebalance; continuing at offset %d", tp[0], tp[1], nxt)
        if lost:
            self.tracker.forget(lost)
            for tp in lost:
                self._last_commit.pop(tp, None)
                self.handed.pop(tp, None)

    # broker availability ----------------------------------------------------------------
    def _check_broker(self, now: float) -> bool:
        """True while the broker answers; reports transitions to ``health`` (logs, gauge)."""
        try:
            ok = self._broker_ok()
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            self._unhealthy_since = None
            if self._broker_down_since is not None:
                self._broker_down_since = None
                self._down_backoff.reset()
                self.reconnects += 1
                if self.health is not None:
                    self.health.up("consumer")
                else:
                    log.info("Kafka at %s is back; resuming", self.cfg["bootstrap"])
            return True
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        # the client rediscovers a coordinator by itself in well under 2 s; only longer is an outage
        if now - self._unhealthy_since < 2.0:
            return self._broker_down_since is None
        if self._broker_down_since is None:
            self._broker_down_since = now
            self._next_down_log = now
        if now >= self._next_down_log:
            d = self._down_backoff.next()
            self._next_down_log = now + d
            reason = probe(self.cfg["bootstrap"], timeout=1.0) or "group coordinator not reachable"
            if self.health is not None:
                self.health.down("consumer", self.topic, reason, d)
            else:
                log.warning("waiting for Kafka at %s (topic %s): %s; retry in %.0fs", self.cfg["bootstrap"],
                            self.topic, reason, d)
        return False

    @property
    def broker_up(self) -> bool:
        return self.consumer is not None and self._broker_down_since is None

    def _commit(self) -> None:
        """Commit every durable offset of an assigned partition that moved since the last commit."""
        todo = {tp: off for tp, off in self.tracker.committable().items()
                if tp in self.assigned and self._last_commit.get(tp) != off}
        if not todo or self.consumer is None:
            return
        if self.dead_letter is not None and hasattr(self.dead_letter, "flush"):
            try:
                self.dead_letter.flush()  # bad messages must be in the DLQ before their offsets are committed
            except Exception as exc:  # noqa: BLE001 - not committed now; the next commit tries again
                if self.health is not None:
                    self.health.down("dead-letter producer", getattr(self.dead_letter, "topic", None),
                                     describe_error(exc), self.commit_interval)
                else:
                    log.warning("dead letters not acknowledged (%s); offsets not committed yet", exc)
                return
            if self.health is not None and "dead-letter producer" in self.health.waiting():
                self.health.up("dead-letter producer")
        try:
            self._commit_offsets(todo)
            self._last_commit.update(todo)
            self._committed_log.update(todo)
            if self.metrics:
                self.metrics.commits.inc()
            log.debug("committed %s", {f"{t}/{p}": o for (t, p), o in todo.items()})
        except Exception as exc:  # noqa: BLE001 - a failed commit only means a later re-read
            log.warning("offset commit failed (%s); will retry", exc)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """What this source last committed (for summaries and tests)."""
        return dict(self._committed_log)

    def _update_lag(self) -> bool:
        """Set the lag gauges; False when there was nothing to measure yet."""
        if not self.metrics or not self.assigned or self.consumer is None:
            return False
        try:
            positions = self._positions()
        except Exception:  # noqa: BLE001
            return False
        for (t, p), (pos, end) in positions.items():
            self.metrics.consumer_lag.labels(t, str(p)).set(max(0, end - max(pos, 0)))
        return True

    def _end_positions(self) -> dict[tuple[str, int], tuple[int, int]] | None:
        """``(position, end)`` per partition when every assigned one has been read to its end
        (``stop_at_end``), else None."""
        if not self.assigned or self.consumer is None:
            return None
        try:
            positions = self._positions()
        except Exception:  # noqa: BLE001
            return None
        # position < 0 (nothing consumed yet): at the end only if the partition is empty
        done = len(positions) == len(self.assigned) and all(max(p, 0) >= end for p, end in positions.values())
        return positions if done else None

    def _put(self, item: SourceBatch) -> None:
        # The queue is bounded; pausing keeps it from filling, but block briefly rather than drop.
        while not self._stop_reading.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                self._backpressure()
        # Draining: the batch is not handed on and its offsets are never committed (re-read later).

    def _apply_hold(self) -> None:
        req = self._hold_req
        if req == self._held or self.consumer is None:
            return
        mine = {p for t, p in self.assigned if t == self.topic}
        pause = (req - self._held) & mine  # one not assigned (yet) is paused once it is
        resume = self._held - req
        if pause:
            self._pause_parts(pause)
            self._held |= pause
        if resume:
            if not self._paused and resume & mine:  # a backpressure pause covers them until it ends
                self._resume_parts(resume & mine)
            self._held -= resume
        if self.metrics:
            self.metrics.partitions_held.set(len(self._held))

    def _backpressure(self) -> None:
        self._apply_hold()
        depth = self.out.qsize()
        self.max_depth = max(self.max_depth, depth)
        if self.metrics:
            self.metrics.queue_depth.labels("records").set(depth)
        if self.consumer is None:
            return
        if not self._paused and depth >= self.high_water:
            if self._pause_all():
                self._paused = True
                self.pauses += 1
                if self.metrics:
                    self.metrics.paused.set(1)
                log.debug("paused partitions (queue %d)", depth)
        elif self._paused and depth <= self.low_water:
            self._resume_all()
            if self._held:  # still ahead of the others in event time: stay paused
                self._pause_parts(self._held)
            self._paused = False
            if self.metrics:
                self.metrics.paused.set(0)

    def _end_of_stream(self) -> None:
        if not self._eos_sent:
            self._eos_sent = True
            while True:
                try:
                    self.out.put(None, timeout=0.5)
                    return
                except queue.Full:
                    if self._stop.is_set():
                        return

    def _run_guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - surface to the pipeline instead of dying silently
            log.exception("kafka source failed")
            self.error = exc
        finally:
            self._done.set()
            self._end_of_stream()

    def _run(self) -> None:
        """The one poll loop of both backends: connect, poll -> decode -> queue, commit, lag, drain."""
        retryable = self._connect_errors()
        backoff = Backoff(1.0, self.backoff_cap)
        while not self._stop_reading.is_set() and self.consumer is None:
            try:
                self.consumer = _attempt(self._make_consumer, self.cfg["bootstrap"])
            except retryable + (KafkaUnavailable,) as exc:
                d = backoff.next()
                reason = describe_error(exc, self.cfg["bootstrap"])
                if self.health is not None:
                    self.health.down("consumer", self.topic, reason, d)
                else:
                    log.warning("waiting for Kafka at %s (topic %s): %s; retry in %.0fs", self.cfg["bootstrap"],
                                self.topic, reason, d)
                self._stop_reading.wait(d)
        if self.consumer is None:
            return
        if self.health is not None:
            self.health.up("consumer")
        next_check = time.monotonic()
        broker_ok = True
        next_commit = time.monotonic() + self.commit_interval
        next_lag = time.monotonic()
        idle_polls = 0
        while not self._stop.is_set():
            if self._stop_reading.is_set():
                self._end_of_stream()
                self._drain_tick()
            else:
                self._backpressure()
                mono = time.monotonic()
                if mono >= next_check:
                    broker_ok = self._check_broker(mono)
                    next_check = mono + 0.5
                try:
                    chunks = self._poll_chunks()
                except retryable as exc:
                    # Broker gone or a rebalance error: the client reconnects by itself on the next poll.
                    self.reconnects += 1
                    log.warning("poll failed (%s); retrying", exc)
                    self._stop.wait(0.5)
                    continue
                self._settle_rebalance()
                if chunks and not broker_ok:
                    broker_ok = self._check_broker(time.monotonic())
                now = time.time()
                for c in chunks:
                    if (c.topic, c.partition) not in self.assigned:
                        continue
                    c = self._drop_redelivered(c)
                    if c is None:
                        continue
                    offs = c.offsets if c.offsets is not None else range(c.first_offset, c.last_offset + 1)
                    dec, row_offs, row_idx = self._decode(c.values, offs, f"kafka:{c.topic}/{c.partition}")
                    if self.metrics:
                        self.metrics.records.labels("kafka").inc(dec.table.num_rows)
                        for reason, n in dec.malformed.items():
                            self.metrics.malformed.labels(reason).inc(n)
                    # Event-to-alert starts when the producer sent the newest message of this chunk.
                    arrival = (c.max_ts_ms / 1000.0) if c.max_ts_ms > 0 else now
                    self._put(SourceBatch(dec.table, "kafka", min(arrival, now), c.topic, c.partition,
                                          c.first_offset, c.last_offset, row_offs, row_idx))
                    first, _ = self.handed.get((c.topic, c.partition), (c.first_offset, 0))
                    self.handed[(c.topic, c.partition)] = (first, c.last_offset)
                # A paused consumer gets nothing by design: that is not the end of the topic. The first
                # empty poll asks for the positions: a replay that read everything stops at once (an empty
                # poll while fetches are in flight only costs that one round trip).
                idle_polls = 0 if chunks or self._paused or self._held else idle_polls + 1
                ends = self._end_positions() if self.stop_at_end and idle_polls >= 1 else None
                if ends is not None:
                    log.info("all assigned partitions read to the end (stop_at_end): read %s, (position, end) %s",
                             self.handed, ends)
                    self._stop_reading.set()
            mono = time.monotonic()
            if mono >= next_commit and broker_ok:  # a commit to an absent broker would only block
                self._commit()
                next_commit = mono + self.commit_interval
            if mono >= next_lag and not self._stop_reading.is_set() and broker_ok:
                # every 5 s once partitions are assigned; until then retry soon
                next_lag = mono + (5.0 if self._update_lag() else 0.5)
        # Final commit of everything durable, in this thread (the consumer is not thread-safe), and a
        # last reading of the lag so a short run still reports it.
        if self._broker_down_since is None:
            self._commit()
            self._update_lag()
        else:
            log.warning("Kafka at %s unreachable at shutdown: offsets not committed; a restart re-reads "
                        "from the last commit", self.cfg["bootstrap"])
        try:
            self._close()
        except Exception:  # noqa: BLE001
            pass

    def _decode(self, values: list, offs: Any, source: str) -> tuple[Decoded, np.ndarray | None, np.ndarray | None]:
        """``(Decoded, offsets, indexes)`` of one partition's messages: a poll of JSON messages places each row by
        the message it came from (one decode); anything else through :func:`decode_positions`."""
        if len(offs) == len(values) and (self.fmt == "json" or (
                self.fmt == "auto" and all(v is not None and v[:1] == b"{" for v in values))):
            dec = decode_messages(values, self.fmt, self.kind, self.dead_letter, source=source)
            if dec.msg_index is not None:
                arr = np.arange(offs.start, offs.stop, dtype=np.int64) if isinstance(offs, range) \
                    else np.asarray(offs, np.int64)
                row_offs = arr[dec.msg_index]
                return dec, row_offs, np.zeros(len(row_offs), np.int64)
        return decode_positions(values, offs, self.fmt, self.kind, self.dead_letter, source=source)

    def _drop_redelivered(self, c: _Polled) -> _Polled | None:
        """Messages at or below the last offset already handed on for this partition are held in
        memory (a re-fetch after a reconnect or a rebalance that gave the partition back): drop them."""
        h = self.handed.get((c.topic, c.partition))
        if h is None or c.first_offset > h[1]:
            return c
        offs = c.offsets if c.offsets is not None else list(range(c.first_offset, c.last_offset + 1))
        keep = [i for i, o in enumerate(offs) if o > h[1]]
        self.redelivered_dropped += len(offs) - len(keep)
        if not keep:
            return None
        return _Polled(c.topic, c.partition, [c.values[i] for i in keep], offs[keep[0]], offs[keep[-1]],
                       c.max_ts_ms, [offs[i] for i in keep])

    # backend adapter (kafka-python here; ConfluentSource overrides these) -------------------
    def _broker_ok(self) -> bool:
        """Whether the group coordinator is known and connected (kafka-python)."""
        coord = getattr(self.consumer, "_coordinator", None)
        if coord is None or not hasattr(coord, "coordinator_unknown"):
            return probe(self.cfg["bootstrap"], timeout=0.5) is None
        return not coord.coordinator_unknown()

    def _committed(self, tp: tuple[str, int]) -> int | None:
        from kafka.structs import TopicPartition

        return self.consumer.committed(TopicPartition(*tp), timeout_ms=5000)

    def _seek(self, tp: tuple[str, int], offset: int) -> None:
        from kafka.structs import TopicPartition

        self.consumer.seek(TopicPartition(*tp), offset)

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        from kafka.errors import KafkaError

        return (KafkaError,)

    def _poll_chunks(self) -> list[_Polled]:
        polled = self.consumer.poll(timeout_ms=200, max_records=self.max_poll_records)
        out = []
        for tp, msgs in polled.items():
            if not msgs:
                continue
            first, last = msgs[0].offset, msgs[-1].offset
            # offsets without gaps (the usual case: no compaction, no transaction markers) need no list
            offsets = None if last - first + 1 == len(msgs) else list(map(_OFFSET, msgs))
            newest = max(map(_timestamp, msgs))
            out.append(_Polled(tp.topic, tp.partition, list(map(_VALUE, msgs)), first, last, newest, offsets))
        return out

    def _commit_offsets(self, todo: dict[tuple[str, int], int]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        self.consumer.commit({TopicPartition(*tp): OffsetAndMetadata(off, "", -1) for tp, off in todo.items()},
                             timeout_ms=5000)

    def _positions(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(position, end offset) of every assigned partition."""
        from kafka.structs import TopicPartition

        tps = [TopicPartition(*tp) for tp in self.assigned]
        ends = self.consumer.end_offsets(tps, timeout_ms=2000)
        out = {}
        for tp in tps:
            try:
                pos = self.consumer.position(tp, timeout_ms=1000)
            except Exception:  # noqa: BLE001 - one slow partition does not hide the others
                continue
            if pos is not None:
                # Some brokers (Tansu 0.5) answer ListOffsets(latest) with the last batch's base
                # offset; the high watermark of the fetch responses is the true end.
                out[(tp.topic, tp.partition)] = (pos, max(ends.get(tp, pos), self.consumer.highwater(tp) or 0))
        return out

    def _pause_all(self) -> bool:
        parts = self.consumer.assignment()
        if parts:
            self.consumer.pause(*parts)
        return bool(parts)

    def _resume_all(self) -> None:
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)

    def _pause_parts(self, partitions: set[int]) -> None:
        from kafka.structs import TopicPartition

        self.consumer.pause(*[TopicPartition(self.topic, p) for p in partitions])

    def _resume_parts(self, partitions: set[int]) -> None:
        from kafka.structs import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.resume(*tps)
        # kafka-python 3.0 parks a paused partition's parsed records and gives them back only when no other
        # partition's batch is in line (checked with ``is None``; a batch read to its end stays in line), and it
        # never fetches a partition with parked records: while other partitions flow, the resumed one would stay
        # silent. Drop what is parked: the position was not moved past it, so it is fetched again.
        parked = getattr(getattr(self.consumer, "_fetcher", None), "_paused_partition_records", None)
        if isinstance(parked, dict):
            for tp in tps:
                records = parked.pop(tp, None)
                if records is not None:
                    records.drain()

    def _drain_tick(self) -> None:
        self._stop.wait(0.1)

    def _close(self) -> None:
        self.consumer.close(autocommit=False)


_VALUE, _OFFSET = operator.attrgetter("value"), operator.attrgetter("offset")


def _timestamp(m: Any) -> int:
    return m.timestamp or 0


@dataclass
class _Polled:
    """One partition's messages from one poll, backend-neutral."""

    topic: str
    partition: int
    values: list
    first_offset: int
    last_offset: int
    max_ts_ms: int  # newest producer timestamp, 0 when none
    offsets: list | None = None  # every message's offset (None: first..last without gaps)

"""Bookkeeping of the records in flight: each record's daemon-local row, arrival and position
(:class:`RowLedger`), the records queued between two stages (:class:`QueuedRows`), the event-time merge of
Kafka partitions (:class:`PartitionMerger`), and the done frontier that gates offset commits to the behaviour
checkpoints (:class:`DoneFrontier`, :class:`GatedOffsets`)."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from detector.metrics import Metrics
from ingest.kafka_io import OffsetTracker

log = logging.getLogger("detector.daemon.pipeline")


class RowLedger:
    """Daemon-local row ranges -> the input's own row numbers, arrival times and (when given) source
    positions, until done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._chunks: list[list] = []  # [start, ref_rows ndarray, arrival, remaining, positions or None]
        self.next_row = 0

    def add(self, ref_rows: np.ndarray, arrival: float, positions: tuple | None = None) -> int:
        """Register ``len(ref_rows)`` new rows; returns the first one's daemon-local number. ``positions``:
        ``(topic, partition, offsets, indexes)``, the rows' source positions (one offset and index per row)."""
        with self._lock:
            start = self.next_row
            n = len(ref_rows)
            self.next_row += n
            if n:
                self._starts.append(start)
                self._chunks.append([start, np.asarray(ref_rows, dtype=np.int64), arrival, n, positions])
            return start

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(topic, partition, offset, index, known)`` of daemon-local ``rows``; ``known`` False where the
        rows' chunk came without positions (topic None, offset -1 there)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        topic = np.full(n, None, dtype=object)
        part = np.zeros(n, dtype=np.int64)
        off = np.full(n, -1, dtype=np.int64)
        idx = np.zeros(n, dtype=np.int64)
        known = np.zeros(n, dtype=bool)
        with self._lock:
            starts = np.asarray(self._starts, dtype=np.int64)
            ci = np.searchsorted(starts, rows, side="right") - 1
            for j in np.unique(ci):
                if j < 0:
                    continue
                c = self._chunks[j]
                if c[4] is None:
                    continue
                t, p, offs, ids = c[4]
                m = np.flatnonzero(ci == j)
                o = rows[m] - c[0]
                ok = (o >= 0) & (o < len(offs))
                sel, o = m[ok], o[ok]
                topic[sel], part[sel] = t, int(p)
                off[sel], idx[sel] = offs[o], ids[o]
                known[sel] = True
        return topic, part, off, idx, known

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ref rows, arrival times) for daemon-local ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            starts = np.asarray(self._starts, dtype=np.int64)
            idx = np.searchsorted(starts, rows, side="right") - 1
            ref = np.full(len(rows), -1, dtype=np.int64)
            arr = np.full(len(rows), np.nan)
            for j in np.unique(idx):
                if j < 0:
                    continue
                c = self._chunks[j]
                m = idx == j
                off = rows[m] - c[0]
                ok = off < len(c[1])
                ref[np.flatnonzero(m)[ok]] = c[1][off[ok]]
                arr[m] = c[2]
            return ref, arr

    def done(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        with self._lock:
            if not self._chunks:
                return
            idx = np.searchsorted(np.asarray(self._starts, dtype=np.int64), rows, side="right") - 1
            counts = np.bincount(idx[idx >= 0], minlength=len(self._chunks))
            ks, kc = [], []
            for s, c, n in zip(self._starts, self._chunks, counts):
                c[3] -= int(n)
                if c[3] > 0:
                    ks.append(s)
                    kc.append(c)
            self._starts, self._chunks = ks, kc

    def pending(self) -> int:
        with self._lock:
            return sum(c[3] for c in self._chunks)


class QueuedRows:
    """Bounds the records, not only the items, one producer has queued for the next stage.

    A queue bounded by items holds very different amounts of data with big items: 32 file chunks of 64k
    records are a whole hour of a busy log, and every window waiting for the score stage joins the next
    scoring batch (its working memory grows with the rows of the batch). :meth:`put` waits while the items
    still queued hold more than ``max_rows`` records, unless the queue is empty: one item bigger than the
    bound still goes, so nothing ever waits for good. The items still queued are the last ``qsize()`` put
    (a FIFO queue with this producer as its only writer), so no consumer has to report what it took.
    """

    def __init__(self, max_rows: int, poll: float = 0.005) -> None:
        if int(max_rows) < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows!r}")
        self.max_rows, self.poll = int(max_rows), float(poll)
        self._rows: deque[int] = deque()
        self._sum = 0
        self.waits = 0  # puts that waited for the consumer (a counter for tests and monitoring)

    def queued(self, q: queue.Queue) -> int:
        """Records of this producer's items still in ``q``."""
        k = q.qsize()
        while len(self._rows) > k:
            self._sum -= self._rows.popleft()
        return self._sum

    def put(self, q: queue.Queue, item: object, rows: int, stop: Callable[[], bool] = lambda: False,
            give_up: bool = True) -> bool:
        """Put ``item`` (``rows`` records) once the queued records leave room. Once ``stop()`` is true the
        records no longer hold it back; a full queue then still does, until a slot frees (``give_up``
        False) or no longer (``give_up`` True: returns False, the item not put)."""
        waited = False
        while q.qsize() and self.queued(q) + rows > self.max_rows and not stop():
            waited = True
            time.sleep(self.poll)
        self.waits += waited
        while True:
            try:
                q.put(item, timeout=0.2)
                break
            except queue.Full:
                if give_up and stop():
                    return False
        self.queued(q)
        self._rows.append(int(rows))
        self._sum += int(rows)
        return True


#: Records the file source may have queued for the window stage (2 of its 64k-record chunks).
FILE_QUEUE_ROWS = 2 * 65536
#: Records the window stage may have queued for the score stage, which scores the queued windows as one
#: batch: its working memory grows with the batch's rows.
SCORE_QUEUE_ROWS = 16384


class PartitionMerger:
    """Merge Kafka partitions on event time before windowing (per-partition watermarks).

    Each partition is ordered by event time on its own, but a consumer reads partitions in
    bursts: all of partition 0's backlog, then partition 1's. Pushed as they come, partition 1
    would be "late" against partition 0's watermark. So records wait here until every known
    partition has reached their timestamp (the minimum of the partitions' newest event times,
    as Flink does), then go to the windower in event-time order. A record waits at most
    ``idle_after`` wall seconds for slow or silent partitions; more than ``max_rows`` waiting
    releases the oldest anyway (such records may then be late, and are counted so).
    """

    def __init__(self, idle_after: float = 10.0, max_rows: int = 200_000,
                 clock: Callable[[], float] = time.monotonic,
                 assigned: Callable[[], set[int]] | None = None) -> None:
        self.idle_after, self.max_rows, self.clock = idle_after, max_rows, clock
        self.assigned = assigned or (lambda: set())
        self._buf: list[pa.Table] = []
        self._ts: list[np.ndarray] = []
        self._arr: list[np.ndarray] = []
        self._max_ts: dict[int, int] = {}
        self.buffered = 0

    def add(self, partition: int, t: pa.Table) -> None:
        ts = t.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        self._buf.append(t)
        self._ts.append(ts)
        self._arr.append(np.full(len(ts), self.clock()))
        self.buffered += t.num_rows
        self._max_ts[partition] = max(self._max_ts.get(partition, int(ts.max())), int(ts.max()))

    def ahead(self) -> set[int]:
        """Partitions whose newest event time is past the slowest known partition's, while more than half of
        ``max_rows`` wait here: reading them further only grows this buffer towards a forced release (records
        then late), so the source pauses them until the slowest catches up (event-time alignment). Empty when
        the buffer is small, so a silent partition never holds the others for longer than ``idle_after``."""
        if self.buffered <= self.max_rows // 2:
            return set()
        if set(self.assigned()) - set(self._max_ts):  # a partition not heard from yet: let it be read first
            return set(self._max_ts)
        cut = min(self._max_ts.values())
        return {p for p, t in self._max_ts.items() if t > cut}

    def release(self, everything: bool = False) -> pa.Table | None:
        if not self._buf:
            return None
        now = self.clock()
        parts = set(self._max_ts) | set(self.assigned())
        # A partition we have not heard from yet holds everything back (up to idle_after).
        cut = min(self._max_ts.get(p, -(1 << 62)) for p in parts)
        allts = np.concatenate(self._ts)
        allarr = np.concatenate(self._arr)
        if everything:
            take = np.ones(len(allts), dtype=bool)
        else:
            take = (allts <= cut) | (allarr <= now - self.idle_after)
            if self.buffered - int(take.sum()) > self.max_rows:
                over = np.sort(allts[~take])[self.buffered - int(take.sum()) - self.max_rows]
                take |= allts <= over
        if not take.any():
            return None
        # Whatever is released, everything older than it goes too (keeps the output time-ordered).
        take |= allts <= allts[take].max()
        table = pa.concat_tables(self._buf) if len(self._buf) > 1 else self._buf[0]
        keep = ~take
        out_idx = np.flatnonzero(take)
        out_idx = out_idx[np.argsort(allts[out_idx], kind="stable")]
        out = table.take(pa.array(out_idx))
        if keep.any():
            self._buf = [table.filter(pa.array(keep))]
            self._ts, self._arr = [allts[keep]], [allarr[keep]]
        else:
            self._buf, self._ts, self._arr = [], [], []
        self.buffered = int(keep.sum())
        return out


def _file_dead_letter(path: str | None, metrics: Metrics):
    """The readers' DeadLetter (they require that type), also counting into our metrics."""
    from ingest.deadletter import DeadLetter

    class _Counting(DeadLetter):  # the base class logs the first few of each reason
        def add(self, source: str, line: Any, reason: str, raw: Any) -> None:
            metrics.malformed.labels(reason).inc()
            metrics.dead_letter.labels(reason).inc()
            super().add(source, line, reason, raw)

    return _Counting(path)


class DoneFrontier:
    """Per input stream (a Kafka partition ``"topic/partition"``, or ``"file"``), where the done records end.

    The window stage registers every chunk it gets (daemon-local rows ``start .. start+n`` and the source
    positions ``first .. last`` they came from); the pipeline marks rows done. A stream's *position* is the
    source position of its first record not done: what a restart resumes from once it is committed. A
    chunk whose rows map one to one onto its positions (``n == last - first + 1``: JSON messages without
    a gap or a bad one; every file chunk) is followed record by record; any other chunk as a whole (its
    position stays at its first offset until every row of it is done).

    :meth:`snapshot` also says whether the done records of every stream are exactly those before its
    position (*clean*: nothing done beyond it). Only then does a behaviour state that holds the scored
    records match the positions: a restart re-reads from them precisely the records the state has not
    seen. Scoring windows in event-time order keeps it clean as long as each stream is in event-time order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []          # row start of each open segment with rows (ascending)
        self._segs: list[list] = []           # those segments
        self._by_key: dict[str, list[list]] = {}   # key -> its open segments, in order
        self._base: dict[str, int] = {}       # key -> position after its last finished segment
        self.first: dict[str, int] = {}       # key -> the first position registered by this process

    # a segment: [key, row_start, n, first, last, exact, done mask, n_done]
    def add(self, key: str, row_start: int, n: int, first: int, last: int) -> None:
        n, first, last = int(n), int(first), int(last)
        seg = [key, int(row_start), n, first, last, n == last - first + 1, np.zeros(n, dtype=bool), 0]
        with self._lock:
            self.first.setdefault(key, first)
            self._by_key.setdefault(key, []).append(seg)
            if n:
                self._starts.append(int(row_start))
                self._segs.append(seg)
            self._settle(key)

    def done(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        with self._lock:
            if not self._segs:
                return
            idx = np.searchsorted(np.asarray(self._starts, dtype=np.int64), rows, side="right") - 1
            touched = set()
            for j in np.unique(idx[idx >= 0]):
                seg = self._segs[j]
                off = rows[idx == j] - seg[1]
                off = off[(off >= 0) & (off < seg[2])]
                if off.size:
                    seg[6][off] = True
                    seg[7] = int(seg[6].sum())
                    touched.add(seg[0])
            if not touched:
                return
            keep = [(s, g) for s, g in zip(self._starts, self._segs) if g[7] < g[2]]
            self._starts = [s for s, _ in keep]
            self._segs = [g for _, g in keep]
            for key in touched:
                self._settle(key)

    def _settle(self, key: str) -> None:
        segs = self._by_key.get(key, [])
        k = 0
        while k < len(segs) and segs[k][7] >= segs[k][2]:
            self._base[key] = segs[k][4] + 1
            k += 1
        if k:
            del segs[:k]

    def _position(self, key: str) -> tuple[int | None, bool]:
        segs = self._by_key.get(key) or []
        if not segs:
            return self._base.get(key), True
        s = segs[0]
        clean = all(g[7] == 0 for g in segs[1:])
        if s[5]:
            i = int(np.argmin(s[6]))  # the first row not done (a segment held here has one)
            clean = clean and not bool(s[6][i:].any())
            return s[3] + i, clean
        return s[3], clean and s[7] == 0

    def firsts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.first)

    def snapshot(self) -> tuple[dict[str, int], bool]:
        """``(positions, clean)`` at one instant."""
        with self._lock:
            out, clean = {}, True
            for key in set(self._by_key) | set(self._base):
                pos, ok = self._position(key)
                clean = clean and ok
                if pos is not None:
                    out[key] = int(pos)
            return out, clean

    def forget(self, keys) -> None:
        with self._lock:
            keys = set(keys)
            keep = [(s, g) for s, g in zip(self._starts, self._segs) if g[0] not in keys]
            self._starts = [s for s, _ in keep]
            self._segs = [g for _, g in keep]
            for k in keys:
                self._by_key.pop(k, None)
                self._base.pop(k, None)

    def pending(self) -> int:
        with self._lock:
            return sum(g[2] - g[7] for g in self._segs)


class GatedOffsets(OffsetTracker):
    """The Kafka source's offset tracker when the behaviour state is checkpointed: record-level positions
    from a :class:`DoneFrontier`, and commits held to ``gate``, the positions the newest behaviour
    checkpoint covers (so a committed offset never runs ahead of the saved state; ``gate`` None: commit
    what is done, as the plain tracker does). The daemon marks rows done on the frontier itself."""

    def __init__(self, frontier: DoneFrontier) -> None:
        super().__init__()
        self.frontier = frontier
        self.gate: dict[str, int] | None = {}

    @staticmethod
    def key(topic: str, partition: int) -> str:
        return f"{topic}/{partition}"

    def add(self, topic: str, partition: int, first: int, last: int, row_start: int, row_end: int) -> None:
        self.frontier.add(self.key(topic, partition), row_start, row_end - row_start, first, last)

    def done_rows(self, rows: np.ndarray) -> None:
        pass  # Daemon._mark_done marks the frontier

    def committable(self) -> dict[tuple[str, int], int]:
        gate = self.gate
        pos = self.frontier.snapshot()[0] if gate is None else gate
        out = {}
        for key, off in pos.items():
            topic, _, p = key.rpartition("/")
            if topic and p.isdigit():
                out[(topic, int(p))] = int(off)
        return out

    def forget(self, tps) -> None:
        keys = {self.key(t, p) for t, p in tps}
        self.frontier.forget(keys)
        gate = self.gate
        if gate is not None:
            self.gate = {k: v for k, v in gate.items() if k not in keys}

    def pending(self) -> int:
        return self.frontier.pending()

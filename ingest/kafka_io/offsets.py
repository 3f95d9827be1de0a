"""Which Kafka offsets may be committed: those whose every record's alerts are durably written."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("ingest.kafka_io")


@dataclass
class _Chunk:
    topic: str
    partition: int
    first: int          # first offset in the chunk
    last: int           # last offset in the chunk
    row_start: int      # daemon-local row range [row_start, row_end)
    row_end: int
    remaining: int


class OffsetTracker:
    """Which offsets may be committed: those whose every record's alerts are durably written.

    The source registers each decoded chunk (a poll's messages of one partition) with the range of
    daemon-local rows it became; the pipeline calls :meth:`done_rows` after the sinks flushed a
    window (and for late records). A partition's committable offset is the first offset of its
    oldest unfinished chunk, or one past the last finished one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._chunks: list[_Chunk] = []
        self._by_tp: dict[tuple[str, int], list[_Chunk]] = {}
        self._done_upto: dict[tuple[str, int], int] = {}

    def add(self, topic: str, partition: int, first: int, last: int, row_start: int, row_end: int) -> None:
        c = _Chunk(topic, partition, first, last, row_start, row_end, row_end - row_start)
        with self._lock:
            self._by_tp.setdefault((topic, partition), []).append(c)
            if c.remaining > 0:
                self._starts.append(row_start)
                self._chunks.append(c)

    def done_rows(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            if not self._chunks:
                return
            idx = np.searchsorted(np.asarray(self._starts, dtype=np.int64), rows, side="right") - 1
            ok = idx >= 0
            counts = np.bincount(idx[ok], minlength=len(self._chunks))
            keep_s, keep_c = [], []
            for c, s, n in zip(self._chunks, self._starts, counts):
                if n:
                    c.remaining -= int(n)
                if c.remaining > 0:
                    keep_s.append(s)
                    keep_c.append(c)
            self._starts, self._chunks = keep_s, keep_c

    def committable(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset to consume, for partitions that advanced."""
        out = {}
        with self._lock:
            for tp, chunks in self._by_tp.items():
                n = 0
                while n < len(chunks) and chunks[n].remaining <= 0:
                    n += 1
                if n:
                    self._done_upto[tp] = chunks[n - 1].last + 1
                    del chunks[:n]
                if tp in self._done_upto:
                    out[tp] = self._done_upto[tp]
        return out

    def forget(self, tps: Iterable[tuple[str, int]]) -> None:
        """Drop state of partitions that were revoked (their new owner re-reads from the last commit)."""
        with self._lock:
            for tp in tps:
                self._by_tp.pop(tp, None)
                self._done_upto.pop(tp, None)

    def pending(self) -> int:
        with self._lock:
            return sum(c.remaining for c in self._chunks)

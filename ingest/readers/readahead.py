"""Read-ahead: a file read (parsed and normalised) in a background thread into a small queue while the
consumer takes the previous file, holding back every write to shared state (dead letters, log lines,
counts) until the consumer reaches it, so the output equals a serial read.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from ingest.deadletter import DeadLetter
from ingest.readers.base import FileContext, ReadStats
from ingest.readers.sources import InputSpec
from ingest.readers.textcsv import ReadAbandoned

log = logging.getLogger("ingest.readers")


#: Formats never read in a background thread, nor beside one: nfstream forks metering processes.
SERIAL_FORMATS = frozenset({"pcap"})
#: Tables one read-ahead file may queue before its thread waits (bounds memory per file).
AHEAD_TABLES = 2
#: Held-back dead letters/log lines of a read-ahead file before its thread waits for the consumer.
AHEAD_PENDING = 65536


class _AheadContext(FileContext):
    """The FileContext of a file read in a background thread, ahead of the consumer.

    Until the consumer reaches the file (:meth:`promote`), every call that touches shared
    state -- ``reject`` (dead-letter file, its log lines, global counts), ``unknown_field``,
    ``comment``, ``log`` -- is queued and its ``per_file`` entry is not yet in the stats;
    ``promote`` replays the queue in order, so the shared state sees exactly the serial
    sequence. After that, calls go straight through.
    """

    def __init__(self, path: str, fmt: str, kind: str, dead_letter: DeadLetter, stats: ReadStats,
                 batch_size: int, mapping: Any, stop: threading.Event) -> None:
        super().__init__(path, fmt, kind, dead_letter, ReadStats(), batch_size, mapping)  # private file_stats
        self.stats = stats
        self._lock = threading.RLock()  # reentrant: replayed FileContext methods take it again
        self._room = threading.Condition(self._lock)
        self._pending: list[tuple[Callable[..., None], tuple]] | None = []
        self._stop = stop

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with self._room:
            while self._pending is not None and len(self._pending) >= AHEAD_PENDING and not self._stop.is_set():
                self._room.wait(0.1)  # bounded memory: wait for the consumer to reach this file
            if self._pending is None:
                fn(*args)
            elif self._stop.is_set():
                raise ReadAbandoned(self.path)  # the consumer left before this file: stop reading it
            else:
                self._pending.append((fn, args))

    def reject(self, line: int | None, reason: str, raw: Any) -> None:
        self._call(super().reject, line, reason, raw)

    def unknown_field(self, name: str, n: int = 1) -> None:
        self._call(super().unknown_field, name, n)

    def comment(self, n: int = 1) -> None:
        self._call(super().comment, n)

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._call(log.log, level, msg, *args)

    def promote(self) -> None:
        """The consumer reached this file: add its stats entry, replay what was held back."""
        with self._room:
            self.stats.per_file[self.path] = self.file_stats
            for fn, args in self._pending or ():
                fn(*args)
            self._pending = None
            self._room.notify_all()


class _ReadAhead:
    """One input read by a background thread into a bounded queue of normalised tables."""

    def __init__(self, reader: Any, spec: InputSpec, ctx_args: tuple) -> None:
        self.stop = threading.Event()
        self.ctx = _AheadContext(*ctx_args, stop=self.stop)
        self.t0 = time.perf_counter()
        self._q: queue.Queue = queue.Queue(maxsize=AHEAD_TABLES)
        self._thread = threading.Thread(target=self._run, args=(reader, spec), name="read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self.stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, reader: Any, spec: InputSpec) -> None:
        tables: Any = ()
        try:
            tables = reader.read(spec, self.ctx)
            for table in tables:
                if not self._put(("table", table)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer, where a serial read raises
            self._put(("error", exc))
        finally:
            try:
                if hasattr(tables, "close"):
                    tables.close()  # in this thread: closes the file and joins the reader's own threads
            except Exception as exc:  # noqa: BLE001 - nothing may escape a thread: the consumer decides
                self._put(("error", exc))

    def tables(self) -> Iterator[pa.Table]:
        """The file's tables in order; its exception (if any) is raised here."""
        while True:
            try:
                kind, val = self._q.get(timeout=1.0)
            except queue.Empty:
                if self._thread.is_alive() or not self._q.empty():
                    continue
                raise RuntimeError(f"read-ahead of {self.ctx.path} ended without a result") from None
            if kind == "table":
                yield val
            elif kind == "done":
                return
            else:
                raise val

    def close(self) -> None:
        """Stop the thread if it still reads and wait for it: no thread or open file outlives the read."""
        self.stop.set()
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            log.warning("read-ahead of %s did not stop within 60 s", self.ctx.path)

"""Dead-letter sink for records a reader could not turn into canonical rows.

Every malformed input row ends up here with the reason it was rejected and its
raw text, so nothing a reader skips is lost silently. On disk it is JSON lines,
one object per rejected row::

    {"source": "conn.log", "line": 42, "reason": "bad_ts", "raw": "abc\\t..."}

``line`` is the 1-based physical line in the source file when known (null for
binary sources such as pcaps or Parquet, where it is the record index instead).
The first few rejections per reason are also logged (``logging``, never print).

An entry with a reason in :data:`FILE_REASONS` and ``line`` null stands for a whole file
(``source`` is its path, ``raw`` says why); each of those is logged.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import IO, Any

log = logging.getLogger("ingest.deadletter")

#: Rejections logged per reason before the logger goes quiet (the counts keep going).
LOG_FIRST = 5
#: Raw text longer than this is cut in the dead-letter file (and marked so).
MAX_RAW = 64 * 1024
#: Reasons that stand for a whole file, not one record: a file that could not be read at all
#: (``unreadable_file``), whose read failed part-way (``file_error``: the rest of it is lost),
#: whose header makes its rows unreadable (``bad_header``), or a capture nfstream refused.
FILE_REASONS = frozenset({"unreadable_file", "file_error", "bad_header", "pcap_error", "pcap_no_flows"})


class DeadLetter:
    """Collect rejected records: counts by reason, first few logged, all written to ``path``.

    Args:
        path: JSON-lines file to append rejections to; ``None`` keeps counts and logs only.
        log_first: how many rejections per reason to log at WARNING level.
    """

    def __init__(self, path: str | os.PathLike | None = None, log_first: int = LOG_FIRST) -> None:
        self.path = None if path is None else os.fspath(path)
        self.log_first = log_first
        self.counts: dict[str, int] = {}
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()  # a daemon may add from a consumer and a parser thread

    def add(self, source: str, line: int | None, reason: str, raw: Any) -> None:
        """Record one rejected row from ``source`` at ``line`` rejected for ``reason``."""
        with self._lock:
            self._add(source, line, reason, raw)

    def _add(self, source: str, line: int | None, reason: str, raw: Any) -> None:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        if isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw).decode("utf-8", errors="backslashreplace")
        elif raw is not None and not isinstance(raw, str):
            raw = str(raw)
        truncated = raw is not None and len(raw) > MAX_RAW
        if truncated:
            raw = raw[:MAX_RAW]
        if line is None and reason in FILE_REASONS:
            log.warning("skipped file %s (%s): %s", source, reason, raw)
        elif n <= self.log_first:
            shown = raw if raw is None or len(raw) <= 200 else raw[:200] + "..."
            log.warning("malformed record (%s) in %s line %s: %r", reason, source, line, shown)
            if n == self.log_first:
                log.warning("further %r rejections are counted and dead-lettered, not logged", reason)
        if self.path is not None:
            if self._fh is None:
                parent = os.path.dirname(self.path)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            rec = {"source": str(source), "line": line, "reason": reason, "raw": raw}
            if truncated:
                rec["truncated"] = True
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")

    @property
    def total(self) -> int:
        """All rejections so far."""
        return sum(self.counts.values())

    def flush(self) -> None:
        """Flush the file (if any) so readers of it see every rejection so far."""
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        """Close the file; counts stay readable. Adding after close reopens in append mode."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> DeadLetter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeadLetter(path={self.path!r}, counts={self.counts!r})"


def read_dead_letters(path: str | os.PathLike) -> list[dict]:
    """Load a dead-letter file (for tests and for inspecting rejections)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]

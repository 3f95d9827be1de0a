"""How far out of event-time order an input is, and the warning when lateness is too small for it.

:class:`Disorder` measures, cheaply and in one pass, the largest backward jump of ``ts``: how far
a record lies behind the newest event time seen before it. Event-time windows with an allowed
lateness at least that large see no late record; :func:`late_warning` turns a high late share
into one line naming the share and a ``--lateness`` value that covers the measured disorder.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

#: Late share above which :func:`late_warning` speaks (records that missed their window).
LATE_WARN_SHARE = 0.2


class Disorder:
    """Running maximum backward jump of event time over the batches pushed (seconds)."""

    def __init__(self) -> None:
        self._max_ts: int | None = None  # newest ts seen, int microseconds
        self.max_jump_us = 0

    def push(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Account for a batch's ``ts`` (in arrival order; null times are ignored)."""
        from ingest.windows import ts_us

        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.push(b)
            return
        if batch.num_rows == 0:
            return
        ts = ts_us(batch).drop_null().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if ts.size == 0:
            return
        run = np.maximum.accumulate(ts)
        if self._max_ts is not None:
            np.maximum(run, self._max_ts, out=run)
            # a record is behind everything before it, this batch's earlier records included
            jump = int(max((run[:-1] - ts[1:]).max(initial=0), self._max_ts - ts[0]))
        else:
            jump = int((run[:-1] - ts[1:]).max(initial=0))
        self.max_jump_us = max(self.max_jump_us, jump)
        self._max_ts = int(run[-1])

    @property
    def max_jump_s(self) -> float:
        """The largest backward jump of event time seen, in seconds (0: in order)."""
        return self.max_jump_us / 1e6


def suggest_lateness(seconds: float) -> str:
    """A round ``--lateness`` value (with unit) at least ``seconds``, e.g. 73000 -> ``21h``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            n = math.ceil(seconds / size - 1e-9)
            return f"{n}{unit}"
    return f"{max(1, math.ceil(seconds))}s"


def late_warning(late: int, records: int, lateness: float, disorder: Disorder) -> str | None:
    """One line when more than :data:`LATE_WARN_SHARE` of ``records`` were late, else None."""
    if records <= 0 or late <= LATE_WARN_SHARE * records:
        return None
    jump = disorder.max_jump_s
    fix = (f"pass --lateness {suggest_lateness(jump)} (the input runs up to {jump:,.0f} s behind its newest "
           f"record) or feed it in event-time order" if jump > lateness else
           "feed the input in event-time order")
    return (f"{late / records:.0%} of records ({late} of {records}) were late for their window with "
            f"--lateness {lateness:g}s: {fix}")

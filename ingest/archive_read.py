"""Reading the archive: record batches in event-time order, filtered by time, with bad files skipped.

:func:`read_archive` streams: it holds one batch (``batch_size`` rows) at a time, never the archive.
Files that a compaction (:mod:`ingest.archive_compact`) has replaced but not yet deleted are not read.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ingest.archive_compact import replaced_files
from ingest.archive_layout import PARTITIONING, check_file, parse_time, part_dirs, part_start
from ingest.schema import TS_TYPE

log = logging.getLogger(__name__)


class ArchiveScan:
    """Record batches of an archive, in event-time partition order (iterate it once or more).

    ``files`` the archive files read, ``bad_files`` ``(path, reason)`` of the files skipped,
    ``rows`` the rows yielded so far.
    """

    def __init__(self, root: str | os.PathLike, since: Any = None, until: Any = None,
                 columns: Sequence[str] | None = None, now: float | None = None, batch_size: int = 65536) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"archive not found: {self.root} (give the directory the archive writes to)")
        self.since, self.until = parse_time(since, now), parse_time(until, now)
        self.columns = list(columns) if columns is not None else None
        self.batch_size = int(batch_size)
        self.files: list[Path] = []
        self.bad_files: list[tuple[Path, str]] = []
        self.rows = 0

    def _discover(self) -> list[Path]:
        lo = self.since.timestamp() if self.since else None
        hi = self.until.timestamp() if self.until else None
        good, bad = [], []
        replaced = replaced_files(self.root)     # old files of a compaction whose new file is in place
        for part, d in part_dirs(self.root):
            start = part_start(part)
            if (lo is not None and start + 3600 <= lo) or (hi is not None and start >= hi):
                continue
            for f in sorted(d.glob("*.parquet")):
                if f.name.startswith(".") or os.path.normpath(str(f)) in replaced:
                    continue
                meta, why = check_file(f)
                if meta is None:
                    bad.append((f, why))
                    log.warning("archive file %s skipped: %s", f, why)
                else:
                    good.append(f)
        self.files, self.bad_files = good, bad
        return good

    def _filter(self):
        expr = None
        if self.since is not None:
            expr = ds.field("ts") >= pa.scalar(self.since, TS_TYPE)
        if self.until is not None:
            e = ds.field("ts") < pa.scalar(self.until, TS_TYPE)
            expr = e if expr is None else expr & e
        return expr

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        files = self._discover()
        self.rows = 0
        if not files:
            return
        schema = pq.read_schema(files[0]).remove_metadata()
        cols = self.columns
        if cols is not None:
            missing = [c for c in cols if c not in schema.names]
            if missing:
                raise ValueError(f"columns {missing} are not in the archive; it has {schema.names}")
        flt = self._filter()
        for f in files:  # partition order, then write order (file names start with the write time)
            # one small dataset per file, dropped after it: a fragment keeps its file's footer once read, and one
            # dataset over every file would hold thousands of footers (memory growing with the archive)
            dataset = ds.dataset([str(f)], schema=schema, format="parquet", partitioning=PARTITIONING,
                                 partition_base_dir=str(self.root))
            frag = next(iter(dataset.get_fragments()))
            for b in frag.to_batches(schema=dataset.schema, columns=cols, filter=flt, batch_size=self.batch_size):
                if b.num_rows:
                    self.rows += b.num_rows
                    yield b
            del dataset, frag


def read_archive(root: str | os.PathLike, since: Any = None, until: Any = None,
                 columns: Sequence[str] | None = None, *, now: float | None = None,
                 batch_size: int = 65536) -> ArchiveScan:
    """Iterate the archive's record batches in event-time order of its hour partitions.

    Args:
        root: the archive directory.
        since: keep records with ``ts >= since``: a duration back from now (``"7d"``), an ISO time,
            epoch seconds or a datetime (None: from the start).
        until: keep records with ``ts < until`` (same forms; None: to the end).
        columns: columns to read (None: all the archive's columns).
        now: "now" for durations (epoch seconds; default the wall clock).
        batch_size: the most rows per batch (memory stays bounded by it, not by the archive).

    Returns an :class:`ArchiveScan`: iterate it for ``pyarrow.RecordBatch`` objects; afterwards its
    ``bad_files`` lists the files skipped (empty, not Parquet, not an archive file).
    """
    return ArchiveScan(root, since, until, columns, now, batch_size)

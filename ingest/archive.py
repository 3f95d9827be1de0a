"""The archive of scored records: what retraining reads.

Layout (Hive partitioning by event time, UTC)::

    ROOT/date=2026-12-04/hour=07/part-<write time ns>-<random>.parquet     (zstd)
    ROOT/_journal/flush-<ns>.json                                          (only during a flush)

Each file holds the canonical records (:data:`ingest.schema.FLOW_SCHEMA`, or ``TX_SCHEMA`` for an
archive of transactions) followed by :data:`EXTRA_FIELDS`: ``score``, ``alert``, ``alert_id``,
``model_version`` (null where a record was not scored) and the record's source position
``kafka_topic``, ``kafka_partition``, ``kafka_offset``, ``kafka_index`` (its position inside a
message that holds many records, 0 for one record per message). The position columns are named
``kafka_*`` because the canonical ``source`` column already means the reader format. Records from
files carry ``kafka_topic = "file:<absolute path>"``, partition 0, ``kafka_offset`` = the record's
``row`` in that file.

Durability (:meth:`ArchiveWriter.flush`): every file is written under a temporary name and fsynced;
then a journal listing the renames is written (temp + rename) and fsynced; then the files are
renamed to their final names, the directories fsynced and the journal removed. Opening a writer
finishes the renames of a journal left by a crash and deletes temporary files without one (their
rows were never reported durable, so their offsets were not committed and a restart re-reads
them). A reader never sees a half-written file, and a flush is visible all or nothing.

No record lost or doubled (the rule, exactly): a record is identified by its position
``(kafka_topic, kafka_partition, kafka_offset, kafka_index)``. On open the writer reads the footer
of every archive file (no row data): per (topic, partition) the lowest and highest offset it holds.
:meth:`ArchiveWriter.high_water` is the highest archived offset per (topic, partition) at open. A
record given to :meth:`ArchiveWriter.write` whose offset is *above* that mark is new. One *at or
below* it is looked up among the archived positions of the files whose offset range covers it
(a restart re-reads only the uncommitted tail, so these are a few recent files) and among the
positions this writer wrote itself at or below the mark; it is dropped, and counted in
``stats.duplicates_dropped``, when its position is there. Records with a null position are never
dropped. Within one writer the caller must not hand the same position twice above the mark (the
Kafka source never does: it drops re-deliveries it already handed on). With offsets committed
only after :meth:`flush`, a restart therefore archives every record exactly once, whatever order
records reach the archive in (the daemon's event-time windows, or offset order).

Retention: ``max_bytes`` (total size of the archive) and ``max_age`` (seconds of *event time*
behind the wall clock: a partition goes once its hour ended more than ``max_age`` ago) delete whole
hour partitions, oldest first, after each flush; never a partition the last flush wrote to, nor the
newest one. Deleting the hour that holds the uncommitted tail of a partition would let its re-read
records back in: keep ``max_age`` well above the time a restart can take.

Reading: :func:`read_archive` yields record batches in partition (event-time hour) order, in write
order within an hour; rows inside one file are sorted by ``ts``. Files that are empty or not
Parquet archive files are counted and skipped.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.archive_compact import finish_compactions, replaced_files
from ingest.archive_layout import (
    EXTRA_FIELDS,
    HOUR_US,
    META_KEY,
    PARTITIONING,
    POSITION_COLUMNS,
    archive_schema,
    check_file,
    fsync_dir,
    parse_time,
    part_dirs,
    part_start,
)
from ingest.archive_read import ArchiveScan, read_archive
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform, is_transactions
from ingest.windows import parse_duration

log = logging.getLogger(__name__)

_INDEX_BITS = 24  # key = offset << 24 | index (an Arrow message of up to 16M records)


@dataclass
class ArchiveStats:
    """Counters of one writer (export them as ``graphsentry_archive_<name>_total``)."""

    rows_written: int = 0
    files_written: int = 0
    bytes_written: int = 0
    flushes: int = 0
    duplicates_dropped: int = 0
    partitions_deleted: int = 0
    bytes_deleted: int = 0
    bad_files: int = 0          # files in the archive that are not readable archive files (skipped)
    recovered_files: int = 0    # renames finished from a crashed flush's journal
    discarded_temp_files: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _FileInfo:
    path: Path
    part: tuple[str, int]                    # (date, hour)
    size: int
    ranges: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)




def _column(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    """A length-``n`` array of ``typ`` from None (nulls), a scalar (repeated) or an array-like."""
    if value is None:
        return pa.nulls(n, typ)
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        arr = value
    elif isinstance(value, (str, bytes, bool, int, float, np.integer, np.floating, np.bool_)):
        return pa.array([value] * n, typ) if n else pa.array([], typ)
    else:
        arr = pa.array(np.asarray(value) if not isinstance(value, list) else value)
    if len(arr) != n:
        raise ValueError(f"{len(arr)} values for {n} records: give one value per record of the table")
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(typ) if arr.type != typ else arr


def chunk_positions(n: int, first: int, last: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(offsets, indexes)`` of the ``n`` records decoded from the messages ``first..last`` of one
    partition, when they are known exactly: one message (offset ``first``, indexes ``0..n-1``), or one
    record per message without a gap (``n == last - first + 1``: offsets ``first..last``, index 0).
    None otherwise (a bad message or a multi-record message among several): decode such chunks per
    run of messages, as ``graphsentry archive --from-kafka`` does, to know each record's position."""
    if first == last:
        return np.full(n, first, np.int64), np.arange(n, dtype=np.int64)
    if n == last - first + 1:
        return np.arange(first, last + 1, dtype=np.int64), np.zeros(n, np.int64)
    return None


# ------------------------------------------------------------------------------------------
# the writer


class ArchiveWriter:
    """Append scored records to a Hive-partitioned Parquet archive; a sink for the daemon.

    Args:
        root: the archive directory (created).
        max_bytes: keep the archive's total size at or below this (whole oldest hours go; default: no limit).
        max_age: seconds, or a duration like ``"30d"``: delete hours whose end is older (default: no limit).
        rows_per_file: buffered records that make :meth:`write` flush by itself (default 1,000,000).
        kind: ``"flows"`` or ``"transactions"``; None: from the first table written.
        clock: wall time in epoch seconds (retention by age; injectable for tests).

    The daemon calls :meth:`write` for each scored window, then :meth:`flush` before it commits the
    window's offsets, and :meth:`close` at shutdown. ``stats`` holds the counters.
    """

    name = "archive"
    required = True

    def __init__(self, root: str | os.PathLike, *, max_bytes: int | None = None, max_age: float | str | None = None,
                 rows_per_file: int = 1_000_000, kind: str | None = None, clock=time.time) -> None:
        if max_bytes is not None and int(max_bytes) <= 0:
            raise ValueError(f"max_bytes={max_bytes!r}: must be a positive number of bytes (or None for no limit)")
        if isinstance(max_age, str):
            max_age = parse_duration(max_age)
        if max_age is not None and float(max_age) <= 0:
            raise ValueError(f"max_age={max_age!r}: must be a positive number of seconds (or None for no limit)")
        if int(rows_per_file) < 1:
            raise ValueError(f"rows_per_file={rows_per_file!r}: must be at least 1")
        if kind not in (None, "flows", "transactions"):
            raise ValueError(f"kind={kind!r}: must be 'flows' or 'transactions'")
        self.root = Path(root)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.max_age = None if max_age is None else float(max_age)
        self.rows_per_file = int(rows_per_file)
        self.kind = kind
        self.clock = clock
        self.stats = ArchiveStats()
        self._schema = archive_schema(kind) if kind else None
        self._buf: list[pa.Table] = []
        self._buffered = 0
        self._files: dict[Path, _FileInfo] = {}
        self._keys: dict[tuple[Path, tuple[str, int]], np.ndarray] = {}   # archived keys, loaded on demand
        self._own_low: dict[tuple[str, int], list[np.ndarray]] = {}        # keys written here at or below the mark
        self._protected: set[tuple[str, int]] = set()
        self._closed = False
        self._broken: BaseException | None = None
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"archive {self.root} is a file: give a directory for the archive")
        self.root.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._index()
        self._high = self._compute_high_water()

    def __repr__(self) -> str:
        return (f"ArchiveWriter({str(self.root)!r}, max_bytes={self.max_bytes!r}, max_age={self.max_age!r}, "
                f"rows_per_file={self.rows_per_file!r})")

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- opening --------------------------------------------------------------------------
    def _recover(self) -> None:
        """Finish the renames of a crashed flush; delete temporary files no journal names."""
        jdir = self.root / "_journal"
        if jdir.is_dir():
            for j in sorted(jdir.glob("flush-*.json")):
                try:
                    pairs = json.loads(j.read_text())["renames"]
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("archive journal %s unreadable (%s); ignored", j, exc)
                    self.stats.bad_files += 1
                    continue
                self.stats.recovered_files += self._roll_forward(j, pairs)
            for j in jdir.glob("*.tmp"):
                j.unlink()
            fsync_dir(jdir)
        finish_compactions(self.root)
        for trash in self.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        for _part, d in part_dirs(self.root):
            for tmp in d.glob(".*.tmp"):
                tmp.unlink()
                self.stats.discarded_temp_files += 1
        if self.stats.recovered_files or self.stats.discarded_temp_files:
            log.info("archive %s: finished %d renames of an interrupted flush, removed %d unflushed files",
                     self.root, self.stats.recovered_files, self.stats.discarded_temp_files)

    def _index(self) -> None:
        for part, d in part_dirs(self.root):
            for f in sorted(d.glob("*.parquet")):
                if f.name.startswith("."):
                    continue
                meta, why = check_file(f)
                if meta is None:
                    log.warning("archive file %s skipped: %s", f, why)
                    self.stats.bad_files += 1
                    continue
                ranges = {(t, int(p)): (int(lo), int(hi)) for t, p, lo, hi in meta.get("positions", [])}
                self._files[f] = _FileInfo(f, part, f.stat().st_size, ranges)
                if self.kind is None and meta.get("kind"):
                    self.kind = meta["kind"]
                    self._schema = archive_schema(self.kind)

    def _reindex(self, part: tuple[str, int]) -> None:
        """Index one hour again (its files changed under this writer: ``graphsentry archive compact``)."""
        for f in [f for f, info in self._files.items() if info.part == part]:
            del self._files[f]
            for key in [k for k in self._keys if k[0] == f]:
                del self._keys[key]
        d = self.root / f"date={part[0]}" / f"hour={part[1]:02d}"
        replaced = replaced_files(self.root)
        for f in sorted(d.glob("*.parquet")) if d.is_dir() else []:
            if f.name.startswith(".") or os.path.normpath(str(f)) in replaced:
                continue
            meta, _why = check_file(f)
            if meta is not None:
                ranges = {(t, int(p)): (int(lo), int(hi)) for t, p, lo, hi in meta.get("positions", [])}
                self._files[f] = _FileInfo(f, part, f.stat().st_size, ranges)

    def _compute_high_water(self) -> dict[tuple[str, int], int]:
        high: dict[tuple[str, int], int] = {}
        for info in self._files.values():
            for tp, (_lo, hi) in info.ranges.items():
                high[tp] = max(high.get(tp, hi), hi)
        return high

    def high_water(self) -> dict[tuple[str, int], int]:
        """Highest archived offset per (topic, partition) when this writer opened."""
        return dict(self._high)

    @property
    def pending_rows(self) -> int:
        """Records written but not flushed yet (not durable)."""
        return self._buffered

    # -- writing --------------------------------------------------------------------------
    def write(self, table: pa.Table | pa.RecordBatch, *, scores: Any = None, alerts: Any = None,
              model_version: str | None = None, alert_ids: Any = None,
              positions: Mapping[str, Any] | None = None) -> int:
        """Buffer ``table``'s records with their scores; returns how many were kept (not duplicates).

        Args:
            table: canonical records (extra columns are dropped; missing nullable ones become null).
            scores: one float per record (None: not scored).
            alerts: one bool per record (None: not scored).
            model_version: the model that scored them.
            alert_ids: one alert id (OCSF ``finding_info.uid``) or None per record.
            positions: ``{"topic", "partition", "offset", "index"}``, each a scalar or one value per
                record (``index`` defaults to 0). None: the table's own ``kafka_*`` columns if it has
                them, else no position (never deduplicated).

        Nothing is durable until :meth:`flush`.
        """
        if self._closed:
            raise ValueError("archive writer is closed")
        if self._broken is not None:
            raise OSError(f"archive writer failed ({self._broken}); open the archive again")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        if self._schema is None:
            self.kind = "transactions" if is_transactions(table.schema) else "flows"
            self._schema = archive_schema(self.kind)
        base = TX_SCHEMA if self.kind == "transactions" else FLOW_SCHEMA
        canon = conform(table.select([c for c in table.column_names if c in base.names]), base)
        def given(value: Any, name: str) -> Any:  # the argument, else the table's own column, else None
            if value is not None:
                return value
            return table.column(name) if name in table.column_names else None

        cols = {
            "score": _column(given(scores, "score"), n, pa.float64()),
            "alert": _column(given(alerts, "alert"), n, pa.bool_()),
            "alert_id": _column(given(alert_ids, "alert_id"), n, pa.string()),
            "model_version": _column(given(model_version, "model_version"), n, pa.string()),
        }
        if positions is None and "kafka_offset" in table.column_names:
            positions = {"topic": table.column("kafka_topic") if "kafka_topic" in table.column_names else None,
                         "partition": table.column("kafka_partition") if "kafka_partition" in table.column_names else 0,
                         "offset": table.column("kafka_offset"),
                         "index": table.column("kafka_index") if "kafka_index" in table.column_names else 0}
        positions = positions or {}
        offset = positions.get("offset")
        cols["kafka_topic"] = _column(positions.get("topic"), n, pa.string())
        cols["kafka_partition"] = _column(positions.get("partition", 0 if offset is not None else None), n, pa.int32())
        cols["kafka_offset"] = _column(offset, n, pa.int64())
        cols["kafka_index"] = _column(positions.get("index", 0 if offset is not None else None), n, pa.int32())
        out = pa.Table.from_arrays(list(canon.columns) + [cols[f.name] for f in EXTRA_FIELDS], schema=self._schema)
        if offset is not None and n:
            out = self._drop_duplicates(out)
        if out.num_rows:
            self._buf.append(out)
            self._buffered += out.num_rows
        if self._buffered >= self.rows_per_file:
            self.flush()
        return out.num_rows

    def _keys_of(self, off: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if idx.size and (idx.max() >= (1 << _INDEX_BITS) or idx.min() < 0):
            raise ValueError(f"kafka_index must be in [0, {1 << _INDEX_BITS}) (one message holds fewer records)")
        return (off.astype(np.int64) << _INDEX_BITS) | idx.astype(np.int64)

    def _archived_keys(self, tp: tuple[str, int], lo: int, hi: int) -> np.ndarray:
        """Archived keys of ``tp`` in files whose offset range meets [lo, hi] (cached per file)."""
        parts = []
        for info in self._files.values():
            r = info.ranges.get(tp)
            if r is None or r[1] < lo or r[0] > hi:
                continue
            k = self._keys.get((info.path, tp))
            if k is None:
                if not info.path.exists():   # merged by a compaction since this writer opened: look again
                    self._reindex(info.part)
                    return self._archived_keys(tp, lo, hi)
                t = pq.read_table(info.path, columns=list(POSITION_COLUMNS))
                m = pc.and_(pc.equal(t.column("kafka_topic"), tp[0]), pc.equal(t.column("kafka_partition"), tp[1]))
                t = t.filter(pc.fill_null(m, False))
                k = np.unique(self._keys_of(t.column("kafka_offset").to_numpy(zero_copy_only=False),
                                            t.column("kafka_index").fill_null(0).to_numpy(zero_copy_only=False)))
                self._keys[(info.path, tp)] = k
            parts.append(k)
        parts.extend(self._own_low.get(tp, []))
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def _drop_duplicates(self, t: pa.Table) -> pa.Table:
        topic = t.column("kafka_topic").to_numpy(zero_copy_only=False)
        part = t.column("kafka_partition").fill_null(-1).to_numpy(zero_copy_only=False)
        offv = t.column("kafka_offset")
        has = ~np.asarray(offv.is_null().to_numpy(zero_copy_only=False), dtype=bool) if offv.null_count else \
            np.ones(len(offv), dtype=bool)
        off = offv.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        idx = t.column("kafka_index").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        keep = np.ones(t.num_rows, dtype=bool)
        pairs = set(zip(topic[has].tolist(), part[has].tolist())) if has.any() else set()
        for tp in pairs:
            sel = has & (topic == tp[0]) & (part == tp[1])
            mark = self._high.get(tp)
            if mark is None:
                continue
            low = sel & (off <= mark)
            if not low.any():
                continue
            keys = self._keys_of(off[low], idx[low])
            known = self._archived_keys(tp, int(off[low].min()), int(off[low].max()))
            dup = np.isin(keys, known)
            pos = np.flatnonzero(low)
            keep[pos[dup]] = False
            if (~dup).any():
                self._own_low.setdefault(tp, []).append(keys[~dup])
        dropped = int((~keep).sum())
        if dropped:
            self.stats.duplicates_dropped += dropped
            log.info("archive: dropped %d records already archived (re-read after a restart)", dropped)
            t = t.filter(pa.array(keep))
        return t

    # -- flushing -------------------------------------------------------------------------
    def flush(self) -> list[Path]:
        """Make every buffered record durable (fsynced files, atomically visible); returns the new files."""
        if self._broken is not None:
            raise OSError(f"archive writer failed ({self._broken}); open the archive again")
        if not self._buf:
            return []
        table = pa.concat_tables(self._buf) if len(self._buf) > 1 else self._buf[0]
        table = table.take(pc.sort_indices(table, [("ts", "ascending")]))
        hours = np.floor_divide(table.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False), HOUR_US)
        cuts = np.flatnonzero(np.diff(hours)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(hours)]])
        written: list[tuple[Path, Path, _FileInfo, int]] = []
        try:
            for s, e in zip(starts.tolist(), ends.tolist()):
                dt = datetime.fromtimestamp(int(hours[s]) * 3600, timezone.utc)
                part = (dt.strftime("%Y-%m-%d"), dt.hour)
                d = self.root / f"date={part[0]}" / f"hour={part[1]:02d}"
                d.mkdir(parents=True, exist_ok=True)
                name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
                final, tmp = d / name, d / f".{name}.tmp"
                chunk = table.slice(s, e - s)
                ranges = self._ranges(chunk)
                meta = {"kind": self.kind, "rows": chunk.num_rows,
                        "positions": [[t, p, lo, hi] for (t, p), (lo, hi) in sorted(ranges.items())]}
                chunk = chunk.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
                with open(tmp, "wb") as f:
                    pq.write_table(chunk, f, compression="zstd")
                    f.flush()
                    os.fsync(f.fileno())
                size = tmp.stat().st_size
                written.append((tmp, final, _FileInfo(final, part, size, ranges), chunk.num_rows))
            journal = self._journal(written)
        except BaseException:
            for tmp, _final, _info, _n in written:
                if tmp.exists():
                    tmp.unlink()
            raise
        interrupted: BaseException | None = None
        try:
            self._rename(written, journal)
        except BaseException as exc:  # noqa: BLE001 - the journal decided this flush: finish it now
            try:
                self._roll_forward(journal, json.loads(journal.read_text())["renames"])
            except BaseException as exc2:  # noqa: BLE001
                self._broken = exc2
                raise OSError(f"archive flush failed half-way ({exc2}); the next open of {self.root} finishes "
                              "it: restart") from exc
            interrupted = None if isinstance(exc, Exception) else exc
        self._buf, self._buffered = [], 0
        self._protected = {info.part for _t, _f, info, _n in written}
        for _tmp, final, info, rows in written:
            self._files[final] = info
            self.stats.files_written += 1
            self.stats.bytes_written += info.size
            self.stats.rows_written += rows
        self.stats.flushes += 1
        if interrupted is not None:
            raise interrupted  # the files are all visible; the interruption still stops the caller
        self._retention()
        return [final for _t, final, _i, _n in written]

    @staticmethod
    def _ranges(t: pa.Table) -> dict[tuple[str, int], tuple[int, int]]:
        if t.column("kafka_offset").null_count == t.num_rows:
            return {}
        g = t.select(["kafka_topic", "kafka_partition", "kafka_offset"]).filter(
            pc.is_valid(t.column("kafka_offset"))).group_by(["kafka_topic", "kafka_partition"]).aggregate(
            [("kafka_offset", "min"), ("kafka_offset", "max")])
        out = {}
        for row in g.to_pylist():
            if row["kafka_topic"] is None:
                continue
            out[(row["kafka_topic"], int(row["kafka_partition"] or 0))] = (row["kafka_offset_min"],
                                                                          row["kafka_offset_max"])
        return out

    def _journal(self, written: list) -> Path:
        """The journal of a flush's renames, durable (temp + rename). From here on the flush happens:
        if the renames do not finish now, the next open finishes them."""
        jdir = self.root / "_journal"
        jdir.mkdir(exist_ok=True)
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
        journal, jtmp = jdir / f"flush-{stamp}.json", jdir / f"flush-{stamp}.json.tmp"
        pairs = [[str(tmp.relative_to(self.root)), str(final.relative_to(self.root))]
                 for tmp, final, _i, _n in written]
        with open(jtmp, "w") as f:
            json.dump({"renames": pairs}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(jtmp, journal)
        fsync_dir(jdir)
        return journal

    def _rename(self, written: list, journal: Path) -> None:
        dirs = set()
        for tmp, final, _i, _n in written:
            os.replace(tmp, final)
            dirs.add(final.parent)
            dirs.add(final.parent.parent)
        for d in dirs:
            fsync_dir(d)
        fsync_dir(self.root)
        journal.unlink()
        fsync_dir(journal.parent)

    def _roll_forward(self, journal: Path, pairs: list) -> int:
        """Rename every temporary file ``journal`` names that is still there; remove the journal."""
        n = 0
        for tmp, final in pairs:
            tmp_p, final_p = self.root / tmp, self.root / final
            if tmp_p.exists():
                os.replace(tmp_p, final_p)
                fsync_dir(final_p.parent)
                n += 1
        journal.unlink()
        fsync_dir(journal.parent)
        return n

    # -- retention ------------------------------------------------------------------------
    def _retention(self) -> None:
        if self.max_bytes is None and self.max_age is None:
            return
        parts: dict[tuple[str, int], tuple[Path, int]] = {}
        for part, d in part_dirs(self.root):
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            parts[part] = (d, size)
        if not parts:
            return
        keep = set(self._protected) | {max(parts)}
        doomed: list[tuple[str, int]] = []
        if self.max_age is not None:
            cutoff = self.clock() - self.max_age
            doomed += [p for p in sorted(parts) if p not in keep and part_start(p) + 3600 <= cutoff]
        if self.max_bytes is not None:
            total = sum(size for p, (_d, size) in parts.items() if p not in doomed)
            for p in sorted(parts):
                if total <= self.max_bytes:
                    break
                if p in keep or p in doomed:
                    continue
                doomed.append(p)
                total -= parts[p][1]
            if total > self.max_bytes:
                log.warning("archive %s is %d bytes, above max_bytes=%d, but only the hours being written are "
                            "left", self.root, total, self.max_bytes)
        for p in doomed:
            self._delete_partition(p, *parts[p])

    def _delete_partition(self, part: tuple[str, int], d: Path, size: int) -> None:
        trash = self.root / f".trash-{uuid.uuid4().hex[:8]}"
        os.replace(d, trash)  # the hour disappears at once, then its files go
        shutil.rmtree(trash, ignore_errors=True)
        try:
            d.parent.rmdir()  # the date directory, once its last hour is gone
        except OSError:
            pass
        for f in [f for f, info in self._files.items() if info.part == part]:
            del self._files[f]
            for key in [k for k in self._keys if k[0] == f]:
                del self._keys[key]
        self.stats.partitions_deleted += 1
        self.stats.bytes_deleted += size
        log.info("archive retention: deleted %s hour %02d (%d bytes)", part[0], part[1], size)

    def close(self) -> None:
        """Flush what is buffered; the writer takes no more records."""
        if self._closed:
            return
        self.flush()
        self._closed = True


__all__ = ["EXTRA_FIELDS", "META_KEY", "PARTITIONING", "POSITION_COLUMNS", "ArchiveScan", "ArchiveStats",
           "ArchiveWriter", "archive_schema", "chunk_positions", "fsync_dir", "parse_time", "read_archive"]

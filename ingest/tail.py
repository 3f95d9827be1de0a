"""File and directory sources for the daemon: read once, or tail as files grow and appear.

* A finite source (``follow=False``) reads the given files (directories: their files in name
  order) through :func:`ingest.readers.open_inputs` and ends.
* A tailing source (``follow=True``) keeps polling: new complete lines appended to a file are
  parsed with the same readers (the file's header lines — Zeek ``#`` lines or a CSV header — are
  remembered and put in front of each new chunk), and new files in a watched directory are
  picked up. A partial last line waits until its newline arrives.

Canonical Parquet/Arrow files (``.parquet``, ``.arrow``, ``.feather``) are read directly with
pyarrow, so archived windows can be replayed without a text reader.
"""
from __future__ import annotations

import itertools
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform, is_transactions

log = logging.getLogger(__name__)

ARROW_SUFFIXES = (".parquet", ".arrow", ".feather", ".ipc")
# Binary captures cannot be read line by line: a tailed directory reads each one whole, once its
# size has stopped changing for one poll interval (a rotated `tcpdump -G` file is complete).
WHOLE_FILE_SUFFIXES = (".pcap", ".pcapng", ".cap")


def _expand(paths: list[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return out


def _read_arrow_file(p: Path, batch_size: int) -> Iterator[pa.Table]:
    if p.suffix == ".parquet":
        t = pq.read_table(p)
    else:
        with pa.memory_map(str(p)) as src:
            try:
                t = pa.ipc.open_file(src).read_all()
            except pa.ArrowInvalid:
                t = pa.ipc.open_stream(src).read_all()
    schema = TX_SCHEMA if is_transactions(t.schema) else FLOW_SCHEMA
    if "row" not in t.column_names:
        t = t.append_column("row", pa.array(range(t.num_rows), pa.int64()))
    t = conform(t, schema)
    for i in range(0, t.num_rows, batch_size):
        yield t.slice(i, batch_size)


def _is_canonical(p: Path) -> bool:
    """True for Parquet/Arrow files already in a canonical schema (read them directly, fast);
    anything else (e.g. the Fraud Detection Handbook's Parquet) goes through the readers."""
    try:
        if p.suffix == ".parquet":
            names = set(pq.read_schema(p).names)
        else:
            with pa.memory_map(str(p)) as src:
                try:
                    names = set(pa.ipc.open_file(src).schema.names)
                except pa.ArrowInvalid:
                    names = set(pa.ipc.open_stream(src).schema.names)
    except (pa.ArrowInvalid, OSError):
        return False
    required = {f.name for f in FLOW_SCHEMA if not f.nullable} - {"row"}
    required_tx = {f.name for f in TX_SCHEMA if not f.nullable} - {"row"}
    return required <= names or required_tx <= names


def read_files(
    paths: list[str | os.PathLike], format: str = "auto", dead_letter: Any = None, batch_size: int = 65536,
) -> Iterator[pa.Table]:
    """Every record of ``paths`` as canonical tables (``row`` continuous across the inputs)."""
    files = _expand(paths)
    text = [p for p in files if p.suffix not in ARROW_SUFFIXES]
    row = 0
    for p in files:
        if p.suffix in ARROW_SUFFIXES and _is_canonical(p):
            for t in _read_arrow_file(p, batch_size):
                t = t.set_column(0, "row", pa.array(range(row, row + t.num_rows), pa.int64()))
                row += t.num_rows
                yield t
        else:
            from ingest.readers import open_inputs  # the readers own every text format

            try:
                reader = open_inputs([str(p)], format=format, dead_letter=dead_letter, batch_size=batch_size)
                it = iter(reader)
                first = next(it, None)
            except ValueError as exc:
                # A file no reader understands (a README beside the logs) is reported and skipped.
                log.warning("skipping %s: %s", p, exc)
                if dead_letter is not None:
                    dead_letter.add(str(p), None, "unreadable_file", str(exc)[:500])
                continue
            if first is None:
                continue
            for b in itertools.chain([first], it):
                t = pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                t = t.set_column(t.schema.get_field_index("row"), "row",
                                 pa.array(range(row, row + t.num_rows), pa.int64()))
                row += t.num_rows
                yield t
    del text


class _FileState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.header: list[bytes] | None = None
        self.inode: int | None = None
        self.skip = False
        self.last_size = -1


class TailSource:
    """Poll files/directories for appended lines and new files; yields canonical tables.

    ``stop`` (an Event) ends :meth:`__iter__`; with ``follow=False`` the iterator ends after one
    pass over what exists now. Truncation or replacement of a file (log rotation) restarts it.
    """

    def __init__(
        self, paths: list[str | os.PathLike], format: str = "auto", follow: bool = True,
        poll_interval: float = 0.5, dead_letter: Any = None, stop: threading.Event | None = None,
        batch_size: int = 65536, sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.format, self.follow, self.poll_interval = format, follow, poll_interval
        self.dead_letter, self.batch_size = dead_letter, batch_size
        self.stop = stop or threading.Event()
        self._files: dict[Path, _FileState] = {}
        self._row = 0

    def _candidates(self) -> list[Path]:
        out = []
        for p in self.paths:
            if p.is_dir():
                out.extend(sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")))
            elif p.exists():
                out.append(p)
        return out

    def _parse(self, st: _FileState, lines: bytes) -> pa.Table | None:
        from ingest.readers import open_inputs

        body = b"".join(st.header or []) + lines
        suffix = "".join(st.path.suffixes[-2:]) or ".log"
        with tempfile.NamedTemporaryFile("wb", suffix=suffix, prefix="gs-tail-", delete=False) as f:
            f.write(body)
            tmp = f.name
        try:
            reader = open_inputs([tmp], format=self.format, dead_letter=self.dead_letter,
                                 batch_size=self.batch_size)
            tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b for b in reader]
        finally:
            os.unlink(tmp)
        if not tables:
            return None
        t = pa.concat_tables(tables)
        t = t.set_column(t.schema.get_field_index("row"), "row",
                         pa.array(range(self._row, self._row + t.num_rows), pa.int64()))
        self._row += t.num_rows
        return t

    def _scan_once(self) -> Iterator[pa.Table]:
        for p in self._candidates():
            if p.suffix in ARROW_SUFFIXES:
                st = self._files.setdefault(p, _FileState(p))
                if not st.skip:
                    yield from self._arrow_file(st)
                continue
            st = self._files.setdefault(p, _FileState(p))
            if st.skip:
                continue
            if p.suffix.lower() in WHOLE_FILE_SUFFIXES:
                yield from self._whole_file(st)
                continue
            try:
                stat = p.stat()
            except FileNotFoundError:
                continue
            if st.inode is not None and (stat.st_ino != st.inode or stat.st_size < st.pos):
                log.info("%s was rotated or truncated; reading it from the start", p)
                st.pos, st.header = 0, None
            st.inode = stat.st_ino
            if stat.st_size <= st.pos:
                continue
            with open(p, "rb") as f:
                f.seek(st.pos)
                data = f.read(stat.st_size - st.pos)
            cut = data.rfind(b"\n")
            if cut < 0:
                continue  # no complete line yet
            chunk = data[: cut + 1]
            st.pos += cut + 1
            lines = chunk.splitlines(keepends=True)
            if st.header is None:
                hdr: list[bytes] = []
                i = 0
                while i < len(lines) and lines[i].startswith(b"#") and not lines[i].startswith(b"#close"):
                    hdr.append(lines[i])
                    i += 1
                if not hdr and lines and not lines[0].lstrip().startswith((b"{", b"[")):
                    hdr = [lines[0]]  # a CSV header line
                    i = 1
                st.header = hdr
                lines = lines[i:]
            # Zeek's trailing "#close" and any comment lines carry no records.
            lines = [ln for ln in lines if not ln.startswith(b"#") and ln.strip()]
            if not lines:
                continue
            try:
                t = self._parse(st, b"".join(lines))
            except ValueError as exc:
                # A file no reader understands (a stray file in a watched folder) is reported once
                # and ignored from then on; it must not stop the daemon.
                log.warning("ignoring %s: %s", p, exc)
                st.skip = True
                if self.dead_letter is not None:
                    self.dead_letter.add(str(p), None, "unreadable_file", str(exc)[:500])
                continue
            if t is not None and t.num_rows:
                yield t

    def _arrow_file(self, st: _FileState) -> Iterator[pa.Table]:
        """An Arrow/Parquet archive (see :meth:`_once_complete`)."""
        yield from self._once_complete(st, lambda: list(_read_arrow_file(st.path, self.batch_size)),
                                       (pa.ArrowException, OSError, ValueError))

    def _whole_file(self, st: _FileState) -> Iterator[pa.Table]:
        """A capture or other whole-file format, through the readers (see :meth:`_once_complete`)."""
        from ingest.readers import open_inputs

        def read() -> list:
            reader = open_inputs([str(st.path)], format=self.format, dead_letter=self.dead_letter,
                                 batch_size=self.batch_size)
            return [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b for b in reader]

        yield from self._once_complete(st, read, (ValueError,))

    def _once_complete(self, st: _FileState, read: Callable[[], list], errors: tuple) -> Iterator[pa.Table]:
        """The file's tables, read once, whole, after its size held for one poll: a file still being
        written (copied in, not renamed) is not read half; one that ``read`` fails on with ``errors``
        is logged and dead-lettered (``unreadable_file``), not raised: the others are still followed."""
        try:
            size = st.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size != st.last_size:
            st.last_size = size  # still being written (or new): look again next poll
            return
        st.skip = True  # read once
        try:
            tables = read()
        except errors as exc:
            log.warning("ignoring %s: %s", st.path, exc)
            if self.dead_letter is not None:
                self.dead_letter.add(str(st.path), None, "unreadable_file", str(exc)[:500])
            return
        for t in tables:
            if t.num_rows:
                t = t.set_column(t.schema.get_field_index("row"), "row",
                                 pa.array(range(self._row, self._row + t.num_rows), pa.int64()))
                self._row += t.num_rows
                yield t

    def __iter__(self) -> Iterator[pa.Table]:
        if not self.follow:
            yield from self._finite()
            return
        while not self.stop.is_set():
            got = False
            for t in self._scan_once():
                got = True
                yield t
                if self.stop.is_set():
                    return
            if not got:
                self.stop.wait(self.poll_interval)

    def _finite(self) -> Iterator[pa.Table]:
        for t in read_files(self.paths, self.format, self.dead_letter, self.batch_size):
            if self.stop.is_set():
                return
            yield t

"""File and directory sources for the daemon: read once, or tail as files grow and appear.

* A finite source (``follow=False``) reads the given files (directories: their files in name
  order) through :func:`ingest.readers.open_inputs` and ends.
* A tailing source (``follow=True``) keeps polling: new complete lines appended to a file are
  parsed with the same readers (the file's header lines — Zeek ``#`` lines or a CSV header — are
  remembered and put in front of each new chunk), and new files in a watched directory are
  picked up. A partial last line waits until its newline arrives.

Canonical Parquet/Arrow files (``.parquet``, ``.arrow``, ``.feather``) are read directly with
pyarrow, so archived windows can be replayed without a text reader.

Bad files never stop a source. Any error reading one file (binary or undecodable data, an
unknown layout, a truncated archive, no permission, the file vanishing mid-read) skips that
file: it is logged and dead-lettered once as ``unreadable_file`` under its real path (the
daemon counts dead letters into ``graphsentry_malformed_total`` and its summary), and a tailed
file skipped so is not looked at again until it is replaced (new inode) or truncated.
Malformed records inside a readable file are dead-lettered one by one, as in the readers.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform, is_transactions

log = logging.getLogger(__name__)

ARROW_SUFFIXES = (".parquet", ".arrow", ".feather", ".ipc")
# Binary captures and compressed files cannot be read line by line: a tailed directory reads each
# one whole, once its size has stopped changing for one poll interval (a rotated `tcpdump -G` file
# or a rotated, compressed log is complete).
WHOLE_FILE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".gz", ".bz2", ".zst", ".lz4", ".zip")
#: The dead-letter reason of a file skipped as a whole.
UNREADABLE = "unreadable_file"


def _skip_file(path: Path | str, exc: BaseException | str, dead_letter: Any) -> None:
    """Log and dead-letter (``unreadable_file``, the real path) one file that cannot be read."""
    why = exc if isinstance(exc, str) else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    why = " ".join(why.split())[:500]
    if dead_letter is not None:
        dead_letter.add(str(path), None, UNREADABLE, why)  # the dead letter logs it
    else:
        log.warning("skipping %s (%s): %s", path, UNREADABLE, why)


def _unreadable(reader: Any) -> bool:
    """True when ``reader`` (an InputReader, read to the end) refused its only input as a whole."""
    return any(fs.error is not None and fs.rows_ok == 0 for fs in reader.stats.per_file.values())


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


def _file_tables(p: Path, format: str, dead_letter: Any, batch_size: int) -> Iterator[pa.Table]:
    """One file's canonical tables (``row`` not yet renumbered); raises on a file it cannot read."""
    if p.suffix in ARROW_SUFFIXES and _is_canonical(p):
        yield from _read_arrow_file(p, batch_size)
        return
    from ingest.readers import open_inputs  # the readers own every other format

    # the readers skip and dead-letter a file they cannot read (unreadable_file) themselves
    reader = open_inputs([str(p)], format=format, dead_letter=dead_letter, batch_size=batch_size,
                         allow_nothing=True)
    for b in reader:
        yield pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b


def read_files(
    paths: list[str | os.PathLike], format: str = "auto", dead_letter: Any = None, batch_size: int = 65536,
) -> Iterator[pa.Table]:
    """Every record of ``paths`` as canonical tables (``row`` continuous across the inputs).

    A file that cannot be read is skipped and dead-lettered once (``unreadable_file``, its own
    path); one that fails part-way keeps the records it gave. Missing inputs raise
    ``FileNotFoundError`` up front.
    """
    row = 0
    for p in _expand(paths):
        try:
            for t in _file_tables(p, format, dead_letter, batch_size):
                t = t.set_column(t.schema.get_field_index("row"), "row",
                                 pa.array(range(row, row + t.num_rows), pa.int64()))
                row += t.num_rows
                yield t
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the others
            _skip_file(p, exc, dead_letter)


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
            try:
                if p.is_dir():
                    out.extend(sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")))
                elif p.exists():
                    out.append(p)
            except OSError as exc:  # a watched directory removed or made unreadable: look again next poll
                log.warning("cannot list %s: %s", p, exc)
        return out

    def _parse(self, st: _FileState, lines: bytes) -> pa.Table | None:
        """New complete lines of a tailed file (behind its header) -> one table, or None.

        Read in memory under the file's real name, so stats and dead letters name the real file.
        A chunk the readers refuse as a whole marks the file skipped (``st.skip``).
        """
        from ingest.readers import open_inputs
        from ingest.readers.sources import memory_spec

        body = b"".join(st.header or []) + lines
        reader = open_inputs([memory_spec(str(st.path), body)], format=self.format, dead_letter=self.dead_letter,
                             batch_size=self.batch_size, read_ahead=0, allow_nothing=True)
        tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b for b in reader]
        if _unreadable(reader):
            st.skip = True  # dead-lettered once by the readers; not read again unless replaced
        if not tables:
            return None
        t = pa.concat_tables(tables)
        t = t.set_column(t.schema.get_field_index("row"), "row",
                         pa.array(range(self._row, self._row + t.num_rows), pa.int64()))
        self._row += t.num_rows
        return t

    def _scan_once(self) -> Iterator[pa.Table]:
        for p in self._candidates():
            st = self._files.setdefault(p, _FileState(p))
            if st.skip and not self._replaced(st):
                continue
            try:
                if p.suffix in ARROW_SUFFIXES:
                    yield from self._arrow_file(st)
                elif p.suffix.lower() in WHOLE_FILE_SUFFIXES:
                    yield from self._whole_file(st)
                else:
                    yield from self._tail_text(st)
            except FileNotFoundError:
                self._files.pop(p, None)  # gone before it could be read: nothing of it is left to read
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the source
                st.skip = True
                _skip_file(p, exc, self.dead_letter)

    @staticmethod
    def _replaced(st: _FileState) -> bool:
        """True (and the state reset) when a skipped file was replaced or truncated since: read it anew."""
        try:
            stat = st.path.stat()
        except OSError:
            return False
        if st.inode is None or (stat.st_ino == st.inode and stat.st_size >= st.pos):
            return False
        st.skip, st.pos, st.header, st.last_size, st.inode = False, 0, None, -1, None
        return True

    def _tail_text(self, st: _FileState) -> Iterator[pa.Table]:
        """New complete lines of a text log (its header lines remembered and put before each chunk), read
        :attr:`read_bytes` at a time: a big backlog (a whole log at start) becomes many tables, each freed
        once scored, not one table of all of it."""
        p = st.path
        stat = p.stat()
        if st.inode is not None and (stat.st_ino != st.inode or stat.st_size < st.pos):
            log.info("%s was rotated or truncated; reading it from the start", p)
            st.pos, st.header = 0, None
        st.inode = stat.st_ino
        size = stat.st_size
        while size > st.pos and not st.skip:
            want = size - st.pos
            try:
                with open(p, "rb") as f:
                    f.seek(st.pos)
                    data = f.read(min(want, self.read_bytes))
                    if len(data) < want and data.rfind(b"\n") < 0:  # a line longer than read_bytes
                        data += f.read(want - len(data))
            except FileNotFoundError:
                raise OSError(f"vanished while being read ({size - st.pos} bytes not read)") from None
            if st.pos == 0 and self._binary(data):
                st.skip, st.pos = True, size
                _skip_file(p, "holds binary data, not a text log (a capture or archive needs its own suffix: "
                              ".pcap, .parquet, .gz, ...)", self.dead_letter)
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                return  # no complete line yet
            st.pos += cut + 1
            body = self._records(st, data[: cut + 1] if cut + 1 < len(data) else data)
            if body:
                t = self._parse(st, body)
                if t is not None and t.num_rows:
                    yield t

    #: Bytes of a tailed text file read (and parsed into one table) at a time.
    read_bytes = 8 << 20

    # A comment line (Zeek's "#close"), a blank one or a lone carriage return (a line break to splitlines)
    _NEEDS_SPLIT = re.compile(rb"(?m)^(?:#|[ \t\r\x0b\x0c]*\n)|\r(?!\n)")

    @classmethod
    def _records(cls, st: _FileState, chunk: bytes) -> bytes:
        """The record lines of ``chunk`` (complete lines): the file's header lines taken off (remembered in
        ``st.header`` from its first chunk), comment and blank lines dropped. Line by line only when the
        chunk has such lines; a chunk of records alone is passed on as it is."""
        start = 0
        if st.header is None:
            hdr: list[bytes] = []
            while chunk.startswith(b"#", start) and not chunk.startswith(b"#close", start):
                end = cls._line_end(chunk, start)
                hdr.append(chunk[start:end])
                start = end
            if not hdr and chunk:
                end = cls._line_end(chunk, 0)
                if not chunk[:end].lstrip().startswith((b"{", b"[")):
                    hdr, start = [chunk[:end]], end  # a CSV header line
            st.header = hdr
        body = chunk[start:] if start else chunk
        if not body or not cls._NEEDS_SPLIT.search(body):
            return body
        # Zeek's trailing "#close" and any comment lines carry no records.
        return b"".join(ln for ln in body.splitlines(keepends=True) if not ln.startswith(b"#") and ln.strip())

    @staticmethod
    def _line_end(chunk: bytes, start: int) -> int:
        """Where the line starting at ``start`` ends (after its line break: ``\\n``, ``\\r\\n`` or ``\\r``, as
        ``splitlines`` splits), or the end of ``chunk``."""
        n, r = chunk.find(b"\n", start), chunk.find(b"\r", start)
        if r >= 0 and (n < 0 or r < n):
            return r + 2 if chunk.startswith(b"\n", r + 1) else r + 1
        return n + 1 if n >= 0 else len(chunk)

    @staticmethod
    def _binary(data: bytes) -> bool:
        """True when the first bytes of a file to tail are binary (not a text log)."""
        from ingest.readers import looks_binary

        return looks_binary(data[:8192])

    def _arrow_file(self, st: _FileState) -> Iterator[pa.Table]:
        """An Arrow/Parquet archive (see :meth:`_once_complete`)."""
        yield from self._once_complete(st, lambda: list(_read_arrow_file(st.path, self.batch_size)),
                                       (pa.ArrowException, OSError, ValueError))

    def _whole_file(self, st: _FileState) -> Iterator[pa.Table]:
        """A capture or other whole-file format, through the readers (see :meth:`_once_complete`)."""
        from ingest.readers import open_inputs

        def read() -> list:
            # the readers dead-letter a file they cannot read themselves (unreadable_file, real path)
            reader = open_inputs([str(st.path)], format=self.format, dead_letter=self.dead_letter,
                                 batch_size=self.batch_size, allow_nothing=True)
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
        st.inode = st.path.stat().st_ino  # a replacement (new inode) is read anew
        try:
            tables = read()
        except errors as exc:
            _skip_file(st.path, exc, self.dead_letter)
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

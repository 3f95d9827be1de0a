""":class:`InputReader` and :func:`open_inputs`: several inputs read one after another into canonical
batches with one ``row`` sequence, bad files and records counted and dead-lettered, never stopping the
read.
"""
from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.deadletter import DeadLetter
from ingest.readers.base import FileContext, ReadStats, schema_for
from ingest.readers.formats import _ALIASES, FORMATS, _known, _resolve
from ingest.readers.readahead import SERIAL_FORMATS, _ReadAhead
from ingest.readers.sources import InputSpec, expand, unreadable_spec

log = logging.getLogger("ingest.readers")


#: Dead-letter reason of an input that could not be read at all (one entry per file).
UNREADABLE = "unreadable_file"


class NothingReadable(ValueError):
    """No record could be read from any input, and something was rejected (the CLI exits 3).

    Its message is one line: how many inputs failed, the first one's reason, where the dead
    letters are, and what to try. A ``ValueError``, so callers that treat bad input as a user
    error keep doing so.
    """


class InputReader:
    """Iterates canonical record batches over several inputs; see :func:`open_inputs`."""

    #: Default files read ahead of the current one, in background threads (0 = serial). Two keep both
    #: cores of a small host busy: with one, files start in lockstep pairs and the pair waits for its slower file.
    READ_AHEAD = 2

    def __init__(self, paths: Sequence[str | os.PathLike | InputSpec], format: str = "auto", mapping: Any = None,
                 dead_letter: str | os.PathLike | DeadLetter | None = None, batch_size: int = 65536,
                 read_ahead: int | None = None, allow_nothing: bool = False) -> None:
        if isinstance(paths, (str, os.PathLike, InputSpec)):
            paths = [paths]
        if not paths:
            raise ValueError("no inputs given")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.batch_size = int(batch_size)
        self.read_ahead = self.READ_AHEAD if read_ahead is None else int(read_ahead)
        if self.read_ahead < 0:
            raise ValueError(f"read_ahead must be >= 0, got {read_ahead}")
        self.stats = ReadStats()
        if isinstance(dead_letter, DeadLetter):
            self.dead_letter, self._own_dl = dead_letter, False
        else:
            self.dead_letter, self._own_dl = DeadLetter(dead_letter), True
        self.mapping = None
        fmt = _ALIASES.get(format, format)
        if mapping is not None:
            from ingest.readers.mapping import load_mapping
            self.mapping = load_mapping(mapping)
            if fmt not in ("auto", "mapped"):
                raise ValueError(f"--mapping reads CSV/TSV through a mapping; it cannot be combined with "
                                 f"format {format!r}")
            fmt = "mapped"
        elif fmt == "mapped":
            raise ValueError("format 'mapped' needs a mapping config (mapping=/--mapping FILE)")
        elif fmt != "auto" and fmt not in FORMATS:
            raise ValueError(f"unknown format {format!r}; known formats are auto, {_known()}")
        self.allow_nothing = allow_nothing
        self.specs: list[InputSpec] = []
        self.plan: list[tuple[InputSpec, str, str]] = []
        #: why each input planned as "unreadable" cannot be read (reported when the read reaches it)
        self.unreadable: dict[str, str] = {}
        for p in paths:
            for spec in self._expand(p):
                if spec.name in self.unreadable:
                    self.plan.append((spec, "unreadable", "any"))
                    continue
                try:
                    if fmt == "mapped":
                        f, kind = ("empty", "any") if not spec.head else ("mapped", self.mapping.kind)
                    else:
                        f, kind = _resolve(spec, fmt)
                except Exception as exc:  # noqa: BLE001 - one bad input is reported, not fatal
                    self.unreadable[spec.name] = _one_line(exc)
                    f, kind = "unreadable", "any"
                self.plan.append((spec, f, kind))
        kinds = {k for _, _, k in self.plan if k != "any"}
        if len(kinds) > 1:
            detail = ", ".join(f"{s.name}: {k}" for s, _, k in self.plan)
            raise ValueError(f"inputs mix flows and transactions ({detail}); read them separately")
        self.kind: str = kinds.pop() if kinds else "flows"
        self.schema = schema_for(self.kind)
        self._next_row = 0
        self._t0: float | None = None

    def _expand(self, p: str | os.PathLike | InputSpec) -> list[InputSpec]:
        """Input specs of one user path; a path that exists but cannot be opened is one unreadable spec."""
        if isinstance(p, InputSpec):
            return [p]
        path = os.fspath(p)
        if not os.path.exists(path):
            raise FileNotFoundError(f"input not found: {path}")
        if os.path.isdir(path):
            raise ValueError(f"input is a directory, give the files in it: {path}")
        try:
            return expand(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pa.ArrowException, RuntimeError) as exc:
            self.unreadable[path] = _one_line(exc)  # no permission, a corrupt archive or compressed file
            return [unreadable_spec(path)]

    @property
    def formats(self) -> list[str]:
        return [f for _, f, _ in self.plan]

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._t0 is not None:
            raise RuntimeError("this reader was already iterated; call open_inputs() again to re-read")
        self._t0 = time.perf_counter()
        # a name given twice would share one per_file entry between two threads: read serially
        unique = len({s.name for s, _, _ in self.plan}) == len(self.plan)
        ahead = self.read_ahead > 0 and len(self.plan) > 1 and unique
        try:
            if ahead:
                yield from self._iter_ahead()
            else:
                for spec, fmt, kind in self.plan:
                    yield from self._read_one(spec, fmt, kind)
        finally:
            self.stats.seconds = time.perf_counter() - self._t0
            self.dead_letter.flush()
            if self._own_dl:
                self.dead_letter.close()
        if not self.allow_nothing and self.stats.rows_ok == 0 and self.stats.malformed:
            raise NothingReadable(self.nothing_message())

    def nothing_message(self) -> str:
        """One line: nothing was read, what was rejected, where the dead letters are, what to try."""
        st = self.stats
        failed = st.files_failed
        text = (f"nothing could be read from {len(self.plan)} input(s): {len(failed)} unreadable file(s), "
                f"{st.records_malformed} malformed record(s)")
        if failed:
            err = st.per_file[failed[0]].error or ""
            text += f"; {err}" if failed[0] in err else f"; {failed[0]}: {err}"
        if self.dead_letter.path:
            text += f"; dead letters in {self.dead_letter.path}"
        return _one_line(text + "; check the inputs, or pass --format NAME / --mapping FILE if their format "
                                "was misread")

    def _iter_ahead(self) -> Iterator[pa.RecordBatch]:
        """The inputs in order, each read by a thread started up to ``read_ahead`` files early."""
        started: dict[int, _ReadAhead] = {}
        try:
            for i, (spec, fmt, kind) in enumerate(self.plan):
                if fmt not in SERIAL_FORMATS:
                    self._start_ahead(started, i)
                yield from self._read_one(spec, fmt, kind, started.pop(i, None))
        finally:  # the consumer stopped early (or a file raised): stop and join the threads ahead
            for r in started.values():
                r.stop.set()
            for r in started.values():
                r.close()

    def _start_ahead(self, started: dict[int, _ReadAhead], i: int) -> None:
        """Start threads for inputs ``i .. i + read_ahead``, never past a serial-only one."""
        for j in range(i, min(i + 1 + self.read_ahead, len(self.plan))):
            spec, fmt, kind = self.plan[j]
            if fmt in ("empty", "unreadable") or j in started:
                continue
            if fmt in SERIAL_FORMATS:
                break
            try:
                reader = self._reader(fmt)
            except Exception:  # noqa: BLE001 - left to the serial path, which raises it in order
                break
            started[j] = _ReadAhead(reader, spec, (spec.name, fmt, kind, self.dead_letter, self.stats,
                                                   self.batch_size, self.mapping))

    def _reader(self, fmt: str) -> Any:
        return FORMATS[fmt].factory() if fmt != "mapped" else FORMATS[fmt].factory(self.mapping)

    def _read_one(self, spec: InputSpec, fmt: str, kind: str,
                  ahead: _ReadAhead | None = None) -> Iterator[pa.RecordBatch]:
        """Yield one input's batches; ``ahead``: its read-ahead thread (else it is read here)."""
        if ahead is None:
            ctx: FileContext = FileContext(spec.name, fmt, kind, self.dead_letter, self.stats, self.batch_size,
                                           self.mapping)
            t0 = time.perf_counter()
        else:
            ahead.ctx.promote()
            ctx, t0 = ahead.ctx, ahead.t0  # seconds: from the start of its read, early or not
        fs = ctx.file_stats
        if fmt == "empty":
            return
        if fmt == "unreadable":
            self._refuse(ctx, self.unreadable.get(spec.name, "cannot be read"))
            return
        rows_before = fs.rows_ok
        try:
            tables = self._reader(fmt).read(spec, ctx) if ahead is None else ahead.tables()
            for table in tables:
                if table.num_rows == 0:
                    continue
                n = table.num_rows
                rows = pa.array(np.arange(self._next_row, self._next_row + n, dtype=np.int64))
                table = table.set_column(0, self.schema.field("row"), rows)
                self._next_row += n
                fs.rows_ok += n
                self.stats.rows_ok += n
                yield from table.combine_chunks().to_batches(max_chunksize=self.batch_size)
            if fmt == "zeek":
                self._check_zeek_header(spec, ctx)
        except Exception as exc:  # noqa: BLE001 - a broken file must not stop the other inputs
            msg = _one_line(exc, with_type=True)
            if fs.rows_ok == rows_before and not fs.malformed:
                self._refuse(ctx, msg)
            else:
                log.error("reading %s as %s failed part-way, the rest of it is skipped: %s", spec.name, fmt, msg)
                fs.error = msg
                ctx.reject(None, "file_error", fs.error)
        finally:
            if ahead is not None:
                ahead.close()
            fs.seconds += time.perf_counter() - t0

    @staticmethod
    def _refuse(ctx: FileContext, why: str) -> None:
        """Skip a whole input: one ``unreadable_file`` entry (counted, logged, dead-lettered) and its error."""
        ctx.file_stats.error = why
        ctx.reject(None, UNREADABLE, why)

    @staticmethod
    def _check_zeek_header(spec: InputSpec, ctx: FileContext) -> None:
        """A Zeek log whose rows (nearly) all failed because of its header: say so, once (``bad_header``)."""
        from ingest.readers.zeek import header_damage

        fs = ctx.file_stats
        why = header_damage(spec.head, fs.rows_ok, fs.malformed)
        if why is not None and fs.error is None:
            fs.error = why
            ctx.reject(None, "bad_header", why)

    def close(self) -> None:
        """Close the dead-letter file (when this reader opened it)."""
        if self._own_dl:
            self.dead_letter.close()

    def __enter__(self) -> InputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_line(exc: BaseException | str, with_type: bool = False) -> str:
    text = str(exc).strip() if not isinstance(exc, str) else exc
    if isinstance(exc, BaseException) and (with_type or not text):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return " ".join(text.split())


def open_inputs(paths: Sequence[str | os.PathLike | InputSpec] | str | os.PathLike | InputSpec,
                format: str = "auto", mapping: Any = None,
                dead_letter: str | os.PathLike | DeadLetter | None = None,
                batch_size: int = 65536, read_ahead: int | None = None,
                allow_nothing: bool = False) -> InputReader:
    """Open inputs for streaming canonical record batches.

    Args:
        paths: files in the order their records should be numbered (zip archives expand to their members),
            or :class:`~ingest.readers.sources.InputSpec` objects (e.g. ``memory_spec`` for bytes in memory).
        format: ``"auto"`` (sniff each input) or a name in :data:`FORMATS`.
        mapping: column-mapping config (path to YAML/JSON, or a dict) for any other CSV/TSV.
        dead_letter: JSON-lines file for malformed records (or a :class:`DeadLetter`); None = count only.
        batch_size: the most rows per yielded batch.
        read_ahead: files read ahead in background threads (None: ``InputReader.READ_AHEAD``; 0 = serial).
        allow_nothing: end a read that gave no record quietly instead of raising :class:`NothingReadable`.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: an input is a directory, an unknown format name (the message names the known ones),
            or inputs mixing flows and transactions. Inputs that exist but cannot be read are not
            errors here: they are reported as ``unreadable_file`` when the read reaches them.
        NothingReadable: (while iterating, at the end) no record was read and something was rejected.
    """
    return InputReader(paths, format=format, mapping=mapping, dead_letter=dead_letter, batch_size=batch_size,
                       read_ahead=read_ahead, allow_nothing=allow_nothing)

"""Readers: every supported input format -> canonical Arrow record batches.

```python
from ingest.readers import open_inputs, sniff_format, FORMATS
reader = open_inputs(paths, format="auto", mapping=None, dead_letter=None, batch_size=65536)
for batch in reader:        # pyarrow.RecordBatch in FLOW_SCHEMA or TX_SCHEMA
    ...
reader.stats                # ReadStats: rows_ok, malformed (reason -> n), per_file
reader.kind                 # "flows" | "transactions"
```
``row`` numbers the good records 0, 1, 2, ... across all inputs in the order given.
Malformed records never stop a read: they are counted by reason, the first few
logged, and all written to the dead-letter file (``ingest.deadletter``).

Bad files never stop a read either. An input that cannot be read at all with its chosen or
sniffed format (binary data, an unknown layout, a truncated Parquet footer, a corrupt archive,
no permission) is one ``unreadable_file`` entry (counted, logged, dead-lettered under its own
path; ``FileStats.error`` says why); a file whose read fails part-way is one ``file_error``
entry after the records it gave. The other inputs are read as usual. Only a wrong call (an
input that does not exist, a directory, an unknown format name, inputs of two kinds) raises at
:func:`open_inputs`. When a whole read gave no record at all but rejected something, iterating
ends by raising :class:`NothingReadable` (unless ``allow_nothing=True``).

Read-ahead: with several inputs, each file is read (parsed and normalised) by its own
"read-ahead" thread into a small queue, and up to ``read_ahead`` files after the current
one are read while the current one's batches are yielded (pyarrow releases the GIL). The
consumer still takes the files one after another: rows, batches, stats, dead letters and
log lines come out exactly as in a serial read, because a file read ahead keeps what it
would write to shared state (see :class:`_AheadContext`) until the consumer reaches it.
(Only ``FileStats.seconds`` differs: it counts from the start of a file's read, early or not.)
Captures (pcap: nfstream forks) are never read beside a thread. ``read_ahead=0`` (or
``InputReader.READ_AHEAD = 0``) reads serially, in the caller's thread.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from ingest.deadletter import DeadLetter
from ingest.readers.base import FileContext, FileStats, ReadStats, schema_for
from ingest.readers.jsonl import records_to_batch
from ingest.readers.sources import InputSpec, expand, unreadable_spec
from ingest.readers.textcsv import ReadAbandoned

log = logging.getLogger("ingest.readers")

__all__ = ["open_inputs", "sniff_format", "FORMATS", "ReadStats", "FileStats", "records_to_batch",
           "InputReader", "FormatInfo", "NothingReadable", "UNREADABLE"]

#: Dead-letter reason of an input that could not be read at all (one entry per file).
UNREADABLE = "unreadable_file"


class NothingReadable(ValueError):
    """No record could be read from any input, and something was rejected (the CLI exits 3).

    Its message is one line: how many inputs failed, the first one's reason, where the dead
    letters are, and what to try. A ``ValueError``, so callers that treat bad input as a user
    error keep doing so.
    """


@dataclass(frozen=True)
class FormatInfo:
    """A registered input format."""

    name: str
    kind: str              # "flows", "transactions", or "any" (decided per file)
    description: str
    factory: Callable[[], Any]


def _lazy(module: str, cls: str) -> Callable[..., Any]:
    def make(*args: Any, **kw: Any) -> Any:
        import importlib
        return getattr(importlib.import_module(module), cls)(*args, **kw)
    return make


#: Every format ``open_inputs`` knows, by the name ``format=`` / ``--format`` takes.
FORMATS: dict[str, FormatInfo] = {
    f.name: f for f in (
        FormatInfo("zeek", "flows", "Zeek conn.log TSV with #fields/#types header (Stratosphere labels)",
                   _lazy("ingest.readers.zeek", "ZeekTSV")),
        FormatInfo("zeek-csv", "flows", "Zeek conn log exported as CSV (IoT-23 style)",
                   _lazy("ingest.readers.zeek", "ZeekCSV")),
        FormatInfo("zeek-json", "flows", "Zeek conn log as JSON lines",
                   _lazy("ingest.readers.zeek", "ZeekJSON")),
        FormatInfo("cic", "flows", "CICFlowMeter CSV (CIC-IDS2017/2018, improved CIC-IDS2017)",
                   _lazy("ingest.readers.cic", "CICFlowMeterCSV")),
        FormatInfo("luflow", "flows", "LUFlow CSV (plain or zipped daily files)",
                   _lazy("ingest.readers.luflow", "LUFlowCSV")),
        FormatInfo("netflow", "flows", "NetFlow v3 CSV as in the NF-* data sets (needs FLOW_START_MILLISECONDS)",
                   _lazy("ingest.readers.netflow", "NetFlowCSV")),
        FormatInfo("pcap", "flows", "pcap/pcapng packet capture -> bidirectional flows via nfstream",
                   _lazy("ingest.readers.pcap", "PcapReader")),
        FormatInfo("parquet", "any", "Parquet in the canonical flow or transaction schema",
                   _lazy("ingest.readers.arrowfmt", "ParquetReader")),
        FormatInfo("arrow", "any", "Arrow IPC (file or stream) in the canonical schema",
                   _lazy("ingest.readers.arrowfmt", "ArrowIPCReader")),
        FormatInfo("jsonl", "any", "JSON lines with canonical field names (unknown fields counted)",
                   _lazy("ingest.readers.jsonl", "CanonicalJSONL")),
        FormatInfo("fdh", "transactions", "Fraud Detection Handbook transactions (Parquet or CSV)",
                   _lazy("ingest.readers.fdh", "FDHReader")),
        FormatInfo("mapped", "any", "any CSV/TSV through a column-mapping config (--mapping FILE)",
                   _lazy("ingest.readers.mapping", "MappedCSV")),
    )
}
_ALIASES = {"cicflowmeter": "cic", "conn": "zeek", "zeek-tsv": "zeek", "pcapng": "pcap", "ipc": "arrow",
            "feather": "arrow", "json": "jsonl", "nf": "netflow", "csv": "mapped"}

_PCAP_MAGIC = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
               b"\x0a\x0d\x0d\x0a")


def _known() -> str:
    return ", ".join(FORMATS)


def _header_keys(line: str) -> set[str]:
    from ingest.readers.textcsv import split_line
    try:
        return {h.strip().strip('"').lower() for h in split_line(line.lstrip("\ufeff"), ",", True)}
    except ValueError:
        return set()  # not a CSV header line


def looks_binary(head: bytes) -> bool:
    """True when leading bytes are not text: a NUL byte, or many control bytes (an executable, random data)."""
    sample = head[:8192]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return control * 20 > len(sample)  # more than 5 %


def _zeek_header(text: str) -> bool:
    """True when the leading ``#`` lines of ``text`` hold a Zeek ``#separator`` or ``#fields`` line."""
    for line in text.split("\n"):
        line = line.lstrip()
        if not line.startswith("#"):
            return False
        if line.startswith(("#separator", "#fields")):
            return True
    return False


def sniff_head(head: bytes, name: str = "<input>") -> tuple[str, str]:
    """``(format, kind)`` from the first bytes of an input; ``ValueError`` naming known formats if unknown."""
    if head[:4] in _PCAP_MAGIC:
        return "pcap", "flows"
    if head[:4] == b"PAR1":
        return "parquet", "any"
    if head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff":
        return "arrow", "any"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if _zeek_header(stripped):
        return "zeek", "flows"
    if stripped.startswith("{"):
        first = stripped.split("\n", 1)[0]
        try:
            keys = set(json.loads(first))
        except ValueError:
            keys = set()
        if {"id.orig_h", "id.resp_h"} & keys or "id" in keys and "uid" in keys:
            return "zeek-json", "flows"
        if {"customer_id", "terminal_id"} <= keys:
            return "jsonl", "transactions"
        if {"src_ip", "dst_ip"} <= keys or "ts" in keys:
            return "jsonl", "flows"
    first_line = text.split("\n", 1)[0].rstrip("\r")
    keys = _header_keys(first_line) if "," in first_line else set()
    if {"id.orig_h", "id.resp_h"} <= keys:
        return "zeek-csv", "flows"
    if {"ipv4_src_addr", "ipv4_dst_addr", "l4_src_port"} <= keys:
        return "netflow", "flows"
    if {"time_start", "src_ip", "dest_ip", "bytes_in"} <= keys:
        return "luflow", "flows"
    if "flow duration" in keys and ({"dst port", "destination port"} & keys):
        return "cic", "flows"
    if {"tx_datetime", "customer_id", "terminal_id", "tx_amount"} <= keys:
        return "fdh", "transactions"
    if {"ts", "src_ip", "dst_ip"} <= keys:
        return "mapped", "flows"  # canonical CSV: read through the identity mapping
    if looks_binary(head):
        raise ValueError(f"{name} holds binary data, not a flow log, capture, Parquet or Arrow file "
                         f"(remove it from the inputs, or pass --format NAME if it is one)")
    raise ValueError(
        f"cannot tell the format of {name}: known formats are {_known()} "
        f"(pass --format NAME, or --mapping FILE for any other CSV)")


def sniff_format(path: str | os.PathLike | bytes) -> str:
    """Format name of ``path`` (or of leading ``bytes``) from its header/magic; ``ValueError`` naming known formats."""
    if isinstance(path, (bytes, bytearray)):
        return sniff_head(bytes(path))[0]
    specs = expand(path)
    if not specs:
        raise ValueError(f"{path}: empty archive; known formats are {_known()}")
    return _resolve(specs[0], "auto")[0]


def _resolve(spec: InputSpec, fmt: str) -> tuple[str, str]:
    """(format, kind) for one input, sniffing when ``fmt`` is auto and refining "any" kinds."""
    fmt = _ALIASES.get(fmt, fmt)
    if not spec.head:
        return "empty", "any"  # a zero-byte input holds zero records, whatever its format
    if fmt == "auto":
        fmt, kind = sniff_head(spec.head, spec.name)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats are auto, {_known()}")
    else:
        kind = FORMATS[fmt].kind
    if fmt in ("parquet", "arrow") and spec.plain:
        from ingest.readers.arrowfmt import kind_of_file
        kind, is_fdh = kind_of_file(spec.path, fmt)
        if is_fdh:
            fmt = "fdh"
    elif fmt == "jsonl" and kind == "any":
        try:
            kind = sniff_head(spec.head, spec.name)[1]
        except ValueError:
            kind = "flows"
        kind = "flows" if kind == "any" else kind
    if fmt == "netflow":
        from ingest.readers.netflow import check_header
        check_header(spec)
    return fmt, kind


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
                for b in table.combine_chunks().to_batches(max_chunksize=self.batch_size):
                    yield b
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

    def __enter__(self) -> "InputReader":
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

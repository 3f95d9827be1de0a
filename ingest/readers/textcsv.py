"""Streaming delimited-text engine: ``pyarrow.csv`` fast path, Python fallback, exact line numbers.

Line numbers are 1-based and count non-empty lines (pyarrow's row numbering): they equal
physical line numbers unless the file contains empty lines before the row.

All columns are read as strings (conversion happens later, vectorised, with a
reason per bad value). Rows with the wrong number of columns are dead-lettered
by the ``invalid_row_handler`` with their physical line number. If pyarrow gives
up part-way (invalid UTF-8, a parser error), the rest of the file is read by a
plain Python line reader from the first line not yet delivered, so one bad byte
never costs the rows after it.
"""
from __future__ import annotations

import csv
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ingest.readers.base import FileContext

log = logging.getLogger("ingest.readers")

#: Bytes per pyarrow block; bounds memory per batch (plus the batch's Arrow arrays).
BLOCK_SIZE = 4 << 20


class ReadAbandoned(Exception):
    """Raised by a context whose read nobody waits for any more (a read-ahead the consumer left)."""


def _quiet_undecodable_rows(hook: Callable = sys.unraisablehook) -> Callable:
    """An unraisable hook that drops one known, harmless report and passes every other one on.

    pyarrow decodes an invalid row's text before it calls our ``invalid_row_handler``; on a row that
    is not UTF-8 that decode fails inside pyarrow, which reports it through ``sys.unraisablehook``
    (a traceback on stderr) and then stops parsing. The fallback reader reads that row again and
    dead-letters it (``encoding``), so the report is noise, and never a lost row.
    """
    def quiet(u: sys.UnraisableHookArgs) -> None:
        if isinstance(u.exc_value, UnicodeDecodeError) and getattr(u.object, "__module__", None) == __name__:
            return
        hook(u)
    quiet.graphsentry_quiet = True  # type: ignore[attr-defined]
    return quiet


if not getattr(sys.unraisablehook, "graphsentry_quiet", False):
    sys.unraisablehook = _quiet_undecodable_rows()


def _log(ctx: FileContext, level: int, msg: str, *args: object) -> None:
    # a context may hold the line back (a file read ahead logs when the consumer reaches it)
    getattr(ctx, "log", log.log)(level, msg, *args)


def dedupe(names: Sequence[str]) -> list[str]:
    """Make column names unique (CIC-IDS2017 repeats 'Fwd Header Length')."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}.{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


def split_line(line: str, delimiter: str, quoted: bool) -> list[str]:
    """The fields of one CSV/TSV line; ``ValueError`` if it is not one (a stray CR, an overlong field)."""
    if quoted:
        try:
            return next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error as exc:
            raise ValueError(f"not a CSV line ({exc})") from None
    return line.split(delimiter)


def iter_text(open_stream: Callable[[], BinaryIO], ctx: FileContext, *, names: Sequence[str],
              data_start_line: int, delimiter: str = ",", quoted: bool = True,
              comment_prefix: str | None = None, batch_rows: int = 65536,
              block_size: int = BLOCK_SIZE) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Yield ``(string batch, 1-based physical line numbers)`` for the data rows of a text file.

    Decompression and CSV parsing run in a background thread (both release the GIL) while
    the caller normalises the previous batch; at most two batches wait in between.

    Args:
        open_stream: opens the (decompressed) byte stream afresh (called again for the fallback).
        names: column names (the header, already parsed by the caller).
        data_start_line: number of lines before the first data row (header and comments).
        comment_prefix: lines starting with it are metadata (Zeek ``#close``), skipped and counted
            as comments, not records.
    """
    names = dedupe(names)
    # emitted_last: last physical line delivered in a batch; handled: lines the invalid-row
    # handler already counted (so a fallback after a failed block does not count them twice)
    state = {"emitted_last": data_start_line, "unknown_lines": False, "handled": set()}
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for item in _fast(open_stream, ctx, names, data_start_line, delimiter, quoted, comment_prefix,
                              batch_rows, block_size, state):
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            put(("error", exc))

    th = threading.Thread(target=worker, name="csv-reader", daemon=True)
    th.start()
    failed: BaseException | None = None
    try:
        while True:
            kind, val = q.get()
            if kind == "item":
                yield val
            elif kind == "done":
                break
            else:
                failed = val
                break
    finally:
        stop.set()
        while not q.empty():
            try:
                q.get_nowait()
            except queue.Empty:
                break
        th.join(timeout=5)
    if failed is None:
        return
    if not isinstance(failed, (pa.ArrowException, UnicodeDecodeError, ValueError, OSError)):
        raise failed
    msg = str(failed)
    if "Empty CSV file" in msg:
        return
    if state["unknown_lines"]:
        # cannot tell where pyarrow stopped: report the file error instead of guessing
        ctx.reject(None, "file_error", f"{type(failed).__name__}: {msg}")
        ctx.file_stats.error = msg
        return
    _log(ctx, logging.INFO, "%s: pyarrow stopped at line ~%d (%s); reading the rest line by line",
         ctx.path, state["emitted_last"], msg.splitlines()[0] if msg else type(failed).__name__)
    already = {x for x in state["handled"] if x > state["emitted_last"]}
    yield from _python_rest(open_stream, ctx, width=len(names), names=names, resume_after=state["emitted_last"],
                            already=already,
                            delimiter=delimiter, quoted=quoted, comment_prefix=comment_prefix,
                            batch_rows=batch_rows)


def _fast(open_stream: Callable[[], BinaryIO], ctx: FileContext, names: list[str], data_start_line: int,
          delimiter: str, quoted: bool, comment_prefix: str | None, batch_rows: int, block_size: int,
          state: dict) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """The pyarrow part of :func:`iter_text` (runs in the reader thread)."""
    skipped: list[int] = []  # physical line numbers consumed without being emitted (in order)

    def handler(row: pacsv.InvalidRow) -> str:
        num = row.number
        if num is None:
            state["unknown_lines"] = True
        else:
            skipped.append(num)
            state["handled"].add(num)
        text = row.text
        try:
            if comment_prefix and text.startswith(comment_prefix):
                ctx.comment()
            else:
                ctx.reject(num, "columns", text)
        except ReadAbandoned as exc:  # pyarrow would swallow it: raised after this block instead
            state["abandoned"] = exc
        return "skip"

    read_opts = pacsv.ReadOptions(column_names=list(names), skip_rows=data_start_line,
                                  use_threads=False, block_size=block_size)
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                    double_quote=quoted, newlines_in_values=False,
                                    ignore_empty_lines=True, invalid_row_handler=handler)
    conv_opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                     strings_can_be_null=False, quoted_strings_can_be_null=False)
    emitted = 0
    with open_stream() as stream:
        reader = pacsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts,
                                convert_options=conv_opts)
        for batch in reader:
            if "abandoned" in state:
                raise state["abandoned"]
            n = batch.num_rows
            if n == 0:
                continue
            v = emitted + np.arange(n, dtype=np.int64)
            if state["unknown_lines"]:
                lines = np.full(n, -1, dtype=np.int64)
            else:
                # the j-th skipped row sits after adj[j] emitted rows: shift later rows by one each
                sk = np.asarray(skipped, dtype=np.int64)
                adj = (sk - data_start_line - 1) - np.arange(len(sk), dtype=np.int64)
                lines = v + data_start_line + 1 + np.searchsorted(adj, v, side="right")
            emitted += n
            for off in range(0, n, batch_rows):
                part = lines[off:off + batch_rows]
                yield batch.slice(off, batch_rows), part
                if not state["unknown_lines"]:
                    state["emitted_last"] = int(part[-1])


def _python_rest(open_stream: Callable[[], BinaryIO], ctx: FileContext, *, width: int,
                 names: Sequence[str], resume_after: int, already: set[int], delimiter: str, quoted: bool,
                 comment_prefix: str | None, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Line-by-line reader for the rest of a file after physical line ``resume_after``."""
    cols: list[list[str]] = [[] for _ in range(width)]
    lines: list[int] = []

    def flush() -> tuple[pa.RecordBatch, np.ndarray]:
        b = pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in cols], names=list(names))
        ln = np.asarray(lines, dtype=np.int64)
        for c in cols:
            c.clear()
        lines.clear()
        return b, ln

    num = 0
    with open_stream() as fh:
        for raw in _lines(fh):
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if body.endswith(b"\r"):
                body = body[:-1]
            if not body:
                continue  # empty lines are not records and are not numbered (as in pyarrow)
            num += 1
            if num <= resume_after or num in already:
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                ctx.reject(num, "encoding", body)
                continue
            if comment_prefix and text.startswith(comment_prefix):
                ctx.comment()
                continue
            try:
                vals = split_line(text, delimiter, quoted)
            except ValueError:
                ctx.reject(num, "columns", text)
                continue
            if len(vals) != width:
                ctx.reject(num, "columns", text)
                continue
            for c, val in zip(cols, vals):
                c.append(val)
            lines.append(num)
            if len(lines) >= batch_rows:
                yield flush()
    if lines:
        yield flush()


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """Split on b'\\n' only (pyarrow does the same), in 1 MiB reads, whatever the stream type."""
    buf = b""
    while True:
        chunk = fh.read(1 << 20)
        if not chunk:
            break
        buf += chunk
        parts = buf.split(b"\n")
        buf = parts.pop()
        for p in parts:
            yield p + b"\n"
    if buf:
        yield buf

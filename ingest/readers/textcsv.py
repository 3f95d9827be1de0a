"""Streaming delimited-text engine: ``pyarrow.csv`` fast path, Python fallback, exact line numbers.

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
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ingest.readers.base import FileContext

log = logging.getLogger("ingest.readers")

#: Bytes per pyarrow block; bounds memory per batch (plus the batch's Arrow arrays).
BLOCK_SIZE = 4 << 20


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
    if quoted:
        return next(csv.reader([line], delimiter=delimiter), [])
    return line.split(delimiter)


def iter_text(open_stream: Callable[[], BinaryIO], ctx: FileContext, *, names: Sequence[str],
              data_start_line: int, delimiter: str = ",", quoted: bool = True,
              comment_prefix: str | None = None, batch_rows: int = 65536,
              block_size: int = BLOCK_SIZE) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Yield ``(string batch, 1-based physical line numbers)`` for the data rows of a text file.

    Args:
        open_stream: opens the (decompressed) byte stream afresh (called again for the fallback).
        names: column names (the header, already parsed by the caller).
        data_start_line: number of lines before the first data row (header and comments).
        comment_prefix: lines starting with it are metadata (Zeek ``#close``), skipped and counted
            as comments, not records.
    """
    names = dedupe(names)
    width = len(names)
    skipped: list[int] = []  # physical line numbers consumed without being emitted (sorted)
    unknown_lines = False
    state = {"emitted_v": 0, "last_line": data_start_line}

    def handler(row: "pacsv.InvalidRow") -> str:
        nonlocal unknown_lines
        num = row.number
        if num is None:
            unknown_lines = True
        else:
            skipped.append(num)
            state["last_line"] = max(state["last_line"], num)
        text = row.text
        if comment_prefix and text.startswith(comment_prefix):
            ctx.comment()
        else:
            ctx.reject(num, "columns", text)
        return "skip"

    read_opts = pacsv.ReadOptions(column_names=list(names), skip_rows=data_start_line,
                                  use_threads=False, block_size=block_size)
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                    double_quote=quoted, newlines_in_values=False,
                                    invalid_row_handler=handler)
    conv_opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                     strings_can_be_null=False, quoted_strings_can_be_null=False)
    stream = None
    try:
        stream = open_stream()
        reader = pacsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts,
                                convert_options=conv_opts)
        for batch in reader:
            n = batch.num_rows
            if n == 0:
                continue
            v = state["emitted_v"] + np.arange(n, dtype=np.int64)
            if unknown_lines:
                lines = np.full(n, -1, dtype=np.int64)
            else:
                # data index of the j-th skipped row, minus j: where it sits among emitted rows
                sk = np.asarray(skipped, dtype=np.int64)
                adj = (sk - data_start_line - 1) - np.arange(len(sk), dtype=np.int64)
                lines = v + data_start_line + 1 + np.searchsorted(adj, v, side="right")
                state["last_line"] = max(state["last_line"], int(lines[-1]))
            state["emitted_v"] += n
            for off in range(0, n, batch_rows):
                yield batch.slice(off, batch_rows), lines[off:off + batch_rows]
        return
    except (pa.ArrowInvalid, pa.ArrowException, UnicodeDecodeError, ValueError, OSError) as exc:
        msg = str(exc)
        if "Empty CSV file" in msg:
            return
        if unknown_lines:
            # cannot tell where pyarrow stopped: report the file error instead of guessing
            ctx.reject(None, "file_error", f"{type(exc).__name__}: {msg}")
            ctx.file_stats.error = msg
            return
        log.info("%s: pyarrow stopped at line ~%d (%s); reading the rest line by line",
                 ctx.path, state["last_line"], msg.splitlines()[0] if msg else type(exc).__name__)
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a broken stream must not mask the real error
                pass
    yield from _python_rest(open_stream, ctx, width=width, names=names, resume_after=state["last_line"],
                            delimiter=delimiter, quoted=quoted, comment_prefix=comment_prefix,
                            batch_rows=batch_rows)


def _python_rest(open_stream: Callable[[], BinaryIO], ctx: FileContext, *, width: int,
                 names: Sequence[str], resume_after: int, delimiter: str, quoted: bool,
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

    with open_stream() as fh:
        for num, raw in enumerate(_lines(fh), start=1):
            if num <= resume_after:
                continue
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue  # blank lines are not records (pyarrow skips them too)
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
            except csv.Error:
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

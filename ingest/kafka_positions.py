"""Exact source positions of the records decoded from Kafka messages.

A record's position is ``(topic, partition, offset, index)``: the offset of the message it came from
and its index inside that message (0 for one JSON record per message; ``0..n-1`` for the records of
one Arrow IPC message). The archive (:mod:`ingest.archive`) identifies a record by it, so it must be
exact: a record archived at a wrong position is neither protected from a duplicate nor harmless.

:func:`decode_positions` decodes one poll's messages of one partition as
:func:`ingest.kafka_io.decode_messages` does (the same records; every bad message dead-lettered once)
and gives each decoded row its message offset and index:

* the common case costs nothing extra: one message (every row from it, indexes ``0..n-1``), or
  JSON messages that each gave their one record (rows in message order, index 0);
* a run of JSON messages in which a bad message cost a record is decoded again in blocks of 32
  messages (no dead letters), and a block that lost one is halved until every part maps one to one;
* a poll that mixes formats or holds several Arrow messages is decoded per *run* (consecutive JSON
  messages; each other message alone), each message once, rows in message order.

Used by :class:`ingest.kafka_io.KafkaSource` (every :class:`~ingest.kafka_io.SourceBatch` carries
``offsets`` and ``indexes``) and so by the daemon and ``graphsentry archive --from-kafka``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)


def _is_json(raw: bytes | None, fmt: str) -> bool:
    """Whether ``decode_messages`` reads ``raw`` as one JSON record (at most one row)."""
    if fmt == "json":
        return True
    if fmt == "arrow":
        return False
    if raw is not None and raw[:1] == b"{":
        return True
    return _sniff(raw) == "json"


def _sniff(raw: bytes | None) -> str:
    from ingest.kafka_io.codecs import sniff_message

    return sniff_message(raw)


def message_runs(values: Sequence[bytes | None], fmt: str) -> list[tuple[int, int, bool]]:
    """``[(start, end, is_json)]``: maximal runs of consecutive JSON messages, each other message alone."""
    out: list[tuple[int, int, bool]] = []
    i, m = 0, len(values)
    while i < m:
        j = i + 1
        js = _is_json(values[i], fmt)
        if js:
            while j < m and _is_json(values[j], fmt):
                j += 1
        out.append((i, j, js))
        i = j
    return out


#: a JSON run known to hold a bad message is decoded again in blocks of this many messages (a block that
#: lost a record is halved): the slow per-record decode then sees about two blocks' worth, not the run
_BLOCK = 32


class _Parts:
    """Tables with each row's message offset and index, in message order."""

    def __init__(self, offsets: Sequence[int]) -> None:
        self.offsets = offsets
        self.tables: list[pa.Table] = []
        self.offs: list[np.ndarray] = []
        self.idx: list[np.ndarray] = []

    def one(self, k: int, t: pa.Table) -> None:
        """Every row of ``t`` from message ``k``."""
        self.tables.append(t)
        self.offs.append(np.full(t.num_rows, int(self.offsets[k]), np.int64))
        self.idx.append(np.arange(t.num_rows, dtype=np.int64))

    def each(self, lo: int, hi: int, t: pa.Table) -> None:
        """Row ``i`` of ``t`` from message ``lo + i`` (one record per message)."""
        self.tables.append(t)
        self.offs.append(np.asarray([int(o) for o in self.offsets[lo:hi]], np.int64))
        self.idx.append(np.zeros(hi - lo, np.int64))

    def result(self, kind: str) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        if not self.tables:
            from ingest.schema import FLOW_SCHEMA, TX_SCHEMA

            return (TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA).empty_table(), \
                np.empty(0, np.int64), np.empty(0, np.int64)
        t = pa.concat_tables(self.tables) if len(self.tables) > 1 else self.tables[0]
        return t, np.concatenate(self.offs), np.concatenate(self.idx)


def _split_json(parts: _Parts, values: list, lo: int, hi: int, fmt: str, kind: str) -> None:
    """Rows of the JSON messages ``lo..hi``, known to have lost a record, with their messages (no dead letters):
    blocks of :data:`_BLOCK` messages, and a block that lost a record halved until each part maps one to one.
    (A decode call costs about half a millisecond whatever its size, so few calls matter more than few rows.)"""
    if hi - lo <= _BLOCK:
        _halve(parts, values, lo, hi, fmt, kind, known_bad=True)
        return
    for b in range(lo, hi, _BLOCK):
        _halve(parts, values, b, min(b + _BLOCK, hi), fmt, kind, known_bad=False)


def _halve(parts: _Parts, values: list, lo: int, hi: int, fmt: str, kind: str, known_bad: bool) -> None:
    from ingest.kafka_io.decode import decode_messages

    if not known_bad or hi - lo == 1:
        t = decode_messages(values[lo:hi], fmt, kind).table
        if hi - lo == 1:
            parts.one(lo, t)
            return
        if t.num_rows == hi - lo:
            parts.each(lo, hi, t)
            return
    mid = (lo + hi) // 2
    _halve(parts, values, lo, mid, fmt, kind, known_bad=False)
    _halve(parts, values, mid, hi, fmt, kind, known_bad=False)


class _Shifted:
    """A dead-letter sink that numbers a run's messages as their place in the whole poll."""

    def __init__(self, sink: Any, base: int) -> None:
        self.sink, self.base = sink, base

    def add(self, source: str, line: Any, reason: str, raw: Any) -> None:
        self.sink.add(source, line + self.base if isinstance(line, int) else line, reason, raw)


def decode_positions(values: Sequence[bytes | None], offsets: Sequence[int], fmt: str, kind: str,
                     dead_letter: Any = None, source: str = "kafka"):
    """``(Decoded, offsets, indexes)`` (int64 arrays, one value per row): the messages of one partition
    decoded as :func:`ingest.kafka_io.decode_messages` does (every bad message dead-lettered once), with
    each row's message offset and index in its message.

    One JSON run (the common case) or one message is decoded whole; when a bad message cost a record,
    the run is decoded again in blocks (no dead letters) to place each row. A poll that mixes formats or
    holds several Arrow messages is decoded run by run (each message once), rows in message order.
    ``offsets`` holds one offset per message of ``values``, in the same order; when it does not (a backend
    that gave no offsets), the decode is returned with ``None, None``: positions unknown."""
    from ingest.kafka_io.decode import Decoded, decode_messages

    values = list(values)
    if len(offsets) != len(values):
        dec = decode_messages(values, fmt, kind, dead_letter, source=source)
        log.warning("%s: %d offsets for %d messages: the records' positions are unknown", source, len(offsets),
                    len(values))
        return dec, None, None
    all_json = fmt == "json" or (fmt == "auto" and all(v is not None and v[:1] == b"{" for v in values))
    runs = [(0, len(values), True)] if all_json else message_runs(values, fmt)
    if len(runs) <= 1:
        dec = decode_messages(values, fmt, kind, dead_letter, source=source)
        n = dec.table.num_rows
        if not values:
            return dec, np.empty(0, np.int64), np.empty(0, np.int64)
        if len(values) == 1:
            return dec, np.full(n, int(offsets[0]), np.int64), np.arange(n, dtype=np.int64)
        if n == len(values):  # one JSON run, every message its record
            return dec, np.asarray(offsets, dtype=np.int64), np.zeros(n, np.int64)
        parts = _Parts(offsets)
        _split_json(parts, values, 0, len(values), fmt, kind)
        table, offs, idx = parts.result(kind)
        if table.num_rows != dec.table.num_rows:  # cannot happen: decoding is deterministic
            log.error("%s: decoded again in blocks, %d records instead of %d: positions unknown", source,
                      table.num_rows, dec.table.num_rows)
            return dec, None, None
        return Decoded(table, dec.malformed), offs, idx
    parts = _Parts(offsets)
    malformed: dict[str, int] = {}
    for lo, hi, js in runs:
        dl = _Shifted(dead_letter, lo) if dead_letter is not None and lo else dead_letter
        d = decode_messages(values[lo:hi], fmt, kind, dl, source=source)
        for reason, c in d.malformed.items():
            malformed[reason] = malformed.get(reason, 0) + c
        if not js or hi - lo == 1:
            parts.one(lo, d.table)
        elif d.table.num_rows == hi - lo:
            parts.each(lo, hi, d.table)
        else:
            _split_json(parts, values, lo, hi, fmt, kind)
    table, offs, idx = parts.result(kind)
    return Decoded(table, malformed), offs, idx


__all__ = ["decode_positions", "message_runs"]

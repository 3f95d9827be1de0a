"""Shared machinery for readers: statistics, per-file context, vectorised parsing, assembly.

Readers parse text columns as Arrow strings and convert them with
``pyarrow.compute`` kernels, never row by row in Python on the fast path. A value
that does not convert marks its row malformed with a reason (``bad_<field>``);
such rows are dead-lettered with their raw text and removed, the rest go on.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.deadletter import FILE_REASONS, DeadLetter
from ingest.schema import FLOW_SCHEMA, TS_TYPE, TX_SCHEMA

log = logging.getLogger("ingest.readers")

#: Tokens that mean "no value" in text inputs (Zeek unset ``-`` and empty ``(empty)``).
NULL_TOKENS = ("", "-", "(empty)", "\"\"")
#: Largest accepted event time (2100-01-01) in epoch seconds; beyond it a value is a parse accident.
TS_MAX_S = 4102444800.0

_ArrowErrors = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)


@dataclass
class FileStats:
    """What one input file gave: good rows, malformed rows by reason, time, notes."""

    path: str
    format: str
    rows_ok: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    comments: int = 0  # metadata lines skipped on purpose (Zeek '#close' etc.), not records
    unknown_fields: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def rows_malformed(self) -> int:
        return sum(self.malformed.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "rows_ok": self.rows_ok,
            "malformed": dict(self.malformed), "comments": self.comments,
            "unknown_fields": dict(self.unknown_fields), "seconds": round(self.seconds, 4),
            "error": self.error,
        }


@dataclass
class ReadStats:
    """Totals over all inputs of one ``open_inputs`` reader.

    ``rows_ok + records_malformed`` equals the number of records in the inputs that could be
    read; files that could not be (``files_failed``) are one ``malformed`` entry each, under a
    reason in :data:`FILE_REASONS`.
    """

    rows_ok: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    per_file: dict[str, FileStats] = field(default_factory=dict)
    unknown_fields: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_malformed(self) -> int:
        return sum(self.malformed.values())

    @property
    def records_malformed(self) -> int:
        """Rejected records, without the whole-file entries (:data:`FILE_REASONS`)."""
        return sum(v for k, v in self.malformed.items() if k not in FILE_REASONS)

    @property
    def files_failed(self) -> list[str]:
        """Inputs that could not be read, or not to the end (their ``FileStats.error`` says why)."""
        return [k for k, v in self.per_file.items() if v.error]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_ok": self.rows_ok, "malformed": dict(self.malformed),
            "files_failed": len(self.files_failed),
            "unknown_fields": dict(self.unknown_fields), "seconds": round(self.seconds, 4),
            "per_file": {k: v.as_dict() for k, v in self.per_file.items()},
        }


class FileContext:
    """Everything a format reader needs while reading one file."""

    def __init__(self, path: str, fmt: str, kind: str, dead_letter: DeadLetter, stats: ReadStats,
                 batch_size: int = 65536, mapping: Any = None) -> None:
        self.path = path
        self.format = fmt
        self.kind = kind
        self.dead_letter = dead_letter
        self.stats = stats
        self.batch_size = batch_size
        self.mapping = mapping
        self.file_stats = stats.per_file.setdefault(path, FileStats(path=path, format=fmt))
        # readers may parse in a background thread: counts and dead letters go through one lock
        self._lock = threading.Lock()

    def reject(self, line: int | None, reason: str, raw: Any) -> None:
        """Count, log (first few) and dead-letter one malformed record."""
        with self._lock:
            self.dead_letter.add(self.path, line, reason, raw)
            fm = self.file_stats.malformed
            fm[reason] = fm.get(reason, 0) + 1
            gm = self.stats.malformed
            gm[reason] = gm.get(reason, 0) + 1

    def unknown_field(self, name: str, n: int = 1) -> None:
        """Count a field the canonical schema does not know (ignored, but not silently)."""
        for d in (self.file_stats.unknown_fields, self.stats.unknown_fields):
            d[name] = d.get(name, 0) + n

    def comment(self, n: int = 1) -> None:
        with self._lock:
            self.file_stats.comments += n


class RowCheck:
    """First-failure reason per row of a batch, built from vectorised masks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.code = np.zeros(n, dtype=np.int16)
        self.reasons: list[str] = []

    def flag(self, mask: Any, reason: str) -> None:
        """Mark rows where ``mask`` is true (nulls count as false) with ``reason`` unless already bad."""
        m = to_np_bool(mask, self.n)
        if not m.any():
            return
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.code[(self.code == 0) & m] = self.reasons.index(reason) + 1

    @property
    def any_bad(self) -> bool:
        return bool(self.code.any())

    def good(self) -> np.ndarray:
        return self.code == 0

    def bad_rows(self) -> Iterable[tuple[int, str]]:
        for i in np.flatnonzero(self.code):
            yield int(i), self.reasons[int(self.code[i]) - 1]


def to_np_bool(mask: Any, n: int) -> np.ndarray:
    """Arrow/numpy boolean mask -> numpy bool array, nulls as False."""
    if isinstance(mask, np.ndarray):
        return mask.astype(bool, copy=False)
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)
    return np.full(n, bool(mask))


def as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def nullify(arr: pa.Array, tokens: Sequence[str] = NULL_TOKENS) -> pa.Array:
    """Null out the "no value" tokens of a string array."""
    arr = as_array(arr)
    if not tokens or not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        return arr
    mask = pc.is_in(arr, value_set=pa.array(list(tokens), arr.type))
    if not pc.any(mask).as_py():
        return arr
    return pc.if_else(mask, pa.scalar(None, arr.type), arr)


_INT_RE = r"^[+-]?[0-9]{1,18}$"
_FLOAT_RE = r"(?i)^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan)$"


def _regex_cast(arr: pa.Array, pattern: str, typ: pa.DataType) -> pa.Array:
    """Cast the values matching ``pattern`` (after trimming) and null the rest."""
    trimmed = pc.utf8_trim_whitespace(arr)
    ok = pc.match_substring_regex(trimmed, pattern)
    try:
        return pc.cast(pc.if_else(ok, trimmed, pa.scalar(None, pa.string())), typ)
    except _ArrowErrors:
        # The regex accepts something the cast kernel rejects (e.g. overflow): element by element.
        out = []
        for v in pc.if_else(ok, trimmed, pa.scalar(None, pa.string())).to_pylist():
            try:
                out.append(None if v is None else pc.cast(pa.array([v]), typ)[0].as_py())
            except _ArrowErrors:
                out.append(None)
        return pa.array(out, typ)


def _try_cast(arr: pa.Array, typ: pa.DataType, tokens: Sequence[str]) -> tuple[pa.Array, pa.Array | None]:
    """Cast in one kernel call (clean columns: no token scan); else null the unset tokens and retry.

    Returns the (possibly token-nulled) input and the cast result, or None when junk remains.
    """
    try:
        return arr, pc.cast(arr, typ)
    except _ArrowErrors:
        pass
    arr = nullify(arr, tokens)
    try:
        return arr, pc.cast(arr, typ)
    except _ArrowErrors:
        return arr, None


def parse_float(arr: pa.Array, check: RowCheck | None, reason: str,
                tokens: Sequence[str] = NULL_TOKENS, allow_nonfinite: bool = True) -> pa.Array:
    """String -> float64; unparseable (non-token) values flag ``reason``."""
    arr = as_array(arr)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
        out = pc.cast(arr, pa.float64())
    else:
        arr, out = _try_cast(arr, pa.float64(), tokens)
        if out is None:
            out = _regex_cast(arr, _FLOAT_RE, pa.float64())
            if check is not None:
                check.flag(pc.and_kleene(pc.is_valid(arr), pc.is_null(out)), reason)
    if not allow_nonfinite:
        finite = pc.is_finite(out)
        bad = pc.invert(pc.fill_null(finite, True))
        if pc.any(bad).as_py():
            if check is not None:
                check.flag(bad, reason)
            out = pc.if_else(bad, pa.scalar(None, pa.float64()), out)
    return out


def parse_int(arr: pa.Array, check: RowCheck | None, reason: str, typ: pa.DataType = pa.int64(),  # noqa: B008 - an immutable type singleton
              lo: int | None = None, hi: int | None = None,
              tokens: Sequence[str] = NULL_TOKENS) -> pa.Array:
    """String -> integer; accepts integral floats ("3.0"); out of [lo, hi] or junk flags ``reason``."""
    if pa.types.is_integer(typ) and typ.bit_width < 64:
        # values that do not fit the target type are malformed, not a crash in the final cast
        tmax = 2 ** (typ.bit_width - (1 if pa.types.is_signed_integer(typ) else 0)) - 1
        hi = tmax if hi is None else min(hi, tmax)
        if pa.types.is_signed_integer(typ):
            lo = -tmax - 1 if lo is None else max(lo, -tmax - 1)
    arr = as_array(arr)
    if pa.types.is_integer(arr.type):
        out = pc.cast(arr, pa.int64())
    elif pa.types.is_floating(arr.type):
        out = _float_to_int(arr, check, reason)
    else:
        arr, out = _try_cast(arr, pa.int64(), tokens)
        if out is None:
            out = _regex_cast(arr, _INT_RE, pa.int64())
            rest = pc.and_kleene(pc.is_valid(arr), pc.is_null(out))
            if pc.any(rest).as_py():
                f = _regex_cast(pc.if_else(rest, arr, pa.scalar(None, pa.string())), _FLOAT_RE, pa.float64())
                out = pc.coalesce(out, _float_to_int(f, None, reason))
            if check is not None:
                check.flag(pc.and_kleene(pc.is_valid(arr), pc.is_null(out)), reason)
    mm = pc.min_max(out)
    lo_v, hi_v = mm["min"].as_py(), mm["max"].as_py()
    in_range = lo_v is None or ((lo is None or lo_v >= lo) and (hi is None or hi_v <= hi))
    if not in_range:
        bad = pa.array(np.zeros(len(out), bool))
        if lo is not None:
            bad = pc.or_kleene(bad, pc.less(out, lo))
        if hi is not None:
            bad = pc.or_kleene(bad, pc.greater(out, hi))
        bad = pc.fill_null(bad, False)
        if pc.any(bad).as_py():
            if check is not None:
                check.flag(bad, reason)
            out = pc.if_else(bad, pa.scalar(None, pa.int64()), out)
    return pc.cast(out, typ)


def _float_to_int(f: pa.Array, check: RowCheck | None, reason: str) -> pa.Array:
    """Integral, finite floats -> int64; the rest null (and flagged)."""
    f = pc.cast(f, pa.float64())
    ok = pc.and_kleene(pc.is_finite(f), pc.and_kleene(pc.equal(pc.floor(f), f), pc.less(pc.abs(f), 9.0e18)))
    ok = pc.fill_null(ok, False)
    if check is not None:
        check.flag(pc.and_kleene(pc.is_valid(f), pc.invert(ok)), reason)
    return pc.cast(pc.if_else(ok, f, pa.scalar(None, pa.float64())), pa.int64())


def epoch_to_ts(values: pa.Array, check: RowCheck, unit: str = "s", reason: str = "bad_ts") -> pa.Array:
    """Numeric epoch values in ``unit`` (s, ms, us, ns) -> ``timestamp[us, UTC]``.

    Null, non-finite, negative or beyond-2100 values flag ``reason`` (``ts`` is required).
    """
    scale = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}[unit]
    if pa.types.is_integer(values.type):
        v = pc.cast(values, pa.int64())
        if unit == "s":
            us = pc.multiply_checked(v, 1_000_000) if _fits(v, 9.2e12) else None
        elif unit == "ms":
            us = pc.multiply_checked(v, 1000) if _fits(v, 9.2e15) else None
        elif unit == "us":
            us = v
        else:
            us = pc.divide(v, 1000)
        if us is not None:
            limit = int(TS_MAX_S * 1e6)
            bad = pc.or_kleene(pc.is_null(us), pc.or_kleene(pc.less(us, 0), pc.greater(us, limit)))
            check.flag(bad, reason)
            us = pc.if_else(bad, pa.scalar(0, pa.int64()), us)
            return pc.cast(us, pa.int64()).cast(TS_TYPE)
        values = pc.cast(values, pa.float64(), safe=False)  # beyond 2**53: rounded, then out of range below
    f = pc.multiply(pc.cast(values, pa.float64(), safe=False), scale)
    bad = pc.invert(pc.fill_null(pc.and_kleene(pc.is_finite(f), pc.and_kleene(
        pc.greater_equal(f, 0.0), pc.less_equal(f, TS_MAX_S * 1e6))), False))
    check.flag(bad, reason)
    f = pc.if_else(bad, 0.0, f)
    return pc.cast(pc.round(f), pa.int64()).cast(TS_TYPE)


def _fits(v: pa.Array, bound: float) -> bool:
    mm = pc.min_max(v)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    return lo is None or (abs(lo) < bound and abs(hi) < bound)


#: strptime formats tried (in order) for text timestamps that are not ISO 8601.
TS_FORMATS = (
    "%d/%m/%Y %H:%M:%S",   # CSE-CIC-IDS2018
    "%d/%m/%Y %H:%M",      # CIC-IDS2017 original (day first)
    "%d/%m/%Y %I:%M:%S %p",
    "%Y/%m/%d %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
)


def text_to_ts(arr: pa.Array, check: RowCheck, formats: Sequence[str] | None = None,
               reason: str = "bad_ts", tz_offset_s: float = 0.0) -> pa.Array:
    """Date-time strings -> ``timestamp[us, UTC]``.

    ISO 8601 (with or without zone) first; naive values are taken as UTC then
    shifted by ``-tz_offset_s`` (a source in UTC-3 passes ``tz_offset_s=-10800``);
    then each of ``formats`` (strptime) for what is left. Unparseable values flag ``reason``.
    """
    arr = nullify(as_array(arr))
    formats = TS_FORMATS if formats is None else formats
    out: pa.Array | None = None
    try:
        out = pc.cast(arr, pa.timestamp("us")).cast(pa.int64())
    except _ArrowErrors:
        try:
            out = pc.cast(arr, TS_TYPE).cast(pa.int64())
            tz_offset_s = 0.0  # explicit zones win
        except _ArrowErrors:
            out = None
    zoned: np.ndarray | None = None
    if out is None:
        # vectorised formats first (CSE-CIC-IDS2018 day-first times), Python only for what is left
        out = pa.nulls(len(arr), pa.int64())
        for fmt in formats:
            rest = pc.if_else(pc.is_null(out), arr, pa.scalar(None, pa.string()))
            out = pc.coalesce(out, pc.strptime(rest, format=fmt, unit="us", error_is_null=True).cast(pa.int64()))
        left = pc.and_kleene(pc.is_null(out), pc.is_valid(arr))
        if pc.any(left).as_py():
            vals = out.to_pylist()
            zoned = np.zeros(len(arr), dtype=bool)
            for i in np.flatnonzero(to_np_bool(left, len(arr))):
                i = int(i)
                d = _py_datetime(arr[i].as_py().strip(), formats)
                if d is None:
                    continue
                try:
                    if d.tzinfo is not None:
                        d = d.astimezone(timezone.utc).replace(tzinfo=None)
                        zoned[i] = True
                    vals[i] = (d - datetime(1970, 1, 1)) // timedelta(microseconds=1)
                except (OverflowError, ValueError):
                    continue  # e.g. year 1 with a positive offset: unparseable, flagged below
            out = pa.array(vals, pa.int64())
    if tz_offset_s and zoned is not None and zoned.any():
        # explicit zones win over the configured offset
        shift = np.where(zoned, 0, int(tz_offset_s * 1e6))
        out = pc.subtract(out, pa.array(shift))
        tz_offset_s = 0.0
    if tz_offset_s:
        out = pc.subtract(out, int(tz_offset_s * 1e6))
    limit = int(TS_MAX_S * 1e6)
    bad = pc.or_kleene(pc.is_null(out), pc.or_kleene(pc.less(out, 0), pc.greater(out, limit)))
    check.flag(bad, reason)
    return pc.if_else(bad, pa.scalar(0, pa.int64()), out).cast(TS_TYPE)


def _py_datetime(v: str, formats: Sequence[str]) -> datetime | None:
    """ISO 8601 (any zone) or one of ``formats`` with fractional seconds; None if none fits."""
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        pass
    for fmt in formats:
        for f in (fmt, fmt + ".%f"):  # Arrow's strptime has no %f
            try:
                return datetime.strptime(v, f)
            except ValueError:
                continue
    return None


def require_text(arr: pa.Array, check: RowCheck, reason: str,
                 tokens: Sequence[str] = NULL_TOKENS) -> pa.Array:
    """A required string field: null/empty/unset values flag ``reason``."""
    arr = nullify(arr, tokens)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    arr = pc.utf8_trim_whitespace(arr)
    check.flag(pc.or_kleene(pc.is_null(arr), pc.equal(arr, "")), reason)
    return arr


def optional_text(arr: pa.Array, tokens: Sequence[str] = NULL_TOKENS) -> pa.Array:
    arr = nullify(arr, tokens)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return arr


# --- labels -----------------------------------------------------------------------

LABEL_WORDS: dict[str, int] = {
    "benign": 0, "normal": 0, "legitimate": 0, "genuine": 0, "0": 0, "false": 0,
    "malicious": 1, "attack": 1, "anomaly": 1, "fraud": 1, "1": 1, "true": 1,
    "background": 2, "outlier": 2, "2": 2,
}
_LABEL_KEYS = pa.array(list(LABEL_WORDS))
_LABEL_VALS = pa.array(list(LABEL_WORDS.values()), pa.int8())


def label_of_word(word: str | None, other: int | None = None) -> int | None:
    """One label word -> 0/1/2 (benign/normal..., malicious..., background/outlier...), else ``other``."""
    if word is None:
        return None
    w = word.strip().lower()
    if w in ("", "-", "(empty)"):
        return None
    if w in LABEL_WORDS:
        return LABEL_WORDS[w]
    if w.startswith(("benign", "normal")):
        return 0
    if w.startswith("malicious"):
        return 1
    if w.startswith(("background", "outlier")):
        return 2
    return other


def labels_from_text(arr: pa.Array, other: int | None = None) -> pa.Array:
    """Label words -> int8 0/1/2; words starting with benign/normal, malicious, background count too.

    ``other`` is the label for any other non-empty value (CIC class names -> 1); else null.
    Labels have few distinct values: they are dictionary-encoded and mapped once per value.
    """
    arr = as_array(arr)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    enc = pc.dictionary_encode(arr)
    codes = pa.array([label_of_word(w, other) for w in enc.dictionary.to_pylist()], pa.int8())
    return pc.take(codes, enc.indices)


def attack_where_malicious(attack: pa.Array, label: pa.Array) -> pa.Array:
    """Keep the attack class only on malicious rows (benign/background -> null)."""
    attack = nullify(as_array(attack))
    if not pa.types.is_string(attack.type):
        attack = pc.cast(attack, pa.string())
    attack = pc.utf8_trim_whitespace(attack)
    keep = pc.fill_null(pc.equal(label, 1), False)
    return pc.if_else(keep, attack, pa.scalar(None, pa.string()))


# --- protocols --------------------------------------------------------------------

_PROTO_NUM = pa.array([6, 17, 1, 58], pa.int64())
_PROTO_NAME = pa.array(["tcp", "udp", "icmp", "icmpv6"])


def proto_from_number(nums: pa.Array) -> pa.Array:
    """IANA protocol numbers -> tcp/udp/icmp/icmpv6/other:<n>."""
    nums = pc.cast(nums, pa.int64())
    named = pc.take(_PROTO_NAME, pc.index_in(nums, value_set=_PROTO_NUM))
    other = pc.binary_join_element_wise("other:", pc.cast(nums, pa.string()), "")
    return pc.coalesce(named, other)


_PROTO_WORDS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6", "icmp6": "icmpv6",
                "ipv6-icmp": "icmpv6"}


def proto_from_text(arr: pa.Array) -> pa.Array:
    """Protocol names or numbers -> canonical lower-case names (unknown words -> other:<word>)."""
    arr = nullify(as_array(arr))
    low = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(arr, pa.string())))
    keys = pa.array(list(_PROTO_WORDS))
    named = pc.take(pa.array(list(_PROTO_WORDS.values())), pc.index_in(low, value_set=keys))
    isnum = pc.match_substring_regex(low, r"^[0-9]{1,3}$")
    num = pc.if_else(isnum, low, pa.scalar(None, pa.string()))
    from_num = proto_from_number(pc.cast(num, pa.int64()))
    other = pc.binary_join_element_wise("other:", low, "")
    return pc.coalesce(named, from_num, other)


# --- assembly ---------------------------------------------------------------------

def schema_for(kind: str) -> pa.Schema:
    if kind == "flows":
        return FLOW_SCHEMA
    if kind == "transactions":
        return TX_SCHEMA
    raise ValueError(f"kind must be 'flows' or 'transactions', got {kind!r}")


def assemble(kind: str, cols: dict[str, pa.Array], n: int, source: str) -> pa.Table:
    """Canonical table (``row`` zero, filled later) from the columns a reader produced."""
    schema = schema_for(kind)
    arrays = []
    for f in schema:
        if f.name == "row":
            arrays.append(pa.array(np.zeros(n, dtype=np.int64)))
        elif f.name == "source" and "source" not in cols:
            arrays.append(pa.array([source] * n, pa.string()) if n else pa.array([], pa.string()))
        elif f.name in cols and cols[f.name] is not None:
            a = as_array(cols[f.name])
            if a.type != f.type:
                a = pc.cast(a, f.type)
            arrays.append(a)
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def finish(ctx: FileContext, cols: dict[str, pa.Array], check: RowCheck, n: int,
           raw_of: Callable[[int], Any], lines: np.ndarray | None) -> pa.Table:
    """Dead-letter the flagged rows, return the good ones as a canonical table."""
    if check.any_bad:
        for i, reason in check.bad_rows():
            ctx.reject(None if lines is None else int(lines[i]), reason, raw_of(i))
    table = assemble(ctx.kind, cols, n, ctx.format)
    if check.any_bad:
        table = table.filter(pa.array(check.good()))
    return table


def raw_joiner(batch: pa.RecordBatch | pa.Table, sep: str) -> Callable[[int], str]:
    """Raw text of row ``i`` re-joined from its string columns (the reader's view of the line)."""
    def raw(i: int) -> str:
        vals = []
        for c in batch.columns:
            v = c[i].as_py()
            vals.append("" if v is None else str(v))
        return sep.join(vals)
    return raw


def isfinite_or_none(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and math.isfinite(x))


def column(batch: pa.RecordBatch | pa.Table, *names: str) -> pa.Array:
    """The first of ``names`` present in ``batch`` (as one Array), else an all-null string array."""
    for nm in names:
        i = batch.schema.get_field_index(nm)
        if i >= 0:
            return as_array(batch.column(i))
    return pa.nulls(batch.num_rows, pa.string())


def has_column(batch: pa.RecordBatch | pa.Table, *names: str) -> bool:
    return any(batch.schema.get_field_index(nm) >= 0 for nm in names)

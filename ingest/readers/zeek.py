"""Zeek conn logs: TSV with ``#fields``/``#types`` header, CSV exports (IoT-23 style), JSON lines.

Zeek's ``-`` (unset) and ``(empty)`` (empty set/string) both become null. Labelled
Stratosphere logs carry ``label`` and ``detailedlabel`` (IoT-23 CSV: ``label``,
``detailed-label``; the original IoT-23 TSV squeezes ``tunnel_parents label
detailed-label`` into one space-separated last column, which is split here).
Labels: Benign -> 0, Malicious -> 1, Background -> 2; ``attack`` is the detailed
label of malicious rows (Stratosphere also puts a detailed label such as
"Microsoft" on benign rows: that is not an attack class and is dropped).

Zeek conventions kept as they are: for ICMP ``src_port`` is the ICMP type and
``dst_port`` the ICMP code; ``src_bytes``/``dst_bytes`` are payload bytes
(``orig_bytes``/``resp_bytes``), ``*_ip_bytes`` IP-level bytes.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.readers.base import (
    FILE_REASONS,
    FileContext,
    RowCheck,
    attack_where_malicious,
    epoch_to_ts,
    finish,
    labels_from_text,
    nullify,
    optional_text,
    parse_float,
    parse_int,
    proto_from_text,
    raw_joiner,
    require_text,
    text_to_ts,
)
from ingest.readers.sources import InputSpec
from ingest.readers.textcsv import iter_text

ZEEK_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")


def _unescape(s: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def parse_header(head: bytes) -> dict[str, Any]:
    """Zeek ASCII log header -> separator, tokens, fields, types, and the count of header lines."""
    meta: dict[str, Any] = {"separator": "\t", "set_separator": ",", "empty_field": "(empty)",
                            "unset_field": "-", "fields": None, "types": None, "path": None,
                            "has_separator": False}
    n = last = 0
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if not line.startswith("#"):
            break
        n += 1
        if line.startswith("#separator"):
            meta["separator"] = _unescape(line[len("#separator"):].strip()) or "\t"
            meta["has_separator"] = True
            continue
        key, _, value = line[1:].partition(meta["separator"])
        if key in ("set_separator", "empty_field", "unset_field", "path"):
            meta[key] = value
        elif key == "fields":
            meta["fields"] = value.split(meta["separator"])
            last = n
        elif key == "types":
            meta["types"] = value.split(meta["separator"])
            last = n
            break  # data (or '#close' etc., counted as comments by the reader) follows #types
    # the header ends with #types (or #fields); later '#' lines are metadata records of the log
    meta["header_lines"] = last if meta["fields"] is not None else n
    return meta


#: A file whose rows failed at least this share of the time is "(nearly) every row" failing.
HEADER_FAIL_SHARE = 0.9


def _common_width(head: bytes, meta: dict[str, Any], sample: int = 50) -> int | None:
    """The column count that at least 90 % of the first data lines share (at least 3 of them), else None."""
    counts: dict[int, int] = {}
    lines = [ln for ln in head.split(b"\n")[:-1] if ln and not ln.startswith(b"#")][:sample]
    for ln in lines:
        k = ln.rstrip(b"\r").decode("utf-8", errors="replace").count(meta["separator"]) + 1
        counts[k] = counts.get(k, 0) + 1
    if len(lines) < 3:
        return None
    k, c = max(counts.items(), key=lambda kv: kv[1])
    return k if c >= 0.9 * len(lines) else None


def header_damage(head: bytes, rows_ok: int, malformed: dict[str, int]) -> str | None:
    """Why a Zeek log's header is the likely cause of its rows failing, or None.

    Only when (nearly) every row failed (``HEADER_FAIL_SHARE``) and the header shows a defect: no
    ``#separator`` line, a required field (ts, id.orig_h, id.resp_h) missing from ``#fields``,
    ``#types`` missing or of another length, or rows that agree on a column count other than the
    one ``#fields`` names (the first data lines, at least three, 90 % of them).
    """
    bad = {k: v for k, v in malformed.items() if k not in FILE_REASONS and v}
    n_bad = sum(bad.values())
    if n_bad == 0 or n_bad < HEADER_FAIL_SHARE * (n_bad + rows_ok):
        return None
    meta = parse_header(head)
    fields = meta["fields"] or []
    problems = []
    if not meta["has_separator"]:
        problems.append("no #separator line")
    missing = [f for f in ("ts", "id.orig_h", "id.resp_h") if f not in fields]
    if missing:
        problems.append("#fields lacks " + ", ".join(missing))
    if meta["types"] is None:
        problems.append("no #types line")
    elif len(meta["types"]) != len(fields):
        problems.append(f"#fields names {len(fields)} columns but #types {len(meta['types'])}")
    width = _common_width(head, meta)
    if bad.get("columns", 0) * 2 >= n_bad and width is not None and width != len(fields):
        problems.append(f"its rows have {width} columns, #fields names {len(fields)}")
    if not problems:
        return None
    return (f"{n_bad} of {n_bad + rows_ok} rows failed and its #fields header is the cause ("
            + "; ".join(problems) + "): repair the header or re-export the log")


def _col(batch: pa.RecordBatch, *names: str) -> pa.Array | None:
    for n in names:
        i = batch.schema.get_field_index(n)
        if i >= 0:
            return batch.column(i)
    return None


def normalise_zeek(batch: pa.RecordBatch, lines: np.ndarray | None, ctx: FileContext,
                   tokens: tuple[str, ...], sep: str) -> pa.Table:
    """Zeek conn columns as strings -> canonical flows (bad rows dead-lettered)."""
    n = batch.num_rows
    check = RowCheck(n)
    ts_raw = nullify(_col(batch, "ts"), tokens) if _col(batch, "ts") is not None else pa.nulls(n, pa.string())
    f = parse_float(ts_raw, None, "bad_ts", tokens)
    nonnum = pc.and_kleene(pc.is_valid(ts_raw), pc.is_null(f))
    if pc.any(nonnum).as_py():
        # Zeek JSON logs may use ISO 8601 times (JSON::TS_ISO8601)
        tcheck = RowCheck(n)
        iso = text_to_ts(pc.if_else(nonnum, ts_raw, pa.scalar(None, pa.string())), tcheck)
        ts_num = epoch_to_ts(pc.fill_null(f, 0.0), RowCheck(n))
        ts = pc.if_else(nonnum, iso, ts_num)
        check.flag(pc.is_null(ts_raw), "bad_ts")
        check.flag(pc.and_kleene(nonnum, pa.array(tcheck.code != 0)), "bad_ts")
        fcheck = RowCheck(n)
        epoch_to_ts(pc.if_else(nonnum, 0.0, f), fcheck)
        check.flag(fcheck.code != 0, "bad_ts")
    else:
        ts = epoch_to_ts(f, check)
    cols: dict[str, Any] = {"ts": ts}
    def need(*names: str) -> pa.Array:  # a column the header lacks is all null (its rows fail below)
        c = _col(batch, *names)
        return pa.nulls(n, pa.string()) if c is None else c

    cols["src_ip"] = require_text(need("id.orig_h", "id_orig_h", "src_ip"), check, "missing_src_ip", tokens)
    cols["dst_ip"] = require_text(need("id.resp_h", "id_resp_h", "dst_ip"), check, "missing_dst_ip", tokens)
    cols["src_port"] = parse_int(need("id.orig_p", "id_orig_p"), check, "bad_src_port", pa.int32(), 0, 65535, tokens)
    cols["dst_port"] = parse_int(need("id.resp_p", "id_resp_p"), check, "bad_dst_port", pa.int32(), 0, 65535, tokens)
    for name, src in (("uid", "uid"), ("service", "service"), ("conn_state", "conn_state"), ("history", "history")):
        c = _col(batch, src)
        if c is not None:
            cols[name] = optional_text(c, tokens)
    p = _col(batch, "proto")
    if p is not None:
        cols["proto"] = proto_from_text(p)
    d = _col(batch, "duration")
    if d is not None:
        cols["duration"] = parse_float(d, check, "bad_duration", tokens, allow_nonfinite=False)
        check.flag(pc.less(cols["duration"], 0.0), "bad_duration")
    for name, src in (("src_bytes", "orig_bytes"), ("dst_bytes", "resp_bytes"), ("src_pkts", "orig_pkts"),
                      ("dst_pkts", "resp_pkts"), ("src_ip_bytes", "orig_ip_bytes"),
                      ("dst_ip_bytes", "resp_ip_bytes")):
        c = _col(batch, src)
        if c is not None:
            cols[name] = parse_int(c, check, f"bad_{src}", pa.int64(), 0, None, tokens)
    lab = _col(batch, "label")
    if lab is not None:
        cols["label"] = labels_from_text(nullify(lab, tokens))
        det = _col(batch, "detailedlabel", "detailed-label", "detailed_label")
        if det is not None:
            cols["attack"] = attack_where_malicious(nullify(det, tokens), cols["label"])
    return finish(ctx, cols, check, n, raw_joiner(batch, sep), lines)


def _split_iot23_tail(batch: pa.RecordBatch, merged: str) -> pa.RecordBatch:
    """IoT-23 TSV: 'tunnel_parents   label   detailed-label' is one column of space-separated values."""
    names = merged.split()
    col = batch.column(batch.schema.get_field_index(merged))
    parts = pc.split_pattern_regex(col, r"\s+")
    arrays, out_names = [], []
    for i, c in enumerate(batch.columns):
        if batch.schema.names[i] != merged:
            arrays.append(c)
            out_names.append(batch.schema.names[i])
    for j, nm in enumerate(names):
        arrays.append(_nth(parts, j))
        out_names.append(nm)
    return pa.RecordBatch.from_arrays(arrays, names=out_names)


def _nth(lists: pa.Array, j: int) -> pa.Array:
    lens = pc.list_value_length(lists)
    ok = pc.fill_null(pc.greater(lens, j), False)
    safe = pc.if_else(ok, lists, pa.scalar([str(i) for i in range(j + 1)], lists.type))
    return pc.if_else(ok, pc.list_element(safe, j), pa.scalar(None, pa.string()))


class ZeekTSV:
    name = "zeek"
    kind = "flows"
    description = "Zeek conn.log, tab-separated with #fields/#types header (Stratosphere label columns)"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        meta = parse_header(spec.head)
        fields = meta["fields"]
        if not fields:
            why = "no #fields header line: repair the header or re-export the log"
            ctx.reject(None, "bad_header", why)
            ctx.file_stats.error = why
            return
        merged = next((f for f in fields if len(f.split()) > 1), None)
        tokens = tuple(dict.fromkeys(["", meta["unset_field"], meta["empty_field"], "-", "(empty)"]))
        sep = meta["separator"]
        for batch, lines in iter_text(spec.open, ctx, names=fields, data_start_line=meta["header_lines"],
                                      delimiter=sep, quoted=False, comment_prefix="#",
                                      batch_rows=ctx.batch_size):
            # a comment line that happens to have the right number of columns is still metadata
            first = batch.column(0)
            comment = pc.fill_null(pc.starts_with(first, "#"), False)
            if pc.any(comment).as_py():
                ctx.comment(int(pc.sum(comment).as_py()))
                keep = pc.invert(comment)
                lines = lines[np.asarray(keep.to_numpy(zero_copy_only=False), bool)]
                batch = batch.filter(keep)
                if batch.num_rows == 0:
                    continue
            if merged is not None:
                batch = _split_iot23_tail(batch, merged)
            yield normalise_zeek(batch, lines, ctx, tokens, sep)


class ZeekCSV:
    name = "zeek-csv"
    kind = "flows"
    description = "Zeek conn log exported as CSV (IoT-23 style: ts,uid,id.orig_h,...,label,detailed-label)"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        from ingest.readers.textcsv import split_line
        first = spec.head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
        names = [h.strip() for h in split_line(first, ",", True)]
        tokens = ("", "-", "(empty)", '""')
        # no CSV quoting: these exports never quote (LUFlow writes "" for empty, a null token), and an
        # unterminated quote would otherwise swallow the following lines into one bad row
        for batch, lines in iter_text(spec.open, ctx, names=names, data_start_line=1, delimiter=",",
                                      quoted=False, batch_rows=ctx.batch_size):
            yield normalise_zeek(batch, lines, ctx, tokens, ",")


class ZeekJSON:
    name = "zeek-json"
    kind = "flows"
    description = "Zeek conn log as JSON lines (one object per line, keys id.orig_h etc.)"

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        from ingest.readers.jsonl import iter_json_objects
        wanted = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
                  "duration", "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "resp_pkts",
                  "orig_ip_bytes", "resp_ip_bytes", "label", "detailedlabel", "detailed-label")
        for objs, lines in iter_json_objects(spec, ctx):
            from ingest.readers.jsonl import _column_as_text
            for o in objs:
                if isinstance(o.get("id"), dict):  # nested id record (some exporters)
                    for k, v in o["id"].items():
                        o.setdefault(f"id.{k}", v)
            batch = pa.RecordBatch.from_arrays([_column_as_text([o.get(k) for o in objs]) for k in wanted],
                                               names=list(wanted))
            raws = [json.dumps(o, default=str) for o in objs]
            table = normalise_zeek(batch, lines, _RawCtx(ctx, raws, lines), ("", "-", "(empty)"), "\t")
            yield table


class _RawCtx:
    """Wrap a FileContext so dead letters carry the original JSON text, not a re-joined row."""

    def __init__(self, ctx: FileContext, raws: list[str], lines: np.ndarray) -> None:
        self._ctx, self._raws = ctx, raws
        self._line_to_idx = {int(l): i for i, l in enumerate(lines)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def reject(self, line: int | None, reason: str, raw: Any) -> None:
        i = self._line_to_idx.get(line) if line is not None else None
        self._ctx.reject(line, reason, self._raws[i] if i is not None else raw)

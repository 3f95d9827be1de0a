"""Column-mapping configs: read any other CSV/TSV (or Parquet) by naming which column is which.

A mapping is YAML or JSON (or a dict)::

    kind: flows                    # or transactions
    delimiter: ","                 # "\\t" for TSV; default ","
    quoted: true                   # CSV quoting; false for plain TSV
    skip_lines: 0                  # lines before the header line
    null_tokens: ["", "-", "NA"]   # values that mean "no value"
    columns:                       # canonical field -> source column (only what the source has)
      ts: StartTime
      src_ip: SrcAddr
      dst_ip: DstAddr
      src_port: Sport
      dst_port: Dport
      proto: Proto                 # names (tcp) or IANA numbers (6)
      duration: Dur
      label: Label
      attack: Label
    ts: {unit: iso}                # s | ms | us | ns (epoch numbers) | iso | a strptime format
    #     utc_offset_hours: -3     # naive times are local time UTC-3
    duration_unit: s               # s | ms | us
    label_map: {"Normal": 0, "Background": 2}   # exact source values -> 0/1/2
    label_default: 1               # any other non-empty value (omit: words benign/malicious/... only)
    attack_template: "{}"          # e.g. "scenario-{}"; attack_ignore: ["0"] values that mean none
    constants: {service: "-"}      # a fixed value for a canonical field

Required canonical fields must be mapped (flows: ts, src_ip, dst_ip; transactions:
ts, customer_id, terminal_id, amount); a mapped column missing from a file's
header is a clear ``ValueError`` when the file is read.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.readers.base import (
    NULL_TOKENS,
    FileContext,
    RowCheck,
    as_array,
    epoch_to_ts,
    finish,
    label_of_word,
    labels_from_text,
    optional_text,
    parse_float,
    parse_int,
    proto_from_text,
    raw_joiner,
    require_text,
    schema_for,
    text_to_ts,
)
from ingest.readers.sources import InputSpec
from ingest.readers.textcsv import iter_text, split_line
from ingest.schema import TS_TYPE

REQUIRED = {"flows": ("ts", "src_ip", "dst_ip"), "transactions": ("ts", "customer_id", "terminal_id", "amount")}
_INT32 = {"src_port", "dst_port", "syn_count", "rst_count"}
_UNITS = {"s", "ms", "us", "ns"}


@dataclass
class Mapping:
    """A validated column-mapping config (see the module docstring for the keys)."""

    kind: str = "flows"
    columns: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    quoted: bool = True
    skip_lines: int = 0
    null_tokens: tuple[str, ...] = NULL_TOKENS
    ts_unit: str = "auto"
    ts_format: str | None = None
    utc_offset_hours: float = 0.0
    duration_unit: str = "s"
    label_map: dict[str, int] | None = None
    label_default: int | None = None
    attack_template: str = "{}"
    attack_ignore: tuple[str, ...] = ()
    constants: dict[str, Any] = field(default_factory=dict)
    name: str = "mapped"

    def __post_init__(self) -> None:
        schema = schema_for(self.kind)  # validates kind
        names = set(schema.names) - {"row"}
        bad = sorted(set(self.columns) - names) + sorted(set(self.constants) - names)
        if bad:
            raise ValueError(f"mapping names unknown canonical fields {bad}; known: {sorted(names)}")
        missing = [f for f in REQUIRED[self.kind] if f not in self.columns and f not in self.constants]
        if missing:
            raise ValueError(f"mapping for {self.kind} must map required fields {missing}")
        if self.duration_unit not in _UNITS - {"ns"}:
            raise ValueError(f"duration_unit must be s, ms or us, got {self.duration_unit!r}")
        if self.ts_unit not in _UNITS | {"auto", "iso"}:
            raise ValueError(f"ts unit must be one of s, ms, us, ns, iso, auto, got {self.ts_unit!r}")
        if self.label_map:
            for k, v in self.label_map.items():
                if v not in (0, 1, 2, None):
                    raise ValueError(f"label_map values must be 0, 1, 2 or null; {k!r} -> {v!r}")
        if len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {self.delimiter!r}")


def _scalar_text(v: Any) -> Any:
    """Column names and tokens are text; YAML reads ``1`` or ``1.5`` as numbers."""
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _schema():
    """The mapping-file schema (pydantic, built on first use): unknown keys refused at every level."""
    global _SCHEMA
    if _SCHEMA is not None:
        return _SCHEMA
    from typing import Annotated, Literal

    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

    Text = Annotated[str, BeforeValidator(_scalar_text)]

    class TsSpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        unit: Text = "auto"
        format: Text | None = None
        utc_offset_hours: float = Field(0.0, ge=-24, le=24)

    class MappingFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        kind: Literal["flows", "transactions"] = "flows"
        columns: dict[Text, Text] = Field(default_factory=dict)
        delimiter: Text = ","
        quoted: bool = True
        skip_lines: int = Field(0, ge=0)
        null_tokens: list[Text] = Field(default_factory=lambda: list(NULL_TOKENS))
        ts: Annotated[TsSpec | None, BeforeValidator(lambda v: {"unit": v} if isinstance(v, str) else v)] = None
        duration_unit: Literal["s", "ms", "us"] = "s"
        label_map: dict[Text, Literal[0, 1, 2] | None] | None = None
        label_default: Literal[0, 1, 2] | None = None
        attack_template: Text = "{}"
        attack_ignore: list[Text] = Field(default_factory=list)
        constants: dict[Text, Any] = Field(default_factory=dict)
        name: Text = "mapped"

    _SCHEMA = (MappingFile, TsSpec)
    return _SCHEMA


_SCHEMA = None


def _mapping_problems(exc: Any, where: str) -> ValueError:
    """One line per problem: ``FILE: columns.ts=...: ...`` / ``unknown key 'colums' ...; valid keys: ...``."""
    import difflib

    model, ts_model = _schema()
    lines = []
    for e in exc.errors(include_url=False):
        loc = [x for x in e["loc"] if x != "TsSpec"]
        path = ".".join(str(x) for x in loc)
        if e["type"] == "extra_forbidden":
            valid = sorted((ts_model if loc[:1] == ["ts"] else model).model_fields)
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            parent = f" in {'.'.join(str(x) for x in loc[:-1])}" if len(loc) > 1 else ""
            lines.append(f"{where}unknown mapping key {str(loc[-1])!r}{parent}{hint}; valid keys: {', '.join(valid)}")
        else:
            lines.append(f"{where}{path}={e['input']!r}: {e['msg']}")
    return ValueError("\n".join(dict.fromkeys(lines)))


def _parse_mapping_file(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{at}: {problem}") from None


def load_mapping(src: Any) -> Mapping:
    """A :class:`Mapping` from a YAML/JSON file path, a dict, or a Mapping.

    The keys are validated by a schema (unknown keys refused, also inside ``ts``; types and
    values checked); a problem is a ``ValueError``, one line each, naming the file and the key.
    """
    from pydantic import ValidationError

    if isinstance(src, Mapping):
        return src
    where = ""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        where = f"{path}: "
        cfg = _parse_mapping_file(path)
    elif isinstance(src, dict):
        cfg = dict(src)
    else:
        raise ValueError(f"mapping must be a file path or a dict, got {type(src).__name__}")
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}mapping config must be a mapping of keys to values (kind, columns, ...), "
                         f"got {type(cfg).__name__}")
    model, _ = _schema()
    try:
        m = model.model_validate(cfg)
    except ValidationError as exc:
        raise _mapping_problems(exc, where) from None
    unit, fmt, offset = (m.ts.unit, m.ts.format, m.ts.utc_offset_hours) if m.ts is not None else ("auto", None, 0.0)
    if unit not in _UNITS | {"auto", "iso"} and fmt is None:
        fmt, unit = unit, "iso"  # "ts: {unit: '%d/%m/%Y %H:%M'}" reads as a format
    delim = m.delimiter
    if delim in ("\\t", "tab"):
        delim = "\t"
    try:
        return Mapping(
            kind=m.kind, columns=dict(m.columns), delimiter=delim, quoted=m.quoted, skip_lines=m.skip_lines,
            null_tokens=tuple(m.null_tokens), ts_unit=unit, ts_format=fmt, utc_offset_hours=float(offset),
            duration_unit=m.duration_unit, label_map=dict(m.label_map) if m.label_map else None,
            label_default=m.label_default, attack_template=m.attack_template,
            attack_ignore=tuple(m.attack_ignore), constants=dict(m.constants), name=m.name,
        )
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None


def _ts(arr: pa.Array, m: Mapping, check: RowCheck) -> pa.Array:
    arr = as_array(arr)
    if pa.types.is_timestamp(arr.type):
        us = pc.cast(pc.cast(arr, pa.timestamp("us", tz=arr.type.tz)), pa.int64())
        if arr.type.tz is None and m.utc_offset_hours:
            us = pc.subtract(us, int(m.utc_offset_hours * 3600e6))
        check.flag(pc.is_null(us), "bad_ts")
        return pc.fill_null(us, 0).cast(TS_TYPE)
    if m.ts_unit in _UNITS:
        if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
            return epoch_to_ts(arr, check, unit=m.ts_unit)
        f = parse_float(arr, check, "bad_ts", m.null_tokens)
        return epoch_to_ts(f, check, unit=m.ts_unit)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        from ingest.readers.jsonl import epoch_guess_ts
        return epoch_guess_ts(pc.cast(arr, pa.float64()), check)
    formats = [m.ts_format] if m.ts_format else None
    if m.ts_unit == "auto" and not m.ts_format:
        # epoch numbers (unit from magnitude) and date-time strings, value by value
        from ingest.readers.jsonl import epoch_guess_ts
        n = len(arr)
        f = parse_float(arr, None, "bad_ts", m.null_tokens)
        isnum = pc.is_valid(f)
        ncheck, tcheck = RowCheck(n), RowCheck(n)
        num_ts = epoch_guess_ts(pc.fill_null(f, 0.0), ncheck)
        txt_ts = text_to_ts(pc.if_else(isnum, pa.scalar(None, pa.string()), nullify_tokens(arr, m)), tcheck,
                            tz_offset_s=m.utc_offset_hours * 3600.0)
        check.flag(pc.if_else(isnum, pa.array(ncheck.code != 0), pa.array(tcheck.code != 0)), "bad_ts")
        return pc.if_else(isnum, num_ts, txt_ts)
    return text_to_ts(arr, check, formats=formats, tz_offset_s=m.utc_offset_hours * 3600.0)


def nullify_tokens(arr: pa.Array, m: Mapping) -> pa.Array:
    from ingest.readers.base import nullify
    return nullify(as_array(arr), m.null_tokens) if pa.types.is_string(as_array(arr).type) else as_array(arr)


def _labels(arr: pa.Array, m: Mapping) -> pa.Array:
    arr = as_array(arr)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    if not m.label_map:
        return labels_from_text(nullify_tokens(arr, m), other=m.label_default)
    enc = pc.dictionary_encode(arr)
    vals = []
    for w in enc.dictionary.to_pylist():
        key = None if w is None else w.strip()
        if key is None or key in m.null_tokens:
            vals.append(None)
        elif key in m.label_map:
            vals.append(m.label_map[key])
        else:
            word = label_of_word(key, None)
            vals.append(m.label_default if word is None else word)
    return pc.take(pa.array(vals, pa.int8()), enc.indices)


def _attack(arr: pa.Array, label: pa.Array, m: Mapping) -> pa.Array:
    arr = as_array(arr)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    enc = pc.dictionary_encode(arr)
    vals = []
    for w in enc.dictionary.to_pylist():
        key = None if w is None else w.strip()
        if key is None or key in m.null_tokens or key in m.attack_ignore:
            vals.append(None)
        else:
            vals.append(m.attack_template.format(key))
    att = pc.take(pa.array(vals, pa.string()), enc.indices)
    # benign/background rows carry no attack class
    drop = pc.fill_null(pc.is_in(label, value_set=pa.array([0, 2], pa.int8())), False)
    return pc.if_else(drop, pa.scalar(None, pa.string()), att)


def apply_mapping(batch: pa.RecordBatch, m: Mapping, ctx: FileContext, lines: np.ndarray | None,
                  sep: str) -> pa.Table:
    """Source columns -> canonical table by the mapping (bad rows dead-lettered)."""
    n = batch.num_rows
    check = RowCheck(n)
    schema = schema_for(m.kind)

    def src(fld: str) -> pa.Array | None:
        if fld in m.columns:
            return as_array(batch.column(batch.schema.get_field_index(m.columns[fld])))
        if fld in m.constants:
            v = m.constants[fld]
            return pa.array([None if v is None else str(v)] * n, pa.string())
        return None

    cols: dict[str, Any] = {}
    for f in schema:
        name = f.name
        if name in ("row", "label", "attack"):
            continue
        arr = src(name)
        if arr is None:
            continue
        tok = m.null_tokens
        if name == "ts":
            cols[name] = _ts(arr, m, check)
        elif name == "proto":
            cols[name] = proto_from_text(nullify_tokens(arr, m))
        elif name == "duration":
            d = parse_float(arr, check, "bad_duration", tok, allow_nonfinite=False)
            check.flag(pc.less(d, 0.0), "bad_duration")
            cols[name] = pc.divide(d, {"s": 1.0, "ms": 1e3, "us": 1e6}[m.duration_unit])
        elif pa.types.is_integer(f.type):
            hi = 65535 if name.endswith("_port") else None
            cols[name] = parse_int(arr, check, f"bad_{name}", f.type, 0, hi, tok)
        elif pa.types.is_floating(f.type):
            cols[name] = parse_float(arr, check, f"bad_{name}", tok, allow_nonfinite=False)
            if not f.nullable:
                check.flag(pc.is_null(cols[name]), f"bad_{name}")
        elif not f.nullable:
            cols[name] = require_text(arr, check, f"missing_{name}", tok)
        else:
            cols[name] = optional_text(arr, tok)
    lab = src("label")
    if lab is not None:
        cols["label"] = _labels(lab, m)
        att = src("attack")
        if att is not None:
            cols["attack"] = _attack(att, cols["label"], m)
    elif src("attack") is not None:
        cols["attack"] = optional_text(src("attack"), m.null_tokens)
    return finish(ctx, cols, check, n, raw_joiner(batch, sep), lines)


class MappedCSV:
    """Reader for any delimited text file (or Parquet/Arrow file) through a :class:`Mapping`."""

    name = "mapped"
    kind = "any"
    description = "CSV/TSV through a column-mapping config"

    def __init__(self, mapping: Any = None) -> None:
        self.mapping = load_mapping(mapping) if mapping is not None else None

    def _check_columns(self, spec: InputSpec, header: list[str]) -> None:
        missing = [f"{k} <- {v!r}" for k, v in self.mapping.columns.items() if v not in header]
        if missing:
            raise ValueError(f"{spec.name}: mapped columns not in the header: {', '.join(missing)}; "
                             f"header has {header[:40]}")

    def read(self, spec: InputSpec, ctx: FileContext) -> Iterator[pa.Table]:
        m = self.mapping
        if m is None:  # canonical CSV sniffed without a mapping: identity mapping
            first = spec.head.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")
            header = [h.strip() for h in split_line(first, ",", True)]
            names = set(schema_for(ctx.kind).names) - {"row"}
            m = Mapping(kind=ctx.kind, columns={h: h for h in header if h in names}, ts_unit="auto")
            self.mapping = m
            unknown = [h for h in header if h not in names and h != "row"]
        else:
            unknown = []
        if spec.head[:4] == b"PAR1" or spec.head[:6] == b"ARROW1":
            from ingest.readers.arrowfmt import iter_arrow_batches
            if not spec.plain:
                raise ValueError(f"{spec.name}: Parquet/Arrow inside an archive is not supported")
            fmt = "parquet" if spec.head[:4] == b"PAR1" else "arrow"
            index = 0
            for batch in iter_arrow_batches(spec.path, fmt, ctx.batch_size):
                self._check_columns(spec, batch.schema.names)
                lines = np.arange(index, index + batch.num_rows, dtype=np.int64)
                index += batch.num_rows
                yield apply_mapping(batch, m, ctx, lines, ",")
            return
        text_lines = spec.head.split(b"\n")
        if len(text_lines) <= m.skip_lines:
            return
        first = text_lines[m.skip_lines].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
        header = [h.strip() for h in split_line(first, m.delimiter, m.quoted)]
        self._check_columns(spec, header)
        # iter_text gets the stripped names so the mapping's column names match
        for batch, lines in iter_text(spec.open, ctx, names=header, data_start_line=m.skip_lines + 1,
                                      delimiter=m.delimiter, quoted=m.quoted, batch_rows=ctx.batch_size):
            for h in unknown:  # columns a canonical CSV has beyond the schema: ignored, counted per row
                ctx.unknown_field(h, batch.num_rows)
            yield apply_mapping(batch, m, ctx, lines, m.delimiter)

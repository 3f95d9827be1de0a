"""The input formats: :data:`FORMATS` (name -> :class:`FormatInfo`, readers imported on first use), their
aliases, and format sniffing from a file's first bytes (:func:`sniff_format`, :func:`sniff_head`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.readers.sources import InputSpec, expand


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

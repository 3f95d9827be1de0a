"""Bad input files, written for real into a folder, and what a reader must make of each.

Each builder takes a folder and returns a :class:`Bad`: the file, how many records it holds
when they can be counted (every one must end up in the output or in the dead letters), and the
whole-file reason it must be reported under (or None when it is read record by record).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
IOT23 = REPO / "samples" / "iot23" / "CTU-Honeypot-Capture-4-1-labeled.csv"     # zeek-csv, 452 records
IOT23_RECORDS = 452
ZEEK = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"  # zeek TSV, 1500 records
ZEEK_RECORDS = 1500
PCAP = REPO / "samples" / "suricata-verify" / "bug-4663-03__icmp_and_ssh.pcap"

#: Dead-letter reasons of whole files (the rest are records).
FILE_REASONS = {"unreadable_file", "file_error", "bad_header", "pcap_error", "pcap_no_flows"}


@dataclass
class Bad:
    path: Path
    records: int | None       # records in the file (None: not countable, e.g. binary)
    good: int | None          # of those, records a reader must deliver (None: not known exactly)
    file_reason: str | None   # whole-file reason it must be reported under, or None


def executable_bytes(n: int = 256 * 1024) -> bytes:
    """The first bytes of a real ELF executable (the Python interpreter running the tests)."""
    data = Path(sys.executable).resolve().read_bytes()[:n]
    assert data[:4] == b"\x7fELF", "tests expect a Linux (ELF) interpreter"
    return data


def _data_lines(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\n") if ln.rstrip(b"\r")]


def elf_log(d: Path) -> Bad:
    p = d / "x.log"
    p.write_bytes(executable_bytes())
    return Bad(p, None, 0, "unreadable_file")


def csv_binary_block(d: Path, keep_cr: bool = False) -> Bad:
    """The IoT-23 CSV with 4 KiB of an executable between its rows 200 and 201."""
    lines = IOT23.read_bytes().splitlines(keepends=True)
    block = executable_bytes()[8192:12288]
    if not keep_cr:
        block = block.replace(b"\r", b" ")  # lone CRs split lines differently in pyarrow: counted apart
    body = b"".join(lines[:201]) + block + b"\n" + b"".join(lines[201:])
    p = d / "with-block.csv"
    p.write_bytes(body)
    return Bad(p, None if keep_cr else len(_data_lines(body)) - 1, IOT23_RECORDS, None)


def _cut_mid_line(data: bytes, frac: float = 0.5) -> bytes:
    """``data`` cut a few bytes into the line that starts after ``frac`` of it (no final newline)."""
    start = data.index(b"\n", int(len(data) * frac)) + 1
    return data[: start + 5]


def truncated_csv(d: Path) -> Bad:
    body = _cut_mid_line(IOT23.read_bytes())
    p = d / "truncated.csv"
    p.write_bytes(body)
    n = len(_data_lines(body)) - 1
    return Bad(p, n, n - 1, None)  # the partial last line is a malformed record


def truncated_tsv(d: Path) -> Bad:
    body = _cut_mid_line(ZEEK.read_bytes())
    p = d / "truncated.conn.log"
    p.write_bytes(body)
    n = len([ln for ln in _data_lines(body) if not ln.startswith(b"#")])
    return Bad(p, n, n - 1, None)


def jsonl_lines(n: int = 100, t0: int = 1_700_000_000) -> list[str]:
    return [json.dumps({"ts": t0 + i, "src_ip": f"10.0.0.{i % 7}", "dst_ip": "10.0.1.1", "src_port": 1000 + i,
                        "dst_port": 80, "proto": "tcp"}) for i in range(n)]


def truncated_jsonl(d: Path) -> Bad:
    lines = jsonl_lines()
    body = "\n".join(lines)[:-20]  # the last object cut in half
    p = d / "truncated.jsonl"
    p.write_text(body)
    return Bad(p, len(lines), len(lines) - 1, None)


def truncated_parquet(d: Path) -> Bad:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest.readers import open_inputs

    t = pa.Table.from_batches(list(open_inputs([str(IOT23)])))
    full = d / "full.tmp"
    pq.write_table(t, full)
    data = full.read_bytes()
    full.unlink()
    p = d / "truncated.parquet"
    p.write_bytes(data[: len(data) // 2])
    return Bad(p, None, 0, "unreadable_file")


def truncated_pcap(d: Path) -> Bad:
    data = PCAP.read_bytes()
    p = d / "truncated.pcap"
    p.write_bytes(data[: len(data) // 2])
    return Bad(p, None, None, None)  # nfstream keeps what precedes the cut, or the file is counted


def empty_file(d: Path) -> Bad:
    p = d / "empty.log"
    p.write_bytes(b"")
    return Bad(p, 0, 0, None)


def _zeek_with_header(d: Path, name: str, fix: Callable[[list[str]], list[str]]) -> Path:
    lines = ZEEK.read_text().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.startswith("#")]
    p = d / name
    p.write_text("".join(fix(head)) + "".join(body))
    return p


def zeek_truncated_fields(d: Path) -> Bad:
    """``#fields`` cut after its fourth name (a log copied off a full disk, say)."""
    def fix(head: list[str]) -> list[str]:
        return [("\t".join(h.split("\t")[:5]) + "\n") if h.startswith("#fields") else h for h in head]
    return Bad(_zeek_with_header(d, "cut-fields.conn.log", fix), ZEEK_RECORDS, 0, "bad_header")


def zeek_garbled_fields(d: Path) -> Bad:
    """``#fields`` with its address names garbled: every row lacks its endpoints."""
    def fix(head: list[str]) -> list[str]:
        return [h.replace("id.orig_h", "id.or?g_h").replace("id.resp_h", "id.re\ufffdp_h") if h.startswith("#fields")
                else h for h in head]
    return Bad(_zeek_with_header(d, "garbled-fields.conn.log", fix), ZEEK_RECORDS, 0, "bad_header")


def zeek_no_separator(d: Path) -> Bad:
    """No ``#separator`` line: tab is Zeek's default, so the log still reads in full."""
    def fix(head: list[str]) -> list[str]:
        return [h for h in head if not h.startswith("#separator")]
    return Bad(_zeek_with_header(d, "no-separator.conn.log", fix), ZEEK_RECORDS, ZEEK_RECORDS, None)


def json_named_csv(d: Path) -> Bad:
    """JSON lines in a file named .csv: the content decides the format, not the name."""
    lines = jsonl_lines(50)
    p = d / "mislabelled.csv"
    p.write_text("\n".join(lines) + "\n")
    return Bad(p, 50, 50, None)


BUILDERS: dict[str, Callable[[Path], Bad]] = {
    "elf_log": elf_log, "csv_binary_block": csv_binary_block,
    "csv_binary_block_cr": lambda d: csv_binary_block(d, keep_cr=True),
    "truncated_csv": truncated_csv, "truncated_tsv": truncated_tsv, "truncated_jsonl": truncated_jsonl,
    "truncated_parquet": truncated_parquet, "truncated_pcap": truncated_pcap, "empty_file": empty_file,
    "zeek_truncated_fields": zeek_truncated_fields, "zeek_garbled_fields": zeek_garbled_fields,
    "zeek_no_separator": zeek_no_separator, "json_named_csv": json_named_csv,
}


def good_zeek(d: Path) -> Path:
    """A good Zeek log (a copy of the bundled sample) beside the bad ones."""
    p = d / "good.conn.log"
    p.write_bytes(ZEEK.read_bytes())
    return p

"""TailSource reads a text log's backlog a bounded number of bytes at a time: many tables, the same records."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from ingest.tail import TailSource, read_files

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"


def _tail(path: Path, read_bytes: int) -> list[pa.Table]:
    src = TailSource([path], follow=True, poll_interval=0.01)
    src.read_bytes = read_bytes
    return list(src._scan_once())


def _same(a: list[pa.Table], b: list[pa.Table]) -> None:
    ta, tb = pa.concat_tables(a), pa.concat_tables(b)
    assert ta.num_rows == tb.num_rows > 0
    for name in ("row", "uid", "ts", "src_ip", "dst_port"):
        assert ta.column(name).to_pylist() == tb.column(name).to_pylist(), name


@pytest.mark.parametrize("read_bytes", [4096, 50_000])
def test_backlog_is_read_in_bounded_chunks_with_the_same_records(read_bytes):
    size = SAMPLE.stat().st_size
    whole = _tail(SAMPLE, 1 << 30)
    parts = _tail(SAMPLE, read_bytes)
    assert len(whole) == 1
    assert len(parts) >= size // read_bytes  # one table per chunk, not one of the whole file
    assert max(t.num_rows for t in parts) < whole[0].num_rows
    _same(parts, whole)
    _same(parts, list(read_files([SAMPLE])))  # and what the finite source reads


def test_appended_lines_after_a_chunked_backlog(tmp_path):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    body = [ln for ln in lines if not ln.startswith(b"#close")]
    p = tmp_path / "conn.log"
    p.write_bytes(b"".join(body[:400]))
    src = TailSource([p], follow=True, poll_interval=0.01)
    src.read_bytes = 2048
    first = list(src._scan_once())
    with open(p, "ab") as f:
        f.write(b"".join(body[400:]))
    rest = list(src._scan_once())
    assert first and rest
    _same(first + rest, list(read_files([SAMPLE])))


def test_comment_blank_and_crlf_lines_are_dropped_as_line_by_line(tmp_path):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    hdr = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    recs = [ln for ln in lines if not ln.startswith(b"#")]
    messy = hdr + recs[:50] + [b"\n", b"#close\t2022\n", b"   \r\n"] + recs[50:120] + [b"# a comment\n"] + recs[120:]
    p = tmp_path / "conn.log"
    p.write_bytes(b"".join(messy))
    clean = tmp_path / "clean.log"
    clean.write_bytes(b"".join(hdr + recs))
    for rb in (1 << 30, 3000):
        _same(_tail(p, rb), _tail(clean, 1 << 30))


def test_csv_with_crlf_keeps_its_header_across_chunks(tmp_path):
    rows = ["ts,src_ip,src_port,dst_ip,dst_port,proto"] + [
        f"{1_700_000_000 + i},10.0.{i // 250}.{i % 250},{1024 + i},192.168.0.1,443,tcp" for i in range(2000)]
    p = tmp_path / "flows.csv"
    p.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    parts = _tail(p, 4096)
    assert len(parts) > 5
    t = pa.concat_tables(parts)
    assert t.num_rows == 2000
    assert t.column("src_port").to_pylist() == [1024 + i for i in range(2000)]

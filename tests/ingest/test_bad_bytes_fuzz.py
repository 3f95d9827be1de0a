"""Hypothesis: arbitrary bytes never make a reader raise anything but ``NothingReadable``, and nothing vanishes.

Inputs are held in memory (``memory_spec``) and read with the CSV (Zeek CSV export), Zeek TSV,
JSON-lines and auto-detecting readers. Invariant, counted here independently: the good records +
the dead-lettered records (+ Zeek comment lines) == the non-empty lines after the header, unless
the reader reports a whole-file entry (which must then be there). Lone CRs are kept out of the
counted cases (pyarrow ends a line there, the line fallback does not), and fed in a case of
their own that only checks that nothing raises and nothing vanishes.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_inputs import FILE_REASONS, IOT23, ZEEK
from ingest.deadletter import DeadLetter
from ingest.readers import NothingReadable, open_inputs
from ingest.readers.sources import memory_spec

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IOT23_LINES = IOT23.read_bytes().splitlines(keepends=True)
ZEEK_LINES = ZEEK.read_bytes().splitlines(keepends=True)
ZEEK_HEADER = b"".join(ln for ln in ZEEK_LINES if ln.startswith(b"#") and not ln.startswith(b"#close"))
ZEEK_ROWS = [ln for ln in ZEEK_LINES if not ln.startswith(b"#")]
JSON_ROWS = [b'{"ts": 1700000000.5, "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 80, "proto": "tcp"}\n',
             b'{"ts": "2023-11-14T22:13:20Z", "src_ip": "10.0.0.3", "dst_ip": "10.0.0.4", "label": "benign"}\n']

#: (format, header bytes, good rows to mutate, comment prefix of data lines)
CASES = {
    "zeek-csv": (IOT23_LINES[0], IOT23_LINES[1:40], None),
    "zeek": (ZEEK_HEADER, ZEEK_ROWS[:40], b"#"),
    "jsonl": (b"", JSON_ROWS, None),
}

no_cr = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"\x00"))


def read(data: bytes, fmt: str):
    """Read ``data`` as ``fmt``; return (reader, record dead letters, whole-file dead letters)."""
    dl = DeadLetter(None)
    reader = open_inputs([memory_spec("fuzz.input", data)], format=fmt, dead_letter=dl, batch_size=7)
    try:
        got = sum(b.num_rows for b in reader)
    except NothingReadable as exc:  # the one error a read may end with: nothing read, something rejected
        assert "\n" not in str(exc)
        assert reader.stats.rows_ok == 0 and dl.total > 0
        got = 0
    assert got == reader.stats.rows_ok
    records = sum(v for k, v in dl.counts.items() if k not in FILE_REASONS)
    whole = sum(v for k, v in dl.counts.items() if k in FILE_REASONS)
    return reader, records, whole


def lines_after_header(body: bytes, fmt: str) -> int:
    parts = body.split(b"\n")
    if fmt == "jsonl":
        return sum(1 for p in parts if p.strip())
    return sum(1 for p in parts if p)


def check_accounted(header: bytes, body: bytes, fmt: str) -> None:
    reader, records, whole = read(header + body, fmt)
    comments = sum(fs.comments for fs in reader.stats.per_file.values())
    accounted = reader.stats.rows_ok + records + comments
    expected = lines_after_header(body, fmt)
    if whole:  # the reader gave up on (part of) the file, and said so
        assert accounted <= expected
    else:
        assert accounted == expected, (accounted, expected, dict(reader.stats.malformed))


def _mutate(row: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    row = row.rstrip(b"\n")
    for pos, cut, junk in edits:
        i = pos % (len(row) + 1)
        row = row[:i] + junk + row[i + cut:]
    return row + b"\n"


mutations = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 8), no_cr.map(lambda b: b[:12])), max_size=3)


@SETTINGS
@given(fmt=st.sampled_from(sorted(CASES)), picks=st.lists(st.tuples(st.integers(0, 39), mutations), min_size=1,
                                                             max_size=12))
def test_mutated_valid_lines_are_each_read_or_dead_lettered(fmt, picks):
    header, rows, _ = CASES[fmt]
    body = b"".join(_mutate(rows[i % len(rows)], m) for i, m in picks)
    check_accounted(header, body, fmt)


@SETTINGS
@given(fmt=st.sampled_from(sorted(CASES)), chunks=st.lists(no_cr, min_size=1, max_size=6))
def test_random_bytes_after_a_valid_header_are_each_dead_lettered(fmt, chunks):
    header, rows, _ = CASES[fmt]
    body = b"".join(c + b"\n" for c in chunks) + rows[0]  # one good row after the junk still comes through
    check_accounted(header, body, fmt)


@SETTINGS
@given(data=st.binary(min_size=1, max_size=600), fmt=st.sampled_from(["auto", "zeek-csv", "zeek", "jsonl"]))
def test_random_files_never_raise_and_never_vanish(data, fmt):
    reader, records, whole = read(data, fmt)
    lines = [p for p in data.replace(b"\r", b"\n").split(b"\n") if p.strip()]
    if len(lines) >= 2 or fmt in ("auto", "jsonl"):
        # more than a header line: something was read, or the rest is in the dead letters
        assert reader.stats.rows_ok + records + whole + sum(f.comments for f in reader.stats.per_file.values()) > 0 \
            or not lines


@SETTINGS
@given(junk=st.binary(min_size=1, max_size=300))
def test_binary_block_inside_a_valid_csv_keeps_the_rows_around_it(junk):
    header, rows, _ = CASES["zeek-csv"]
    body = b"".join(rows[:10]) + junk + b"\n" + b"".join(rows[10:20])
    reader, records, whole = read(header + body, "auto")
    assert reader.stats.rows_ok == 20 and not whole  # every row around the junk
    assert records >= 1 or not junk.replace(b"\r", b"").replace(b"\n", b"")  # the junk is dead-lettered

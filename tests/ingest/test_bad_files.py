"""Bad files never stop a read and never vanish: readers, the file source and the CLI on real bad files.

Every bad file is read beside a good Zeek log: the good one is read in full, the bad one gives
what it can, and each of its records is in the output or in the dead letters (which name the
bad file's own path); a file that cannot be read at all is one ``unreadable_file`` entry.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bad_inputs import BUILDERS, FILE_REASONS, REPO, ZEEK_RECORDS, Bad, elf_log, good_zeek, truncated_parquet
from ingest.deadletter import DeadLetter, read_dead_letters
from ingest.readers import NothingReadable, open_inputs
from ingest.tail import read_files

GRAPHSENTRY = REPO / ".venv" / "bin" / "graphsentry"


def _account(bad: Bad, rows_ok: int, dead: list[dict]) -> None:
    """The bad file's records: delivered + dead-lettered == in the file; its whole-file entry if due."""
    mine = [d for d in dead if d["source"] == str(bad.path)]
    records = [d for d in mine if d["reason"] not in FILE_REASONS]
    whole = [d["reason"] for d in mine if d["reason"] in FILE_REASONS]
    if bad.good is not None:
        assert rows_ok == bad.good
    if bad.records is not None:
        assert rows_ok + len(records) == bad.records
    if bad.file_reason is not None:
        assert whole == [bad.file_reason]
    elif bad.good is None:  # not countable: something came out of it, or it is reported
        assert rows_ok > 0 or whole
    if bad.records is None and bad.file_reason is None and bad.good is not None and bad.good > 0:
        assert records, "the unreadable part of the file must be dead-lettered"


@pytest.mark.parametrize("read_ahead", [0, 2])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_open_inputs_bad_file_beside_a_good_one(tmp_path, kind, read_ahead):
    bad = BUILDERS[kind](tmp_path)
    good = good_zeek(tmp_path)
    dl = tmp_path / "dl.jsonl"
    reader = open_inputs([str(bad.path), str(good)], dead_letter=str(dl), read_ahead=read_ahead)
    n = sum(b.num_rows for b in reader)
    dead = read_dead_letters(dl) if dl.exists() else []
    st = reader.stats
    assert st.per_file[str(good)].rows_ok == ZEEK_RECORDS and st.per_file[str(good)].error is None
    assert n == st.rows_ok == ZEEK_RECORDS + st.per_file[str(bad.path)].rows_ok
    _account(bad, st.per_file[str(bad.path)].rows_ok, dead)
    assert {d["source"] for d in dead} <= {str(bad.path)}
    if bad.file_reason:  # a skipped file says why, in the stats and the dead letter
        assert st.per_file[str(bad.path)].error
        assert st.files_failed == [str(bad.path)]


@pytest.mark.parametrize("kind", ["elf_log", "truncated_parquet"])
def test_nothing_readable_raises_after_the_read(tmp_path, kind):
    bad = BUILDERS[kind](tmp_path)
    dl = tmp_path / "dl.jsonl"
    reader = open_inputs([str(bad.path)], dead_letter=str(dl))  # opening is no error: the file exists
    with pytest.raises(NothingReadable) as err:
        list(reader)
    msg = str(err.value)
    assert "\n" not in msg and str(bad.path) in msg and str(dl) in msg and "nothing could be read" in msg
    assert [d["reason"] for d in read_dead_letters(dl)] == ["unreadable_file"]


def test_empty_inputs_are_zero_records_not_an_error(tmp_path):
    p = tmp_path / "empty.log"
    p.write_bytes(b"")
    reader = open_inputs([str(p)])
    assert list(reader) == [] and reader.stats.malformed == {}


def test_directory_or_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        open_inputs([str(tmp_path)])
    with pytest.raises(FileNotFoundError):
        open_inputs([str(tmp_path / "nope.log")])


def test_damaged_fields_header_is_named_once(tmp_path, caplog):
    bad = BUILDERS["zeek_truncated_fields"](tmp_path)
    reader = open_inputs([str(bad.path)], allow_nothing=True)
    assert list(reader) == []
    err = reader.stats.per_file[str(bad.path)].error
    assert "#fields header is the cause" in err and f"{ZEEK_RECORDS} of {ZEEK_RECORDS} rows failed" in err
    assert reader.stats.malformed["bad_header"] == 1 and reader.stats.malformed["columns"] == ZEEK_RECORDS
    said = [r.getMessage() for r in caplog.records if "#fields header" in r.getMessage()]
    assert len(said) == 1 and str(bad.path) in said[0]


def test_read_files_skips_bad_files_and_names_them(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    bads = [BUILDERS[k](d) for k in ("elf_log", "truncated_parquet", "truncated_jsonl", "empty_file",
                                      "zeek_truncated_fields")]
    good = good_zeek(d)
    dl = DeadLetter(tmp_path / "dl.jsonl")
    tables = list(read_files([d], dead_letter=dl))
    dl.close()
    rows = [r for t in tables for r in t.column("row").to_pylist()]
    dead = read_dead_letters(tmp_path / "dl.jsonl")
    assert len(rows) == ZEEK_RECORDS + 99 and rows == list(range(len(rows)))  # good + the readable jsonl part
    assert {x["source"] for x in dead} <= {str(b.path) for b in bads}      # real paths, no temporary file
    by_file = {str(b.path): sorted({x["reason"] for x in dead if x["source"] == str(b.path)}) for b in bads}
    assert by_file[str(bads[0].path)] == ["unreadable_file"] and by_file[str(bads[1].path)] == ["unreadable_file"]
    assert by_file[str(bads[2].path)] == ["bad_json"] and by_file[str(bads[3].path)] == []
    assert by_file[str(bads[4].path)] == ["bad_header", "columns"]
    assert str(good) not in {x["source"] for x in dead}


# --- the CLI, as a user runs it ----------------------------------------------------------------

def _run(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([str(GRAPHSENTRY), *args], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode in (0, 2, 3), (out.returncode, out.stderr)
    return out


CLI_KINDS = ["elf_log", "csv_binary_block_cr", "truncated_csv", "truncated_tsv", "truncated_jsonl",
             "truncated_parquet", "truncated_pcap", "empty_file", "zeek_truncated_fields", "json_named_csv"]


@pytest.mark.parametrize("kind", CLI_KINDS)
def test_cli_ingest_on_a_bad_file_alone(tmp_path, kind):
    bad = BUILDERS[kind](tmp_path)
    out = tmp_path / "o.parquet"
    dl = tmp_path / "dl.jsonl"
    r = _run("ingest", str(bad.path), "--out", str(out), "--dead-letter", str(dl), "--no-progress")
    dead = read_dead_letters(dl) if dl.exists() else []
    if r.returncode == 3:
        assert not out.exists() and len(r.stderr.strip().splitlines()[-1]) > 0
        assert "nothing could be read" in r.stderr and dead  # why is in the dead letters
        assert bad.good in (0, None)
    else:
        assert r.returncode == 0, r.stderr
        _account(bad, pq.read_table(out).num_rows, dead)


def test_cli_ingest_bad_files_beside_a_good_one(tmp_path):
    bads = [BUILDERS[k](tmp_path) for k in CLI_KINDS]
    good = good_zeek(tmp_path)
    out, dl = tmp_path / "o.parquet", tmp_path / "dl.jsonl"
    r = _run("ingest", *[str(b.path) for b in bads], str(good), "--out", str(out), "--dead-letter", str(dl),
             "--no-progress")
    assert r.returncode == 0, r.stderr
    t = pq.read_table(out)
    dead = read_dead_letters(dl)
    counted = [b for b in bads if b.records is not None]
    delivered = t.num_rows
    expected = ZEEK_RECORDS + sum(b.good for b in bads if b.good is not None)
    if all(b.good is not None for b in bads):
        assert delivered == expected
    assert delivered >= expected
    for b in counted:  # every countable record is delivered or dead-lettered
        recs = [x for x in dead if x["source"] == str(b.path) and x["reason"] not in FILE_REASONS]
        assert len(recs) == b.records - b.good, b.path
    failed = {b.path.name for b in bads if b.file_reason}
    skipped = [ln for ln in r.stdout.splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 1 and f"{len(failed)} file(s)" in skipped[0] and str(dl) in skipped[0]


@pytest.mark.parametrize("kind", ["elf_log", "truncated_parquet", "csv_binary_block_cr", "zeek_truncated_fields",
                                  "empty_file"])
def test_cli_windows_on_bad_files(tmp_path, kind):
    bad = BUILDERS[kind](tmp_path)
    dl = tmp_path / "dl.jsonl"
    alone = _run("windows", str(bad.path), "--dead-letter", str(dl), "--json", "--no-progress")
    if alone.returncode == 3:
        assert "nothing could be read" in alone.stderr and bad.good in (0, None)
    good = good_zeek(tmp_path)
    both = _run("windows", str(bad.path), str(good), "--window", "600s", "--lateness", "1h", "--json",
                "--no-progress")
    assert both.returncode == 0, both.stderr
    summary = json.loads(both.stdout.splitlines()[-1])["summary"]
    assert summary["records"] >= ZEEK_RECORDS
    if bad.file_reason:
        assert summary["files_skipped"] == [str(bad.path)]


def test_cli_ingest_refuses_a_missing_out_directory(tmp_path):
    good = good_zeek(tmp_path)
    r = _run("ingest", str(good), "--out", str(tmp_path / "no" / "such" / "o.parquet"))
    assert r.returncode == 2 and "does not exist; create it first" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "no").exists()
    r = _run("ingest", str(good), "--out", str(tmp_path / "o.parquet"), "--dead-letter", str(tmp_path / "x" / "d.jsonl"))
    assert r.returncode == 2 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("option", ["--late-out", "--dead-letter"])
def test_cli_windows_refuses_a_missing_directory(tmp_path, option):
    good = good_zeek(tmp_path)
    r = _run("windows", str(good), option, str(tmp_path / "no" / "f.out"), "--no-progress")
    assert r.returncode == 2 and "does not exist; create it first" in r.stderr and not (tmp_path / "no").exists()


def test_cli_directory_as_input_is_exit_2(tmp_path):
    r = _run("ingest", str(tmp_path), "--out", str(tmp_path / "o.parquet"))
    assert r.returncode == 2 and "is a directory" in r.stderr


def test_cli_binary_file_alone_exits_3_in_one_line(tmp_path):
    bad = elf_log(tmp_path)
    r = _run("windows", str(bad.path), "--no-progress")
    assert r.returncode == 3
    last = r.stderr.strip().splitlines()[-1]
    assert "nothing could be read" in last and str(bad.path) in last and "binary" in last
    bad2 = truncated_parquet(tmp_path)
    r = _run("ingest", str(bad2.path), "--out", str(tmp_path / "o.parquet"))
    assert r.returncode == 3 and not Path(tmp_path / "o.parquet").exists()
    assert not Path(tmp_path / "o.parquet.part").exists()

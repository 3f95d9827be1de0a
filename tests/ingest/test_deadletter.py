"""Malformed input is counted by reason, logged (first few) and dead-lettered with its raw text."""
from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from ingest.deadletter import DeadLetter, read_dead_letters
from ingest.readers import open_inputs

HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
    "resp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\t"
    "resp_pkts\tresp_ip_bytes\ttunnel_parents\tlabel\tdetailedlabel\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\t"
    "count\tstring\tcount\tcount\tcount\tcount\tset[string]\tstring\tstring\n"
)


def row(ts="1655071198.444458", uid="C1", oh="10.0.0.1", op="1234", rh="10.0.0.2", rp="80", dur="0.5",
        ob="10", lab="Benign", det="(empty)") -> str:
    return "\t".join([ts, uid, oh, op, rh, rp, "tcp", "-", dur, ob, "20", "SF", "T", "F", "0", "ShADadFf",
                      "3", "130", "2", "120", "(empty)", lab, det]) + "\n"


def test_zeek_malformed_rows_counted_and_dead_lettered(tmp_path, caplog):
    lines = [
        row(uid="ok1"),                                  # line 8 (7 header lines)
        row(uid="badport", op="70000"),                  # 9: port out of range
        "short\trow\n",                                  # 10: wrong number of columns
        row(uid="badts", ts="yesterday"),                # 11
        row(uid="unset_ts", ts="-"),                     # 12: ts is required
        row(uid="ok2", dur="-", ob="-", lab="Malicious", det="C&C"),  # 13: unset numbers are fine
        row(uid="noip", oh="-"),                         # 14
        row(uid="negbytes", ob="-5"),                    # 15
        row(uid="ok3", lab="Background"),                # 16
    ]
    p = tmp_path / "conn.log"
    p.write_text(HEADER + "".join(lines) + "#close\t2022-06-17-00-00-07\n")
    dl = tmp_path / "dead.jsonl"
    with caplog.at_level(logging.WARNING, logger="ingest.deadletter"):
        r = open_inputs([p], dead_letter=dl)
        t = pa.Table.from_batches(list(r), schema=r.schema)
    assert t["uid"].to_pylist() == ["ok1", "ok2", "ok3"]
    assert t["row"].to_pylist() == [0, 1, 2]
    assert t["label"].to_pylist() == [0, 1, 2]
    assert t["attack"].to_pylist() == [None, "C&C", None]
    assert t["duration"].to_pylist()[1] is None and t["src_bytes"].to_pylist()[1] is None
    assert r.stats.malformed == {"bad_src_port": 1, "columns": 1, "bad_ts": 2, "missing_src_ip": 1,
                                 "bad_orig_bytes": 1}
    assert r.stats.rows_ok + r.stats.rows_malformed == len(lines)
    assert r.stats.per_file[str(p)].comments == 1  # '#close' is metadata, not a record
    recs = read_dead_letters(dl)
    assert [(d["line"], d["reason"]) for d in recs] == [
        (10, "columns"), (9, "bad_src_port"), (11, "bad_ts"), (12, "bad_ts"), (14, "missing_src_ip"),
        (15, "bad_orig_bytes")]
    assert recs[0]["raw"] == "short\trow"
    assert recs[1]["raw"] == lines[1].rstrip("\n")
    assert all(d["source"] == str(p) for d in recs)
    assert any("bad_src_port" in m for m in caplog.messages)


def test_invalid_utf8_costs_only_its_row(tmp_path):
    p = tmp_path / "conn.log"
    good = [row(uid=f"u{i}") for i in range(5)]
    data = (HEADER + "".join(good[:2])).encode() + row(uid="bad\xff").encode("latin-1") + "".join(good[2:]).encode()
    p.write_bytes(data)
    r = open_inputs([p])
    t = pa.Table.from_batches(list(r), schema=r.schema)
    assert t["uid"].to_pylist() == [f"u{i}" for i in range(5)]
    assert r.stats.malformed == {"encoding": 1}


def test_line_numbers_exact_across_many_bad_rows(tmp_path):
    p = tmp_path / "conn.log"
    body, bad_lines = [], []
    for i in range(3000):
        if i % 7 == 3:
            body.append("x\ty\n")
            bad_lines.append(8 + i)
        elif i % 11 == 5:
            body.append(row(uid=f"p{i}", rp="99999"))
            bad_lines.append(8 + i)
        else:
            body.append(row(uid=f"g{i}"))
    p.write_text(HEADER + "".join(body))
    dl = DeadLetter(tmp_path / "d.jsonl")
    r = open_inputs([p], dead_letter=dl, batch_size=100)
    batches = list(r)
    t = pa.Table.from_batches(batches, schema=r.schema)
    dl.close()
    assert all(b.num_rows <= 100 for b in batches)
    assert sorted(d["line"] for d in read_dead_letters(tmp_path / "d.jsonl")) == bad_lines
    assert t.num_rows + len(bad_lines) == 3000


def test_deadletter_counts_without_file():
    dl = DeadLetter(None)
    dl.add("x", 1, "columns", b"\xff\x00raw")
    dl.add("x", 2, "columns", "raw")
    assert dl.counts == {"columns": 2} and dl.total == 2
    dl.close()


def test_deadletter_truncates_huge_raw(tmp_path):
    dl = DeadLetter(tmp_path / "d.jsonl")
    dl.add("x", 1, "columns", "a" * 200_000)
    dl.close()
    (rec,) = read_dead_letters(tmp_path / "d.jsonl")
    assert rec["truncated"] is True and len(rec["raw"]) == 64 * 1024


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        open_inputs([tmp_path / "nope.log"])

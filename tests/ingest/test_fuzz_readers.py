"""Fuzzing (hypothesis): malformed CSV/TSV/JSON input never crashes a reader and every bad row is counted.

Invariant checked on every generated file: good rows + malformed rows (+ Zeek metadata
lines) == the non-empty lines after the header, counted here independently. Line endings
are LF or CRLF (a lone CR is out of scope: pyarrow treats it as a line end, most tools do not).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.deadletter import FILE_REASONS, DeadLetter
from ingest.readers import open_inputs
from ingest.readers.luflow import LUFLOW_COLUMNS

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZEEK_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
    "resp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\t"
    "resp_pkts\tresp_ip_bytes\ttunnel_parents\tlabel\tdetailedlabel\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\t"
    "count\tstring\tcount\tcount\tcount\tcount\tset[string]\tstring\tstring\n"
).encode()
GOOD_ZEEK = ["1655071198.444458", "C1", "10.0.0.1", "1234", "10.0.0.2", "80", "tcp", "-", "0.5", "10", "20",
             "SF", "T", "F", "0", "ShADadFf", "3", "130", "2", "120", "(empty)", "Benign", "(empty)"]

junk_text = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
junk_value = st.one_of(
    junk_text,
    st.sampled_from(["", "-", "(empty)", "nan", "inf", "-1", "1e400", "99999999999999999999", "0x10", " 7 ",
                     "1.5", "NaN", "Infinity", '"', '""', "\t", ",", "#", "\\x09", "\x00"]),
    st.integers(-(2 ** 70), 2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def _mutated_row(good: list[str], sep: str):
    """A row: the good values with some replaced by junk, sometimes with extra/missing fields."""
    return st.tuples(
        st.lists(st.tuples(st.integers(0, len(good) - 1), junk_value), max_size=4),
        st.integers(-2, 2),
    ).map(lambda m: _apply(good, m, sep))


def _apply(good: list[str], m, sep: str) -> str:
    vals = list(good)
    for i, v in m[0]:
        vals[i] = v
    extra = m[1]
    if extra > 0:
        vals += ["x"] * extra
    elif extra < 0:
        vals = vals[:extra]
    return sep.join(vals)


def _data_lines(body: bytes) -> int:
    """Non-empty lines, LF or CRLF separated (what counts as a record line)."""
    n = 0
    for line in body.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        n += bool(line)
    return n


def _read(path: Path, **kw) -> tuple[pa.Table, object]:
    r = open_inputs([str(path)], allow_nothing=True, **kw)  # the stats are what is checked
    batches = list(r)
    t = pa.Table.from_batches(batches, schema=r.schema) if batches else r.schema.empty_table()
    return t, r


lines_zeek = st.lists(st.one_of(
    _mutated_row(GOOD_ZEEK, "\t"),
    st.just("\t".join(GOOD_ZEEK)),
    st.just("#close\t2022-06-17-00-00-07"),
    junk_text,
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"").decode("latin-1")),
), max_size=40)


@SETTINGS
@given(rows=lines_zeek, raw_tail=st.binary(max_size=40), crlf=st.booleans())
def test_fuzz_zeek_tsv(rows, raw_tail, crlf):
    eol = "\r\n" if crlf else "\n"
    raw_tail = raw_tail.replace(b"\r", b"")
    body = "".join(r + eol for r in rows).encode("utf-8", errors="surrogateescape") + raw_tail
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "conn.log"
        p.write_bytes(ZEEK_HEADER + body)
        dl = DeadLetter(Path(d) / "dl.jsonl")
        t, r = _read(p, dead_letter=dl)
        dl.close()
        fs = r.stats.per_file[str(p)]
        # records; a whole-file note (bad_header: the rows disagree with #fields) is one more dead letter
        records = sum(v for k, v in fs.malformed.items() if k not in FILE_REASONS)
        assert fs.rows_ok + records + fs.comments == _data_lines(body)
        assert t.num_rows == r.stats.rows_ok
        assert t["row"].to_pylist() == list(range(t.num_rows))
        assert t["ts"].null_count == 0 and t["src_ip"].null_count == 0
        n_dead = sum(1 for _ in open(Path(d) / "dl.jsonl")) if (Path(d) / "dl.jsonl").exists() else 0
        assert n_dead == r.stats.rows_malformed


GOOD_LU = dict(avg_ipt="1.5", bytes_in="270", bytes_out="191", dest_ip="786", dest_port="445", entropy="4.5",
               num_pkts_out="6", num_pkts_in="6", proto="6", src_ip="47331", src_port="56965",
               time_end="1594168229367522", time_start="1594168228968772", total_entropy="2115.3", label="malicious",
               duration="0.39875")


@SETTINGS
@given(rows=st.lists(st.one_of(_mutated_row([GOOD_LU[c] for c in LUFLOW_COLUMNS], ","), junk_text,
                               st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")
                                                          .decode("latin-1"))), max_size=40))
def test_fuzz_luflow_csv(rows):
    body = "".join(r + "\n" for r in rows).encode("utf-8", errors="surrogateescape")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "day.csv"
        p.write_bytes((",".join(LUFLOW_COLUMNS) + "\n").encode() + body)
        t, r = _read(p, format="luflow")
        assert r.stats.rows_ok + r.stats.rows_malformed == _data_lines(body)
        assert set(t["label"].to_pylist()) <= {0, 1, 2, None}


json_line = st.one_of(
    st.fixed_dictionaries({"ts": st.one_of(st.floats(allow_nan=True), st.integers(-10, 2 ** 64), junk_text, st.none()),
                           "src_ip": st.one_of(junk_text, st.integers(), st.none()),
                           "dst_ip": st.one_of(st.just("10.0.0.2"), junk_text, st.none())},
                          optional={"dst_port": st.one_of(st.integers(-5, 70000), junk_text, st.none(), st.booleans()),
                                    "label": st.one_of(st.integers(-3, 5), junk_text, st.none()),
                                    "src_bytes": st.one_of(st.integers(-2 ** 65, 2 ** 65), st.floats(), junk_text),
                                    "nested": st.dictionaries(junk_text, st.integers(), max_size=2),
                                    "attack": st.one_of(junk_text, st.lists(st.integers(), max_size=2))})
    .map(lambda o: json.dumps(o)),
    junk_text,
    st.just("[]"), st.just("null"), st.just("{"),
)


@SETTINGS
@given(lines=st.lists(json_line, max_size=30))
def test_fuzz_jsonl(lines):
    body = "\n".join(lines).encode("utf-8", errors="surrogateescape")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "flows.jsonl"
        p.write_bytes(body)
        t, r = _read(p, format="jsonl")
        assert r.stats.rows_ok + r.stats.rows_malformed == sum(1 for l in body.split(b"\n") if l.strip())
        assert t["ts"].null_count == 0


@SETTINGS
@given(rows=st.lists(st.one_of(
    _mutated_row(["1540469303", "CGm6", "192.168.1.132", "58687", "216.239.35.4", "123", "udp", "", "0.11",
                  "48", "48", "SF", "", "", "0", "Dd", "1", "76", "1", "76", "", "benign", "-"], ","),
    junk_text), max_size=30))
def test_fuzz_zeek_csv(rows):
    header = ("ts,uid,id.orig_h,id.orig_p,id.resp_h,id.resp_p,proto,service,duration,orig_bytes,resp_bytes,"
              "conn_state,local_orig,local_resp,missed_bytes,history,orig_pkts,orig_ip_bytes,resp_pkts,"
              "resp_ip_bytes,tunnel_parents,label,detailed-label\n")
    body = "".join(r + "\n" for r in rows).encode("utf-8", errors="surrogateescape")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "iot.csv"
        p.write_bytes(header.encode() + body)
        t, r = _read(p, format="zeek-csv")
        assert r.stats.rows_ok + r.stats.rows_malformed == _data_lines(body)


def _fuzz_csv_format(header: str, good: list[str], fmt: str):
    @SETTINGS
    @given(rows=st.lists(st.one_of(_mutated_row(good, ","), junk_text), max_size=25))
    def check(rows):
        body = "".join(r + "\n" for r in rows).encode("utf-8", errors="surrogateescape")
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "in.csv"
            p.write_bytes(header.encode() + b"\n" + body)
            t, r = _read(p, format=fmt)
            assert r.stats.rows_ok + r.stats.rows_malformed == _data_lines(body)
            assert t["ts"].null_count == 0 and t["dst_ip"].null_count == 0
    return check


test_fuzz_cic_csv = _fuzz_csv_format(
    "Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Total Fwd Packet,Total Bwd packets,"
    "Total Length of Fwd Packet,Total Length of Bwd Packet,Flow Bytes/s,SYN Flag Count,RST Flag Count,Label",
    ["a-b", "192.168.10.5", "51000", "8.8.8.8", "80", "6", "2017-07-05 18:12:15.650811", "1500000", "3", "2",
     "120", "0", "Infinity", "1", "0", "DDoS"], "cic")

test_fuzz_netflow_csv = _fuzz_csv_format(
    "FLOW_START_MILLISECONDS,FLOW_END_MILLISECONDS,IPV4_SRC_ADDR,L4_SRC_PORT,IPV4_DST_ADDR,L4_DST_PORT,PROTOCOL,"
    "L7_PROTO,IN_BYTES,IN_PKTS,OUT_BYTES,OUT_PKTS,TCP_FLAGS,FLOW_DURATION_MILLISECONDS,Label,Attack",
    ["1424242190000", "1424242190003", "59.166.0.2", "4894", "149.171.126.3", "53", "17", "5.0", "146", "2",
     "178", "2", "27", "3", "1", "Exploits"], "netflow")


@SETTINGS
@given(lines=st.lists(st.one_of(
    st.fixed_dictionaries({"ts": st.one_of(st.floats(), junk_text, st.integers()), "uid": junk_text,
                           "id.orig_h": st.one_of(junk_text, st.none()), "id.orig_p": st.one_of(st.integers(), junk_text),
                           "id.resp_h": st.just("10.0.0.2"), "id.resp_p": st.integers(-1, 70000),
                           "proto": st.sampled_from(["tcp", "udp", "icmp", "x"])}).map(json.dumps),
    junk_text, st.just("null"), st.just("{}")), max_size=25))
def test_fuzz_zeek_json(lines):
    body = "\n".join(lines).encode("utf-8", errors="surrogateescape")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "conn.json"
        p.write_bytes(body)
        t, r = _read(p, format="zeek-json")
        assert r.stats.rows_ok + r.stats.rows_malformed == sum(1 for l in body.split(b"\n") if l.strip())

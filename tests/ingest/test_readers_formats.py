"""Format readers on hand-made files: LUFlow time quirk, CIC, NetFlow v3/v2, JSONL, Parquet/Arrow, mappings."""
from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from ingest.deadletter import DeadLetter, read_dead_letters
from ingest.readers import FORMATS, NothingReadable, open_inputs, records_to_batch, sniff_format
from ingest.readers.luflow import luflow_time_to_us
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA


def read(paths, **kw):
    r = open_inputs([str(p) for p in paths], allow_nothing=True, **kw)
    batches = list(r)
    return pa.Table.from_batches(batches, schema=r.schema), r


def us_of(t: pa.Table) -> list[int]:
    return t["ts"].cast(pa.int64()).to_pylist()


# --- LUFlow ------------------------------------------------------------------------------

LU_HEADER = ("avg_ipt,bytes_in,bytes_out,dest_ip,dest_port,entropy,num_pkts_out,num_pkts_in,proto,src_ip,"
             "src_port,time_end,time_start,total_entropy,label,duration\n")


def lu_row(ts: str, label="benign", proto="6", sp="5000", dp="22", src="47331") -> str:
    return f"1.5,270,191,786,{dp},4.5,6,7,{proto},{src},{sp},{ts},{ts},2115.3,{label},0.39875\n"


@pytest.mark.parametrize("raw,expect_us", [
    ("15941682315", 1594168231_000005),            # 11 digits: 5 us
    ("159416823142", 1594168231_000042),           # 12
    ("1594168231421", 1594168231_000421),          # 13
    ("15941682314217", 1594168231_004217),         # 14
    ("159416823142178", 1594168231_042178),        # 15: the README's example
    ("1594168228968772", 1594168228_968772),       # 16: full microseconds
    ("1594168228", 1594168228_000000),             # 10: whole seconds
])
def test_luflow_time_quirk(tmp_path, raw, expect_us):
    p = tmp_path / "day.csv"
    p.write_text(LU_HEADER + lu_row(raw))
    t, r = read([p])
    assert r.formats == ["luflow"]
    assert us_of(t) == [expect_us]


def test_luflow_time_vectorised_bounds():
    us, ok = luflow_time_to_us(np.array([159416823, 15941682314217812, 0, -5, 1594168228968772]))
    assert ok.tolist() == [False, False, False, False, True]
    assert us[-1] == 1594168228968772


def test_luflow_rows_labels_and_zip(tmp_path):
    rows = [lu_row("1594168228968772", "benign"), lu_row("159416823142178", "malicious"),
            lu_row("1594168231421839", "outlier", proto="1", sp='""', dp='""'),
            lu_row("12x", "benign"),                      # bad time
            "1,2,3\n",                                    # wrong column count
            lu_row("1594168231421839", "weird-label")]    # unknown label word
    csv_text = LU_HEADER + "".join(rows)
    zp = tmp_path / "2020.07.08.zip"
    with zipfile.ZipFile(zp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("2020.07.08.csv", csv_text)
    assert sniff_format(zp) == "luflow"
    dl = tmp_path / "dl.jsonl"
    t, r = read([zp], dead_letter=dl)
    assert t["label"].to_pylist() == [0, 1, 2]
    assert t["attack"].to_pylist() == [None, None, None]
    assert t["proto"].to_pylist() == ["tcp", "tcp", "icmp"]
    assert t["src_port"].to_pylist() == [5000, 5000, None]
    assert t["src_ip"].to_pylist() == ["47331"] * 3 and t["dst_ip"].to_pylist() == ["786"] * 3
    assert (t["src_bytes"][0].as_py(), t["dst_bytes"][0].as_py()) == (270, 191)   # bytes_in is src -> dst
    assert (t["src_pkts"][0].as_py(), t["dst_pkts"][0].as_py()) == (7, 6)
    assert r.stats.malformed == {"bad_ts": 1, "columns": 1, "bad_label": 1}
    assert r.stats.rows_ok + r.stats.rows_malformed == len(rows)
    recs = read_dead_letters(dl)
    assert {d["line"] for d in recs} == {5, 6, 7}
    assert all(d["source"] == f"{zp}!2020.07.08.csv" for d in recs)


# --- CICFlowMeter ---------------------------------------------------------------------------

CIC_HEADER = ("Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, "
              "Flow Duration, Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets, "
              "Total Length of Bwd Packets, Flow Bytes/s, Flow Packets/s, SYN Flag Count, RST Flag Count, "
              "Fwd Header Length, Fwd Header Length, Label\n")


def test_cic_original_2017_style(tmp_path):
    p = tmp_path / "Tuesday-WorkingHours.pcap_ISCX.csv"
    p.write_text(CIC_HEADER
                 + "a-b-1-2-6,192.168.10.5,51000,8.8.8.8,80,6,04/07/2017 08:55:58,1500000,3,2,120,0,Infinity,NaN,1,0,40,40,BENIGN\n"
                 + "c,192.168.10.6,51001,8.8.4.4,21,6,04/07/2017 09:01:00,2000,1,1,0,0,0,1000,1,1,40,40,FTP-Patator\n"
                 + "d,192.168.10.6,51001,8.8.4.4,21,6,04/07/2017 09:01:00,-7,1,1,0,0,0,1000,1,1,40,40,FTP-Patator\n"
                 + "e,192.168.10.6,51001,8.8.4.4,21,6,not a time,7,1,1,0,0,0,1000,1,1,40,40,FTP-Patator\n")
    assert sniff_format(p) == "cic"
    t, r = read([p])
    assert t["uid"].to_pylist() == ["a-b-1-2-6", "c"]
    assert t["label"].to_pylist() == [0, 1] and t["attack"].to_pylist() == [None, "FTP-Patator"]
    assert t["duration"].to_pylist() == [1.5, 0.002]
    assert us_of(t)[0] == int(datetime(2017, 7, 4, 8, 55, 58, tzinfo=timezone.utc).timestamp() * 1e6)
    assert (t["syn_count"].to_pylist(), t["rst_count"].to_pylist()) == ([1, 1], [0, 1])
    assert (t["src_pkts"][0].as_py(), t["dst_pkts"][0].as_py(), t["src_bytes"][0].as_py()) == (3, 2, 120)
    assert r.stats.malformed == {"bad_duration": 1, "bad_ts": 1}


# --- NetFlow ------------------------------------------------------------------------------

NF3_COLUMNS = ("FLOW_START_MILLISECONDS,FLOW_END_MILLISECONDS,IPV4_SRC_ADDR,L4_SRC_PORT,IPV4_DST_ADDR,"
               "L4_DST_PORT,PROTOCOL,L7_PROTO,IN_BYTES,IN_PKTS,OUT_BYTES,OUT_PKTS,TCP_FLAGS,CLIENT_TCP_FLAGS,"
               "SERVER_TCP_FLAGS,FLOW_DURATION_MILLISECONDS,DURATION_IN,DURATION_OUT,MIN_TTL,MAX_TTL,"
               "LONGEST_FLOW_PKT,SHORTEST_FLOW_PKT,MIN_IP_PKT_LEN,MAX_IP_PKT_LEN,SRC_TO_DST_SECOND_BYTES,"
               "DST_TO_SRC_SECOND_BYTES,RETRANSMITTED_IN_BYTES,RETRANSMITTED_IN_PKTS,RETRANSMITTED_OUT_BYTES,"
               "RETRANSMITTED_OUT_PKTS,SRC_TO_DST_AVG_THROUGHPUT,DST_TO_SRC_AVG_THROUGHPUT,"
               "NUM_PKTS_UP_TO_128_BYTES,NUM_PKTS_128_TO_256_BYTES,NUM_PKTS_256_TO_512_BYTES,"
               "NUM_PKTS_512_TO_1024_BYTES,NUM_PKTS_1024_TO_1514_BYTES,TCP_WIN_MAX_IN,TCP_WIN_MAX_OUT,ICMP_TYPE,"
               "ICMP_IPV4_TYPE,DNS_QUERY_ID,DNS_QUERY_TYPE,DNS_TTL_ANSWER,FTP_COMMAND_RET_CODE,"
               "SRC_TO_DST_IAT_MIN,SRC_TO_DST_IAT_MAX,SRC_TO_DST_IAT_AVG,SRC_TO_DST_IAT_STDDEV,"
               "DST_TO_SRC_IAT_MIN,DST_TO_SRC_IAT_MAX,DST_TO_SRC_IAT_AVG,DST_TO_SRC_IAT_STDDEV,Label,Attack")


def nf3_row(start, src="59.166.0.2", sport=4894, dst="149.171.126.3", dport=53, proto=17, flags=0,
            label=0, attack="Benign", dur=3) -> str:
    vals = {"FLOW_START_MILLISECONDS": start,
            "FLOW_END_MILLISECONDS": start + dur if isinstance(start, int) else start, "IPV4_SRC_ADDR": src,
            "L4_SRC_PORT": sport, "IPV4_DST_ADDR": dst, "L4_DST_PORT": dport, "PROTOCOL": proto,
            "L7_PROTO": "5.0", "IN_BYTES": 146, "IN_PKTS": 2, "OUT_BYTES": 178, "OUT_PKTS": 2,
            "TCP_FLAGS": flags, "FLOW_DURATION_MILLISECONDS": dur, "Label": label, "Attack": attack}
    return ",".join(str(vals.get(c, 0)) for c in NF3_COLUMNS.split(",")) + "\n"


def test_netflow_v3(tmp_path):
    p = tmp_path / "NF-UNSW-NB15-v3.csv"
    p.write_text(NF3_COLUMNS + "\n" + nf3_row(1424242190000) + nf3_row(1424242191500, proto=6, flags=0x12 | 0x01,
                 dport=80, label=1, attack="Exploits")
                 + nf3_row(1424242192000, sport=99999) + nf3_row("abc"))
    assert sniff_format(p) == "netflow"
    t, r = read([p])
    assert us_of(t) == [1424242190000_000, 1424242191500_000]
    assert t["proto"].to_pylist() == ["udp", "tcp"]
    assert t["history"].to_pylist() == ["", "ASF"]
    assert t["src_ip_bytes"].to_pylist() == [146, 146] and t["dst_pkts"].to_pylist() == [2, 2]
    assert t["src_bytes"].null_count == 2  # NetFlow has no payload byte count
    assert t["duration"].to_pylist() == [0.003, 0.003]
    assert t["label"].to_pylist() == [0, 1] and t["attack"].to_pylist() == [None, "Exploits"]
    assert t["service"].to_pylist() == ["5.0", "5.0"]
    assert r.stats.malformed == {"bad_src_port": 1, "bad_ts": 1}


def test_netflow_v2_refused_clearly(tmp_path):
    p = tmp_path / "NF-UNSW-NB15-v2.csv"
    cols = [c for c in NF3_COLUMNS.split(",") if c not in ("FLOW_START_MILLISECONDS", "FLOW_END_MILLISECONDS")]
    p.write_text(",".join(cols) + "\n" + ",".join("1" for _ in cols) + "\n")
    reader = open_inputs([p])  # an input that exists is refused when the read reaches it, not before
    with pytest.raises(NothingReadable, match="FLOW_START_MILLISECONDS"):
        list(reader)
    assert reader.stats.malformed == {"unreadable_file": 1}


# --- JSON lines, records_to_batch --------------------------------------------------------------

def test_jsonl_canonical_unknown_fields_and_bad_lines(tmp_path):
    p = tmp_path / "flows.jsonl"
    recs = [
        {"ts": "2024-02-08T15:16:39.5Z", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 443,
         "proto": "TCP", "label": "benign", "extra": 1},
        {"ts": 1707405399.25, "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "proto": 17, "label": 1,
         "attack": "scan", "src_bytes": "12"},
        {"ts": 1707405399250, "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "label": "background"},
        {"ts": "garbage", "src_ip": "a", "dst_ip": "b"},
        {"src_ip": "a", "dst_ip": "b", "ts": 1.0, "dst_port": 70000},
        {"ts": 1.0, "dst_ip": "b"},
    ]
    lines = [json.dumps(r) for r in recs[:3]] + ["{not json", "[1, 2]"] + [json.dumps(r) for r in recs[3:]]
    p.write_text("\n".join(lines) + "\n")
    assert sniff_format(p) == "jsonl"
    dl = tmp_path / "dl.jsonl"
    t, r = read([p], dead_letter=dl)
    assert us_of(t) == [1707405399_500000, 1707405399_250000, 1707405399_250000]
    assert t["proto"].to_pylist() == ["tcp", "udp", None]
    assert t["label"].to_pylist() == [0, 1, 2] and t["attack"].to_pylist() == [None, "scan", None]
    assert t["src_bytes"].to_pylist() == [None, 12, None]
    assert r.stats.unknown_fields == {"extra": 1}
    assert r.stats.malformed == {"bad_json": 2, "bad_ts": 1, "bad_dst_port": 1, "missing_src_ip": 1}
    got = {d["line"]: d["reason"] for d in read_dead_letters(dl)}
    assert got == {4: "bad_json", 5: "bad_json", 6: "bad_ts", 7: "bad_dst_port", 8: "missing_src_ip"}


def test_records_to_batch():
    dl = DeadLetter(None)
    b = records_to_batch([{"ts": 10.0, "src_ip": "a", "dst_ip": "b"}, "junk",
                          {"ts": 11.0, "src_ip": "a", "dst_ip": "c", "label": 1}], "flows", dl, row_start=100)
    assert b.schema.equals(FLOW_SCHEMA)
    assert b.column(0).to_pylist() == [100, 101]
    assert dl.counts == {"bad_record": 1}
    tx = records_to_batch([{"ts": "2018-04-01 00:00:31", "customer_id": 1, "terminal_id": 2, "amount": 5.5}],
                          "transactions")
    assert tx.schema.equals(TX_SCHEMA) and tx.num_rows == 1 and tx.column(3).to_pylist() == ["1"]
    assert records_to_batch([], "flows").num_rows == 0


# --- Parquet / Arrow ------------------------------------------------------------------------

def _canonical_table(n=5) -> pa.Table:
    ts = pa.array(np.arange(n, dtype=np.int64) * 1_000_000 + 1_700_000_000_000_000).cast(pa.timestamp("us", tz="UTC"))
    cols = {"row": pa.array(np.arange(n, dtype=np.int64)), "ts": ts,
            "src_ip": pa.array([f"10.0.0.{i}" for i in range(n)]), "dst_ip": pa.array(["10.0.1.1"] * n),
            "label": pa.array([0] * n, pa.int8())}
    t = pa.table(cols)
    from ingest.schema import conform
    return conform(t, FLOW_SCHEMA)


def test_parquet_and_arrow_roundtrip(tmp_path):
    t = _canonical_table()
    pq.write_table(t, tmp_path / "a.parquet")
    with ipc.new_file(tmp_path / "b.arrow", t.schema) as w:
        w.write_table(t)
    with ipc.new_stream(tmp_path / "c.arrows", t.schema) as w:
        w.write_table(t)
    assert [sniff_format(tmp_path / f) for f in ("a.parquet", "b.arrow", "c.arrows")] == ["parquet", "arrow", "arrow"]
    out, r = read([tmp_path / "a.parquet", tmp_path / "b.arrow", tmp_path / "c.arrows"])
    assert out["row"].to_pylist() == list(range(15))
    assert out["src_ip"].to_pylist() == t["src_ip"].to_pylist() * 3
    assert r.stats.malformed == {}


def test_parquet_with_foreign_types_and_bad_rows(tmp_path):
    t = pa.table({"ts": pa.array([1_700_000_000_000_000_000, None, 1_700_000_001_000_000_000], pa.timestamp("ns")),
                  "src_ip": ["a", "b", None], "dst_ip": ["c", "d", "e"], "label": ["malicious", "benign", "benign"],
                  "attack": ["dos", None, None], "vendor_field": [1, 2, 3]})
    pq.write_table(t, tmp_path / "x.parquet")
    out, r = read([tmp_path / "x.parquet"])
    assert out.num_rows == 1 and out["label"].to_pylist() == [1] and out["attack"].to_pylist() == ["dos"]
    assert us_of(out) == [1_700_000_000_000_000]
    assert r.stats.malformed == {"bad_ts": 1, "missing_src_ip": 1}
    assert r.stats.unknown_fields == {"vendor_field": 3}


# --- Mapping configs ------------------------------------------------------------------------

def test_mapping_argus_like_csv(tmp_path):
    p = tmp_path / "capture.binetflow"
    p.write_text("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,TotPkts,TotBytes,Label\n"
                 "2011/08/10 09:46:53.047277,3550.18,udp,212.50.71.179,39678,<->,147.32.84.229,13363,CON,12,875,flow=Background-UDP-Established\n"
                 "2011/08/10 09:46:54,0.5,tcp,147.32.84.165,1025,->,1.2.3.4,80,S_RA,2,120,flow=From-Botnet-V42-TCP\n"
                 "bad time,0.5,tcp,147.32.84.165,1025,->,1.2.3.4,80,S_RA,2,120,flow=Normal\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "kind: flows\ncolumns:\n  ts: StartTime\n  duration: Dur\n  proto: Proto\n  src_ip: SrcAddr\n"
        "  src_port: Sport\n  dst_ip: DstAddr\n  dst_port: Dport\n  conn_state: State\n  label: Label\n"
        "  attack: Label\n"
        "ts: {format: '%Y/%m/%d %H:%M:%S'}\n"
        "label_map: {'flow=Background-UDP-Established': 2}\nlabel_default: 1\n")
    t, r = read([p], mapping=mapping)
    assert t["label"].to_pylist() == [2, 1]
    assert t["attack"].to_pylist() == [None, "flow=From-Botnet-V42-TCP"]
    assert t["proto"].to_pylist() == ["udp", "tcp"] and t["conn_state"].to_pylist() == ["CON", "S_RA"]
    assert us_of(t) == [int(datetime(2011, 8, 10, 9, 46, 53, 47277, tzinfo=timezone.utc).timestamp() * 1e6),
                        int(datetime(2011, 8, 10, 9, 46, 54, tzinfo=timezone.utc).timestamp() * 1e6)]
    assert r.stats.malformed == {"bad_ts": 1}


def test_mapping_validation_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="required fields"):
        open_inputs([p], mapping={"columns": {"ts": "a"}})
    with pytest.raises(ValueError, match="unknown canonical fields"):
        open_inputs([p], mapping={"columns": {"ts": "a", "src_ip": "b", "dst_ip": "b", "colour": "a"}})
    r = open_inputs([p], mapping={"columns": {"ts": "a", "src_ip": "b", "dst_ip": "nope"}})
    with pytest.raises(NothingReadable, match="mapped columns not in the header"):
        list(r)
    assert "mapped columns not in the header" in r.stats.per_file[str(p)].error


def test_mapping_transactions_generic(tmp_path):
    p = tmp_path / "tx.tsv"
    p.write_text("when\tcard\tmerchant\tamt\tmcc\tdevice\tis_fraud\n"
                 "1522540831\tc1\tm1\t57.16\t5411\td1\t0\n"
                 "1522540930\tc2\tm1\t220.5\t5411\td2\t1\n"
                 "1522540931\tc2\tm1\tNaN\t5411\td2\t1\n")
    m = {"kind": "transactions", "delimiter": "\\t", "quoted": False, "ts": {"unit": "s"},
         "columns": {"ts": "when", "customer_id": "card", "terminal_id": "merchant", "amount": "amt",
                     "mcc": "mcc", "device_id": "device", "label": "is_fraud"}}
    t, r = read([p], mapping=m)
    assert r.kind == "transactions" and t.schema.equals(TX_SCHEMA)
    assert t["customer_id"].to_pylist() == ["c1", "c2"] and t["label"].to_pylist() == [0, 1]
    assert t["mcc"].to_pylist() == ["5411", "5411"] and t["amount"].to_pylist() == [57.16, 220.5]
    assert r.stats.malformed == {"bad_amount": 1}


# --- sniffing and errors ----------------------------------------------------------------------

def test_unknown_format_names_known_ones(tmp_path):
    p = tmp_path / "mystery.csv"
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="known formats are zeek, zeek-csv"):
        sniff_format(p)
    with pytest.raises(ValueError, match="unknown format 'nope'"):
        open_inputs([p], format="nope")


def test_formats_registry_complete():
    assert {"zeek", "zeek-csv", "zeek-json", "cic", "luflow", "netflow", "pcap", "parquet", "arrow", "jsonl",
            "fdh", "mapped"} <= set(FORMATS)


def test_mixing_kinds_is_an_error(tmp_path, samples):
    p = tmp_path / "tx.jsonl"
    p.write_text(json.dumps({"ts": 1, "customer_id": "a", "terminal_id": "b", "amount": 1}) + "\n")
    with pytest.raises(ValueError, match="mix flows and transactions"):
        open_inputs([samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled", p])


def test_empty_file_reads_as_zero_rows(tmp_path):
    p = tmp_path / "empty.log"
    p.write_bytes(b"")
    t, r = read([p])
    assert t.num_rows == 0 and r.stats.malformed == {}


def test_zeek_json(tmp_path):
    p = tmp_path / "conn.json"
    recs = [{"ts": 1655071198.444458, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 5, "id.resp_h": "10.0.0.2",
             "id.resp_p": 53, "proto": "udp", "service": "dns", "duration": 0.1, "orig_bytes": 10,
             "resp_bytes": 20, "conn_state": "SF", "local_orig": True, "orig_pkts": 1, "resp_pkts": 1},
            {"ts": "2022-06-12T22:00:31.749548Z", "uid": "C2", "id": {"orig_h": "10.0.0.3", "orig_p": 6,
             "resp_h": "10.0.0.4", "resp_p": 80}, "proto": "tcp"},
            {"ts": 1.0, "uid": "C3", "id.orig_h": "10.0.0.1", "id.orig_p": "x", "id.resp_h": "b", "id.resp_p": 1}]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert sniff_format(p) == "zeek-json"
    dl = tmp_path / "d.jsonl"
    t, r = read([p], dead_letter=dl)
    assert t["uid"].to_pylist() == ["C1", "C2"]
    assert us_of(t) == [1655071198_444458, 1655071231_749548]
    assert t["src_ip"].to_pylist() == ["10.0.0.1", "10.0.0.3"]
    assert r.stats.malformed == {"bad_src_port": 1}
    (d,) = read_dead_letters(dl)
    assert d["line"] == 3 and json.loads(d["raw"])["uid"] == "C3"


@pytest.mark.parametrize("body", [b"null\n", b"null", b'{"ts": 1, "src_ip": "a", "dst_ip": "b"}\nnull\n[]\n',
                                  b'{"ts": 1, "src_ip": "a", "dst_ip": "b"}\n{"ts": {"x": [1]}, "src_ip": "a"}\n'])
def test_jsonl_inputs_that_crash_or_confuse_pyarrow_json(tmp_path, body):
    """pyarrow.json segfaults on a top-level null (found by fuzzing): such chunks take the Python path."""
    p = tmp_path / "x.jsonl"
    p.write_bytes(body)
    t, r = read([p], format="jsonl")
    n_lines = sum(1 for l in body.split(b"\n") if l.strip())
    assert r.stats.rows_ok + r.stats.rows_malformed == n_lines


def test_reader_is_single_use(samples):
    r = open_inputs([samples / "netflow" / "handmade-nf-v3.csv"])
    assert sum(b.num_rows for b in r) == 110
    with pytest.raises(RuntimeError, match="already iterated"):
        list(r)


def test_partial_iteration_stops_cleanly(samples):
    r = open_inputs([samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled"], batch_size=100)
    it = iter(r)
    first = next(it)
    it.close()  # the background parser thread must stop, no exception
    assert first.num_rows == 100 and r.stats.rows_ok >= 100


@pytest.mark.parametrize("ext", ["gz", "bz2"])
def test_compressed_zeek_log(samples, tmp_path, ext):
    import bz2
    import gzip
    src = (samples / "stratosphere" / "010-zeek-mixed.conn.log.labeled").read_bytes()
    p = tmp_path / f"conn.log.{ext}"
    p.write_bytes(gzip.compress(src) if ext == "gz" else bz2.compress(src))
    assert sniff_format(p) == "zeek"
    t, r = read([p])
    plain, _ = read([samples / "stratosphere" / "010-zeek-mixed.conn.log.labeled"])
    assert t.drop_columns(["source"]).equals(plain.drop_columns(["source"]))


def test_dead_letter_raw_is_the_exact_line_for_unquoted_csv(tmp_path):
    bad = '0,56,56,786,"",1.020244,1,1,1,55960,"",1594168231421839,159416823142178x,114.267365,outlier,5.9E-5'
    p = tmp_path / "d.csv"
    p.write_text(LU_HEADER + lu_row("1594168228968772") + bad + "\n")
    dl = tmp_path / "dl.jsonl"
    read([p], dead_letter=dl)
    (rec,) = read_dead_letters(dl)
    assert rec == {"source": str(p), "line": 3, "reason": "bad_ts", "raw": bad}


def test_cic_without_ip_columns_is_dead_lettered_with_a_reason(tmp_path):
    p = tmp_path / "Friday-02-03-2018_TrafficForML_CICFlowMeter.csv"
    p.write_text("Dst Port,Protocol,Timestamp,Flow Duration,Tot Fwd Pkts,Tot Bwd Pkts,TotLen Fwd Pkts,"
                 "TotLen Bwd Pkts,Flow Byts/s,SYN Flag Cnt,RST Flag Cnt,Label\n"
                 "443,6,02/03/2018 08:47:38,141385,9,7,553,3773,Infinity,0,0,Benign\n"
                 "49684,6,02/03/2018 08:47:38,281,2,1,38,0,NaN,0,0,Bot\n")
    assert sniff_format(p) == "cic"
    t, r = read([p])
    assert t.num_rows == 0 and r.stats.malformed == {"missing_src_ip": 2}
    assert "no source/destination IP" in r.stats.per_file[str(p)].error


@pytest.mark.parametrize("head,fmt", [
    (b"#separator \\x09\n#fields\tts\n", "zeek"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "pcap"),
    (b"\x0a\x0d\x0d\x0a", "pcap"),
    (b"PAR1", "parquet"),
    (b"ARROW1\x00\x00", "arrow"),
    (b'{"ts": 1, "id.orig_h": "a", "id.resp_h": "b"}\n', "zeek-json"),
    (b'{"ts": 1, "src_ip": "a", "dst_ip": "b"}\n', "jsonl"),
    (b"ts,uid,id.orig_h,id.orig_p,id.resp_h,id.resp_p\n", "zeek-csv"),
    (b"\xef\xbb\xbfIPV4_SRC_ADDR,L4_SRC_PORT,IPV4_DST_ADDR,L4_DST_PORT\n", "netflow"),
    (LU_HEADER.encode(), "luflow"),
    (b" Source IP, Destination Port, Flow Duration\n", "cic"),
    (b"TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT\n", "fdh"),
    (b"ts,src_ip,dst_ip,label\n", "mapped"),
])
def test_sniff_heads(head, fmt):
    assert sniff_format(head) == fmt


def test_canonical_csv_without_mapping(tmp_path):
    p = tmp_path / "canon.csv"
    p.write_text("ts,src_ip,dst_ip,dst_port,label,extra\n1700000000.5,a,b,80,benign,x\n"
                 "2023-11-14T22:13:21Z,a,c,443,1,y\nnope,a,c,443,1,y\n")
    t, r = read([p])
    assert r.formats == ["mapped"]
    assert us_of(t) == [1700000000_500000, 1700000001_000000]
    assert t["dst_port"].to_pylist() == [80, 443] and t["label"].to_pylist() == [0, 1]
    assert r.stats.unknown_fields == {"extra": 3} and r.stats.malformed == {"bad_ts": 1}


def test_int32_overflow_is_a_malformed_value(tmp_path):
    """Found by fuzzing: a count beyond int32 used to fail the whole file in the final cast."""
    p = tmp_path / "c.csv"
    p.write_text("Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,SYN Flag Count,Label\n"
                 "a,1.1.1.1,1,2.2.2.2,80,6,2017-07-05 18:12:15,5,2147483648,DDoS\n"
                 "b,1.1.1.1,1,2.2.2.2,80,6,2017-07-05 18:12:16,5,3,DDoS\n")
    t, r = read([p])
    assert t["uid"].to_pylist() == ["b"] and r.stats.malformed == {"bad_syn_count": 1}

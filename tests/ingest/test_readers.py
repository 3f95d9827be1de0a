"""Readers on the shared data sets and the bundled samples: counts, labels, timestamps."""
from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from pathlib import Path


def data_lines(path: Path, comment: str | None = None, header: bool = True) -> list[str]:
    """Non-blank data lines of a text file (zip: its single member), without header/comment lines."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            text = zf.read(zf.namelist()[0]).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    lines = [l for l in text.split("\n") if l.strip()]
    if comment:
        lines = [l for l in lines if not l.startswith(comment)]
    return lines[1:] if header else lines


def csv_column_counts(path: Path, *cols: str) -> Counter:
    """Counter of tuples of the named columns, read with the csv module."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            fh = io.StringIO(zf.read(zf.namelist()[0]).decode("utf-8"))
    else:
        fh = open(path, newline="", encoding="utf-8")
    with fh:
        rd = csv.DictReader(fh)
        return Counter(tuple(r[c] for c in cols) for r in rd)


def zeek_column_counts(path: Path, *cols: str) -> Counter:
    fields = None
    out: Counter = Counter()
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line.strip() and not line.startswith("#"):
            vals = dict(zip(fields, line.split("\t")))
            out[tuple(vals[c] for c in cols)] += 1
    return out


import zipfile as _zf

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.readers import open_inputs, sniff_format


def read_all(paths, **kw) -> tuple[pa.Table, object]:
    r = open_inputs([str(p) for p in paths], **kw)
    batches = list(r)
    assert all(b.schema.equals(r.schema) for b in batches)
    return pa.Table.from_batches(batches, schema=r.schema), r


def label_counts(t: pa.Table) -> Counter:
    return Counter(zip(t["label"].to_pylist(), t["attack"].to_pylist()))


# --- bundled samples (always run: the demo depends on them) -------------------------

def test_samples_stratosphere(samples):
    files = sorted((samples / "stratosphere").glob("*.labeled"))
    assert len(files) == 2
    t, r = read_all(files)
    assert r.kind == "flows" and r.formats == ["zeek", "zeek"]
    expected = sum(len(data_lines(f, comment="#", header=False)) for f in files)
    assert t.num_rows == r.stats.rows_ok == expected == 3000
    assert r.stats.malformed == {}
    assert t["row"].to_pylist() == list(range(expected))  # continuous across both inputs
    want = Counter()
    for f in files:
        for (lab, det), n in zeek_column_counts(f, "label", "detailedlabel").items():
            code = {"Benign": 0, "Malicious": 1, "Background": 2}[lab]
            want[(code, det if code == 1 else None)] += n
    assert label_counts(t) == want
    assert set(t["label"].to_pylist()) == {0, 1, 2}
    # exact values of the first record of 008 (header order, unit conversion)
    first = t.slice(0, 1).to_pylist()[0]
    assert first["uid"] == "CHLXQF2OBY4onAR0Ug" and first["src_ip"] == "147.32.81.167"
    assert first["ts"].timestamp() == pytest.approx(1655071198.444458, abs=1e-6)
    assert (first["src_port"], first["dst_port"], first["proto"], first["service"]) == (62771, 443, "tcp", "ssl")
    assert (first["src_bytes"], first["dst_bytes"], first["src_pkts"], first["dst_pkts"]) == (1596, 4039, 14, 16)
    assert (first["src_ip_bytes"], first["dst_ip_bytes"], first["history"]) == (1016, 1226, "ShADdaFf")
    assert first["label"] == 0 and first["attack"] is None and first["source"] == "zeek"


def test_sniff_samples(samples):
    for f in (samples / "stratosphere").glob("*.labeled"):
        assert sniff_format(f) == "zeek"


# --- shared data: Stratosphere TSV -----------------------------------------------------

@pytest.mark.parametrize("name", ["001-zeek-scenario-malicious.labeled-conn.log",
                                  "008-zeek-mixed.conn.log.labeled", "010-zeek-mixed.conn.log.labeled"])
def test_stratosphere_full(shared_data, name):
    f = shared_data / "flows" / "stratosphere" / name
    t, r = read_all([f])
    lines = data_lines(f, comment="#", header=False)
    assert r.stats.rows_ok + r.stats.rows_malformed == len(lines)
    assert t.num_rows == len(lines) and r.stats.malformed == {}
    want = Counter()
    for (lab, det), n in zeek_column_counts(f, "label", "detailedlabel").items():
        code = {"Benign": 0, "Malicious": 1, "Background": 2}[lab]
        want[(code, det if code == 1 else None)] += n
    assert label_counts(t) == want
    # timestamps exactly as in the file (Zeek writes at connection end: not monotone by start)
    ts_file = np.array([float(l.split("\t")[0]) for l in lines])
    assert np.allclose(t["ts"].cast(pa.int64()).to_numpy() / 1e6, ts_file, atol=1e-6)


def test_stratosphere_001_documented_labels(shared_data):
    t, _ = read_all([shared_data / "flows/stratosphere/001-zeek-scenario-malicious.labeled-conn.log"])
    c = Counter(t["label"].to_pylist())
    assert c == {2: 739, 1: 244, 0: 9}  # the README's distribution


# --- shared data: IoT-23 CSV -----------------------------------------------------------

IOT23_CLASSES = {"DDoS", "C&C", "C&C-Torii", "PartOfAHorizontalPortScan", "FileDownload", "C&C-FileDownload"}


def test_iot23_all(shared_data):
    files = sorted((shared_data / "flows" / "iot23").glob("*.csv"))
    assert len(files) == 6
    t, r = read_all(files)
    total = 0
    want = Counter()
    for f in files:
        n = len(data_lines(f))
        fs = r.stats.per_file[str(f)]
        assert fs.format == "zeek-csv"
        assert fs.rows_ok + fs.rows_malformed == n
        total += n
        for (lab, det), k in csv_column_counts(f, "label", "detailed-label").items():
            code = 0 if lab.lower() == "benign" else 1
            want[(code, det if code == 1 else None)] += k
    assert t.num_rows == total == 42 + 452 + 1374 + 3209 + 23145 + 4426 + 10403 - 42
    assert r.stats.malformed == {}
    assert label_counts(t) == want
    assert {a for a in t["attack"].to_pylist() if a} == IOT23_CLASSES
    assert t["row"].to_pylist() == list(range(total))
    assert set(t["proto"].unique().to_pylist()) <= {"tcp", "udp", "icmp"}


# --- shared data: LUFlow -------------------------------------------------------------------

@pytest.mark.slow
def test_luflow_all_days_full_count(shared_data):
    files = sorted((shared_data / "flows" / "luflow").glob("*.zip"))
    assert len(files) == 14
    r = open_inputs([str(f) for f in files], format="auto")
    n = 0
    labels: Counter = Counter()
    prev_last = -1
    for b in r:
        n += b.num_rows
        labels.update(dict(zip(*np.unique(b.column("label").to_numpy(zero_copy_only=False), return_counts=True))))
        rows = b.column("row").to_numpy()
        assert rows[0] == prev_last + 1 and np.all(np.diff(rows) == 1)
        prev_last = rows[-1]
    # independent count: non-blank lines minus the header; label is the second-to-last field
    expected = 0
    want: Counter = Counter()
    for f in files:
        with _zf.ZipFile(f) as z:
            lines = [l for l in z.read(z.namelist()[0]).split(b"\n") if l.strip()][1:]
        expected += len(lines)
        want.update({"benign": 0, "malicious": 1, "outlier": 2}[l.rsplit(b",", 2)[1].decode()] for l in lines)
    assert r.stats.rows_ok + r.stats.rows_malformed == expected
    assert n == r.stats.rows_ok and r.stats.malformed == {}
    assert set(labels) == {0, 1, 2}  # outlier kept as 2, not merged
    assert labels == want


def test_luflow_one_day_timestamps(shared_data):
    f = shared_data / "flows" / "luflow" / "2020.12.17.zip"
    t, r = read_all([f])
    with _zf.ZipFile(f) as z:
        rows = list(csv.DictReader(io.StringIO(z.read(z.namelist()[0]).decode())))
    assert t.num_rows == len(rows)
    # independent decoding of the quirk: 10 digits seconds + unpadded microseconds
    want = [int(x["time_start"][:10]) * 1_000_000 + (int(x["time_start"][10:]) if len(x["time_start"]) > 10 else 0)
            for x in rows]
    assert t["ts"].cast(pa.int64()).to_pylist() == want
    lengths = Counter(len(x["time_start"]) for x in rows)
    assert len(lengths) > 1  # the quirk really occurs in this file
    assert t["src_ip"].to_pylist()[:5] == [x["src_ip"] for x in rows[:5]]


# --- shared data: CIC-IDS2017 (improved) ------------------------------------------------------

CIC_CLASSES = {"Botnet", "DDoS", "DoS GoldenEye", "DoS Hulk", "DoS Slowhttptest", "DoS Slowloris", "FTP-Patator",
               "Heartbleed", "Infiltration - Portscan", "Infiltration", "Portscan", "SSH-Patator",
               "Web Attack - Brute Force", "Web Attack - SQL Injection", "Web Attack - XSS"}


def test_cicids2017_all_files(shared_data):
    files = sorted((shared_data / "flows" / "cicids2017").glob("*.csv"))
    t, r = read_all(files)
    assert set(r.formats) == {"cic"}
    expected = sum(len(data_lines(f)) for f in files)
    assert r.stats.rows_ok + r.stats.rows_malformed == expected
    assert t.num_rows == expected == 43_419 and r.stats.malformed == {}
    classes = Counter(t["attack"].to_pylist())
    assert set(classes) - {None} == CIC_CLASSES and len(CIC_CLASSES) == 15
    assert classes[None] == 5000 and Counter(t["label"].to_pylist()) == {0: 5000, 1: expected - 5000}
    for f in files:  # per-class counts equal the file's own label column
        (lab, _), k = csv_column_counts(f, "Label", "Attempted Category").most_common(1)[0]
        assert classes[None if lab == "BENIGN" else lab] >= k
    # Flow Duration is microseconds; timestamps within the sample's capture days (UTC)
    ts = t["ts"].cast(pa.int64()).to_numpy() / 1e6
    assert ts.min() >= 1499040000 and ts.max() <= 1499472000  # 2017-07-03 .. 2017-07-08
    assert pc.min(t["duration"]).as_py() >= 0


# --- shared data: Fraud Detection Handbook ---------------------------------------------------

@pytest.mark.slow
def test_fdh_transactions_full(shared_data):
    import pyarrow.parquet as pq
    f = shared_data / "fraud" / "fdh-transactions-2018-04-to-07.parquet"
    src = pq.read_table(f, columns=["TX_FRAUD", "TX_FRAUD_SCENARIO", "TX_DATETIME"])
    r = open_inputs([str(f)])
    assert r.kind == "transactions" and r.formats == ["fdh"]
    n = 0
    c: Counter = Counter()
    last = None
    mono = True
    for b in r:
        n += b.num_rows
        c.update(zip(b.column("label").to_pylist(), b.column("attack").to_pylist()))
        ts = b.column("ts").cast(pa.int64()).to_numpy()
        mono &= bool(np.all(np.diff(ts) >= 0)) and (last is None or ts[0] >= last)
        last = ts[-1]
    assert n == src.num_rows == r.stats.rows_ok and r.stats.malformed == {}
    want = Counter((int(a), f"scenario-{s}" if a else None)
                   for a, s in zip(src["TX_FRAUD"].to_pylist(), src["TX_FRAUD_SCENARIO"].to_pylist()))
    assert c == want and {a for _, a in c if a} == {"scenario-1", "scenario-2", "scenario-3"}
    src_ts = src["TX_DATETIME"].cast(pa.int64()).to_numpy()
    assert mono == bool(np.all(np.diff(src_ts) >= 0))  # monotone exactly when the file is
    assert mono


# --- shared data: a real Zeek JSON conn.log (Stratosphere Slips test 9) ----------------------------

def test_zeek_json_conn_log_full(shared_data):
    import json as _json
    f = shared_data / "pcaps" / "test9-mixed-zeek-dir__conn.log"
    t, r = read_all([f])
    recs = [_json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    assert r.formats == ["zeek-json"] and r.stats.malformed == {}
    assert t.num_rows == len(recs) == 576
    assert t["uid"].to_pylist() == [x["uid"] for x in recs]
    assert np.allclose(t["ts"].cast(pa.int64()).to_numpy() / 1e6, [x["ts"] for x in recs], atol=1e-6)
    assert t["src_bytes"].to_pylist() == [x.get("orig_bytes") for x in recs]
    assert t["label"].null_count == t.num_rows  # unlabelled log

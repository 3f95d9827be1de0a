"""Read-ahead (files read in background threads) gives exactly the serial read: batches, rows,
stats, dead letters, log lines; early close and broken files leave no thread or file behind."""
from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest.readers.readahead as readahead
from ingest.readers import FORMATS, FormatInfo, InputReader, open_inputs

LU_HEADER = ("avg_ipt,bytes_in,bytes_out,dest_ip,dest_port,entropy,num_pkts_out,num_pkts_in,proto,src_ip,"
             "src_port,time_end,time_start,total_entropy,label,duration\n")
READER_THREADS = ("read-ahead", "csv-reader")


def lu_rows(n: int, seed: int, bad_every: int = 0) -> str:
    """``n`` LUFlow lines; every ``bad_every``-th one malformed in a rotating way."""
    out = []
    for i in range(n):
        ts = 1594168228968772 + seed * 10_000_000 + i * 1000
        line = f"1.5,{270 + i},191,786,22,4.5,6,7,6,{47000 + seed},{5000 + i % 1000},{ts},{ts},2115.3,benign,0.39875"
        if bad_every and i % bad_every == 3:
            kind = (i // bad_every) % 4
            line = (line.replace(f",{ts},{ts},", f",{ts},{ts}x,") if kind == 0 else
                    line + ",extra" if kind == 1 else
                    line.replace(",22,", ",70000,") if kind == 2 else
                    line.replace(",benign,", ",weird-label,"))
        out.append(line + "\n")
    return "".join(out)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, samples) -> list[Path]:
    """Flow inputs of many formats, several with malformed lines, one empty, one zip of two members."""
    d = tmp_path_factory.mktemp("mixed")
    lu = d / "lu-bad.csv"
    lu.write_text(LU_HEADER + lu_rows(900, 1, bad_every=37))
    utf = d / "lu-badbyte.csv"  # pyarrow gives up at the bad byte: the rest is read line by line (logged)
    utf.write_bytes((LU_HEADER + lu_rows(300, 2)).encode() + b"1.5,\xff\xfe,191\n" + lu_rows(200, 3, 11).encode())
    zp = d / "two-days.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("a.csv", LU_HEADER + lu_rows(500, 4, bad_every=50))
        zf.writestr("b.csv", LU_HEADER + lu_rows(400, 5))
    js = d / "flows.jsonl"
    recs = [{"ts": 1707405399.25 + i, "src_ip": f"10.0.0.{i % 7}", "dst_ip": "10.0.1.1", "dst_port": 443 + i,
             "extra": i} for i in range(120)]
    lines = [json.dumps(r) for r in recs]
    lines[10], lines[50] = "{not json", "[1, 2]"
    lines[70] = json.dumps({"ts": "garbage", "src_ip": "a", "dst_ip": "b"})
    js.write_text("\n".join(lines) + "\n")
    empty = d / "empty.log"
    empty.write_bytes(b"")
    pqf = d / "flows.parquet"
    pq.write_table(pa.table({
        "ts": pa.array([1_700_000_000_000_000_000 + i * 1000 for i in range(60)], pa.timestamp("ns")),
        "src_ip": [None if i % 13 == 0 else f"a{i}" for i in range(60)], "dst_ip": ["b"] * 60,
        "vendor_field": list(range(60))}), pqf)
    pq_broken = d / "nanos.parquet"  # the ns -> us cast fails: a whole-file error (logged, counted)
    pq.write_table(pa.table({"ts": pa.array([1_700_000_000_000_000_001], pa.timestamp("ns")),
                             "src_ip": ["a"], "dst_ip": ["b"]}), pq_broken)
    return [samples / "iot23/CTU-Honeypot-Capture-4-1-labeled.csv", lu, samples / "stratosphere/008-zeek-mixed.conn.log.labeled",
            js, empty, zp, utf, samples / "stratosphere/full/010-zeek-mixed.conn.log.labeled.gz",
            samples / "netflow/handmade-nf-v3.csv", pqf, pq_broken, samples / "cic/handmade-cicflowmeter.csv"]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelno, record.getMessage()))


def snapshot(paths, dl: Path, read_ahead: int, close_after: int | None = None, **kw) -> dict:
    """Everything a read produces: batches, stats (no times), dead-letter text, log lines."""
    if dl.exists():
        dl.unlink()
    cap = _Capture()
    lg = logging.getLogger("ingest")
    old = lg.level
    lg.addHandler(cap)
    lg.setLevel(logging.DEBUG)
    try:
        r = open_inputs([str(p) for p in paths], dead_letter=dl, read_ahead=read_ahead, **kw)
        batches = []
        it = iter(r)
        for b in it:
            batches.append(b)
            if close_after is not None and len(batches) >= close_after:
                it.close()
                break
    finally:
        lg.removeHandler(cap)
        lg.setLevel(old)
    stats = r.stats.as_dict()
    assert stats.pop("seconds") > 0
    for fs in stats["per_file"].values():
        fs.pop("seconds")
    return {"batches": batches, "stats": json.dumps(stats),  # json: key order counts too
            "dead": dl.read_text() if dl.exists() else "", "log": cap.lines,
            "counts": list(r.dead_letter.counts.items())}


def assert_same(a: dict, b: dict) -> None:
    assert len(a["batches"]) == len(b["batches"])
    for x, y in zip(a["batches"], b["batches"]):
        assert x.equals(y, check_metadata=True)
    assert a["stats"] == b["stats"]
    assert a["dead"] == b["dead"]
    assert a["log"] == b["log"]
    assert a["counts"] == b["counts"]


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in READER_THREADS]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.mark.parametrize("read_ahead,batch_size", [(1, 65536), (1, 50), (2, 50), (4, 20)])
def test_read_ahead_equals_serial_on_mixed_formats(mixed, tmp_path, read_ahead, batch_size):
    serial = snapshot(mixed, tmp_path / "s.jsonl", 0, batch_size=batch_size)
    ahead = snapshot(mixed, tmp_path / "a.jsonl", read_ahead, batch_size=batch_size)
    assert_same(serial, ahead)
    # the inputs really are varied and really exercise the malformed paths
    st = json.loads(serial["stats"])
    assert len(st["per_file"]) == len(mixed) + 1  # the zip holds two inputs
    assert {"bad_ts", "columns", "bad_dst_port", "bad_label", "bad_json", "missing_src_ip"} <= set(st["malformed"])
    assert st["unknown_fields"] and any("line by line" in m for _, _, m in serial["log"])
    assert st["per_file"][str(mixed[-2])]["error"].startswith("ArrowInvalid")
    rows = np.concatenate([b.column(0).to_numpy() for b in ahead["batches"]])
    assert (rows == np.arange(len(rows))).all() and len(rows) == st["rows_ok"]
    assert reader_threads() == []


def test_tight_bounds_still_equal(mixed, tmp_path, monkeypatch):
    """One queued table and three held-back dead letters per file: threads wait, output is the same."""
    monkeypatch.setattr(readahead, "AHEAD_TABLES", 1)
    monkeypatch.setattr(readahead, "AHEAD_PENDING", 3)
    serial = snapshot(mixed, tmp_path / "s.jsonl", 0, batch_size=40)
    assert_same(serial, snapshot(mixed, tmp_path / "a.jsonl", 2, batch_size=40))


def test_transactions_equal(samples, tmp_path):
    fdh = tmp_path / "fdh.csv"
    rows = ["TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,"
            "TX_FRAUD_SCENARIO"]
    for i in range(300):
        amount = "x" if i % 29 == 5 else f"{10 + i % 50}.5"
        rows.append(f"{i},2018-04-01 00:{i // 60 % 60:02d}:{i % 60:02d},{i % 17},{i % 9},{amount},{i},0,{i % 2},{i % 2}")
    fdh.write_text("\n".join(rows) + "\n")
    paths = [samples / "fdh/fdh-transactions-2018-04-01-to-21-customers-mod20.parquet", fdh,
             samples / "fraud/fdh-style-sim-300c-60d.parquet"]
    serial = snapshot(paths, tmp_path / "s.jsonl", 0, batch_size=1000)
    assert_same(serial, snapshot(paths, tmp_path / "a.jsonl", 1, batch_size=1000))
    assert "bad_amount" in json.loads(serial["stats"])["malformed"]


def test_mapped_csv_equal(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"cap{i}.binetflow"
        rows = ["StartTime,Dur,Proto,SrcAddr,Sport,DstAddr,Dport,Label"]
        for j in range(200):
            t = "bad time" if j % 31 == 4 else f"2011/08/1{i} 09:{j // 60 % 60:02d}:{j % 60:02d}"
            rows.append(f"{t},0.5,tcp,147.32.84.{j % 9},{1000 + j},1.2.3.4,{'x' if j % 43 == 7 else 80},"
                        f"flow={'Normal' if j % 3 else 'From-Botnet'}" + (",extra" if j % 57 == 9 else ""))
        p.write_text("\n".join(rows) + "\n")
        paths.append(p)
    m = {"kind": "flows", "columns": {"ts": "StartTime", "duration": "Dur", "proto": "Proto", "src_ip": "SrcAddr",
                                       "src_port": "Sport", "dst_ip": "DstAddr", "dst_port": "Dport", "label": "Label"},
         "ts": {"format": "%Y/%m/%d %H:%M:%S"}, "label_map": {"flow=Normal": 0}, "label_default": 1}
    serial = snapshot(paths, tmp_path / "s.jsonl", 0, mapping=m, batch_size=64)
    assert_same(serial, snapshot(paths, tmp_path / "a.jsonl", 1, mapping=m, batch_size=64))
    assert {"bad_ts", "bad_dst_port", "columns"} <= set(json.loads(serial["stats"])["malformed"])


def _raising_luflow(bad_name: str, after: int):
    """A LUFlow reader that raises after ``after`` tables of the input named ``bad_name``."""
    base = FORMATS["luflow"].factory

    class Broken:
        def read(self, spec, ctx):
            for i, t in enumerate(base().read(spec, ctx)):
                if spec.name.endswith(bad_name) and i == after:
                    raise RuntimeError("disk on fire")
                yield t
    return FormatInfo("luflow", "flows", "test", Broken)


def test_broken_file_in_the_middle_surfaces_in_order(tmp_path, monkeypatch):
    paths = []
    for i in range(4):
        p = tmp_path / f"day{i}.csv"
        p.write_text(LU_HEADER + lu_rows(400, i, bad_every=45))
        paths.append(p)
    monkeypatch.setitem(FORMATS, "luflow", _raising_luflow("day1.csv", after=2))

    def events(read_ahead: int) -> list:
        # the consumer's view: batches and log lines in one sequence (error logged between the same batches)
        seen: list = []
        cap = _Capture()
        cap.emit = lambda rec: seen.append(("log", rec.getMessage()))  # type: ignore[method-assign]
        lg = logging.getLogger("ingest.readers")
        lg.addHandler(cap)
        try:
            r = open_inputs(paths, read_ahead=read_ahead, batch_size=100)
            for b in r:
                seen.append(("batch", b.column(0)[0].as_py(), b.num_rows))
        finally:
            lg.removeHandler(cap)
        return seen, json.dumps({k: v for k, v in r.stats.as_dict().items() if k != "seconds"}
                                | {"per_file": {k: {**v, "seconds": 0} for k, v in r.stats.as_dict()["per_file"].items()}})

    serial, s_stats = events(0)
    ahead, a_stats = events(1)
    assert ahead == serial and a_stats == s_stats
    err = [i for i, e in enumerate(serial) if e[0] == "log" and "disk on fire" in e[1]]
    assert len(err) == 1
    assert sum(1 for e in serial[:err[0]] if e[0] == "batch") == 4 + 2  # day0's 4 batches, day1's first 2
    st = json.loads(s_stats)
    assert st["per_file"][str(paths[1])]["error"] == "RuntimeError: disk on fire"
    assert st["per_file"][str(paths[3])]["rows_ok"] > 0  # the files after it are read
    assert reader_threads() == []


def test_corrupt_gzip_between_good_files(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(LU_HEADER + lu_rows(3000, 1, bad_every=100))
    body = (LU_HEADER + lu_rows(3000, 2)).encode()
    z = gzip.compress(body)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(z[: len(z) // 2])
    other = tmp_path / "other.csv"
    other.write_text(LU_HEADER + lu_rows(3000, 3, bad_every=70))
    paths = [good, broken, other]
    serial = snapshot(paths, tmp_path / "s.jsonl", 0, batch_size=500)
    ahead = snapshot(paths, tmp_path / "a.jsonl", 1, batch_size=500)
    assert_same(serial, ahead)
    st = json.loads(ahead["stats"])
    assert st["per_file"][str(broken)]["error"] and st["per_file"][str(other)]["rows_ok"] > 0
    assert any(lvl >= logging.WARNING and str(broken) in m for _, lvl, m in ahead["log"])


@pytest.mark.parametrize("close_after", [1, 3, 9, 20])
def test_early_close_stops_and_joins_threads(mixed, tmp_path, close_after):
    before_threads = set(threading.enumerate())
    fds = open_fds()
    ahead = snapshot(mixed, tmp_path / "a.jsonl", 2, close_after=close_after, batch_size=50)
    assert reader_threads() == [] and set(threading.enumerate()) <= before_threads
    assert open_fds() <= fds
    assert len(ahead["batches"]) == close_after
    # the consumer saw the same prefix a serial read gives; files never reached leave no trace
    serial = snapshot(mixed, tmp_path / "s.jsonl", 0, close_after=close_after, batch_size=50)
    for x, y in zip(serial["batches"], ahead["batches"]):
        assert x.equals(y)
    assert list(json.loads(ahead["stats"])["per_file"]) == list(json.loads(serial["stats"])["per_file"])


def test_early_close_while_read_ahead_waits_for_room(tmp_path, monkeypatch):
    """The file ahead is all malformed and its held-back dead letters are full: close still returns."""
    monkeypatch.setattr(readahead, "AHEAD_PENDING", 5)
    first = tmp_path / "first.csv"
    first.write_text(LU_HEADER + lu_rows(2000, 1))
    junk = tmp_path / "junk.csv"
    junk.write_text(LU_HEADER + "".join(f"{i},only,three\n" for i in range(5000)))
    fds = open_fds()
    r = open_inputs([first, junk], read_ahead=1, batch_size=100, dead_letter=tmp_path / "dl.jsonl")
    it = iter(r)
    next(it)
    it.close()
    assert reader_threads() == [] and open_fds() <= fds
    assert list(r.stats.per_file) == [str(first)] and r.stats.malformed == {}
    assert not (tmp_path / "dl.jsonl").exists()  # the junk file was never reached: nothing written


def test_single_file_and_switch_read_serially(mixed, tmp_path, monkeypatch):
    seen: list[list[str]] = []

    def watch(paths, **kw):
        for _ in open_inputs(paths, batch_size=50, **kw):
            seen.append(reader_threads())
    watch([mixed[1]])
    assert seen and all("read-ahead" not in names for names in seen)
    seen.clear()
    monkeypatch.setattr(InputReader, "READ_AHEAD", 0)
    watch(mixed[:4])
    assert seen and all("read-ahead" not in names for names in seen)
    seen.clear()
    monkeypatch.setattr(InputReader, "READ_AHEAD", 1)
    watch(mixed[:4])
    assert any("read-ahead" in names for names in seen)
    with pytest.raises(ValueError, match="read_ahead"):
        open_inputs(mixed[:2], read_ahead=-1)


def test_duplicate_inputs_share_stats_as_before(mixed, tmp_path):
    paths = [mixed[1], mixed[3], mixed[1]]
    assert_same(snapshot(paths, tmp_path / "s.jsonl", 0), snapshot(paths, tmp_path / "a.jsonl", 1))


def test_pcap_is_never_read_beside_a_thread(samples, mixed, tmp_path, monkeypatch):
    """nfstream forks: no read-ahead thread may be alive while a capture is read."""
    pcap_info = FORMATS["pcap"]
    alive: list[list[str]] = []

    class Watched:
        def read(self, spec, ctx):
            alive.append(reader_threads())
            yield from pcap_info.factory().read(spec, ctx)
    monkeypatch.setitem(FORMATS, "pcap", FormatInfo("pcap", "flows", "watched", Watched))
    pcaps = sorted((samples / "suricata-verify").glob("*.pcap"))[:2]
    paths = [mixed[1], mixed[2], pcaps[0], mixed[3], pcaps[1], mixed[6]]
    serial = snapshot(paths, tmp_path / "s.jsonl", 0)
    ahead = snapshot(paths, tmp_path / "a.jsonl", 3)
    assert_same(serial, ahead)
    assert alive == [[], [], [], []]


def test_luflow_days_equal(shared_data, tmp_path):
    days = [p for p in sorted((shared_data / "flows" / "luflow").glob("*.zip")) if p.name >= "2020.12.16"][:3]
    if len(days) < 2:
        pytest.skip("LUFlow days not found")
    assert_same(snapshot(days, tmp_path / "s.jsonl", 0), snapshot(days, tmp_path / "a.jsonl", 1))

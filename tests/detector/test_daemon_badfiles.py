"""The live daemon on a watched folder keeps going through bad files, and says what it skipped.

A binary file, a truncated Parquet file, an empty file, a truncated log, a mislabelled file
(JSON lines named .csv, one line broken) and good logs are dropped into the folder the daemon
tails (``follow: True``) while it runs: the good records are all read and scored, the
unreadable files are counted once each (``unreadable_file``, in the metrics and the summary),
and every dead letter names the real file.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from daemon_helpers import FanoutScorer, make_flows
from detector.daemon import Daemon, load_config, scorer_model
from ingest.deadletter import read_dead_letters

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.05)


def _elf_bytes() -> bytes:
    data = Path(sys.executable).resolve().read_bytes()[: 128 * 1024]
    assert data[:4] == b"\x7fELF"
    return data


def test_daemon_skips_bad_files_in_a_watched_folder(tmp_path):
    lines = SAMPLE.read_text().splitlines(keepends=True)
    header = "".join(ln for ln in lines if ln.startswith("#") and not ln.startswith("#close"))
    body = [ln for ln in lines if not ln.startswith("#")]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_text(header + "".join(body[:100]))
    dl_path = tmp_path / "dead-letter.jsonl"
    cfg = load_config(overrides={
        "source": {"paths": [str(logs)], "follow": True, "poll_interval": 0.1},
        "window": {"size": 600.0, "lateness": 0.0, "idle_timeout": 0.5},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
        "metrics": {"port": 0}, "model": {"watch": False},
        "pipeline": {"dead_letter_path": str(dl_path)},
    }, env={})
    d = Daemon(cfg, model=scorer_model(FanoutScorer(threshold=5)), install_signals=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()), name="daemon-under-test")
    th.start()

    def unreadable() -> float:
        return d.metrics.value("graphsentry_malformed_total", {"reason": "unreadable_file"}) or 0

    try:
        _wait(lambda: d.summary.records_in >= 100, 60, "the first good log read")
        bad = {
            "binary": logs / "x.log",
            "parquet": logs / "archive.parquet",
            "empty": logs / "empty.log",
        }
        bad["binary"].write_bytes(_elf_bytes())
        whole = tmp_path / "whole.parquet"
        pq.write_table(make_flows(50, 10), whole)
        data = whole.read_bytes()
        bad["parquet"].write_bytes(data[: len(data) // 2])
        bad["empty"].write_bytes(b"")
        # a log cut mid-line: its complete lines are read, the partial one waits for its newline
        (logs / "cut.conn.log").write_text(header + "".join(body[100:150]) + body[150][:25])
        # JSON lines named .csv, one line broken: read as JSON lines, the broken line dead-lettered
        t0 = float(body[0].split("\t")[0])
        objs = [json.dumps({"ts": t0 + i, "src_ip": "10.9.9.9", "dst_ip": f"10.0.0.{i}", "dst_port": 80,
                            "proto": "tcp"}) for i in range(40)]
        objs[7] = objs[7][:15]
        (logs / "mislabelled.csv").write_text("\n".join(objs) + "\n")
        (logs / "conn2.log").write_text(header + "".join(body[200:400]))  # a good file after the bad ones
        expected = 100 + 50 + 39 + 200
        _wait(lambda: d.summary.records_in >= expected, 60, "every good record read")
        _wait(lambda: unreadable() >= 2, 60, "both unreadable files counted")
        _wait(lambda: d.summary.records_scored + d.summary.late >= expected, 60, "the records scored")
        time.sleep(0.5)  # a few more polls: nothing is counted twice
    finally:
        d.stop("test")
        th.join(60)
    assert not th.is_alive()
    s = out["s"]  # the daemon ended normally: no "daemon failed" error
    assert s.stopped_by == "test"
    assert s.records_in == expected and s.records_scored + s.late == expected
    assert s.malformed.get("unreadable_file") == 2 and s.malformed.get("bad_json") == 1
    assert "unreadable_file" in s.text()
    dead = read_dead_letters(dl_path)
    assert all("gs-tail" not in x["source"] for x in dead)
    files = sorted(x["source"] for x in dead if x["reason"] == "unreadable_file")
    assert files == sorted([str(bad["parquet"]), str(bad["binary"])])
    assert [x["source"] for x in dead if x["reason"] == "bad_json"] == [str(logs / "mislabelled.csv")]
    assert all(Path(x["source"]).parent == logs for x in dead)

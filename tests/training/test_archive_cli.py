"""``graphsentry archive``: from the bundled capture files, and from a real Kafka-protocol broker."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from kafka_fixtures import kafka_bootstrap, new_topic  # noqa: E402,F401  (pytest fixture)

from ingest.archive import read_archive  # noqa: E402
from ingest.kafka_io import encode_arrow, make_producer  # noqa: E402
from ingest.readers import open_inputs  # noqa: E402
from training.archive_cli import parse_size  # noqa: E402
from training.cli import main  # noqa: E402


def run(argv, capsys) -> tuple[int, dict | None, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return rc, (json.loads(lines[-1]) if lines else None), err


def archived(root: Path) -> pa.Table:
    batches = list(read_archive(root))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def test_from_files_archives_every_record_once(samples, tmp_path, capsys):
    log = samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
    csv = samples / "iot23" / "CTU-Honeypot-Capture-4-1-labeled.csv"
    expected = sum(b.num_rows for p in (log, csv) for b in open_inputs([p]))
    out = tmp_path / "archive"
    rc, summary, err = run(["archive", "--from-files", str(log), str(csv), "--out", str(out)], capsys)
    assert rc == 0, err
    assert summary["archived"] == summary["records_read"] == expected
    t = archived(out)
    assert t.num_rows == expected
    assert t.column("score").null_count == expected  # nothing scored them
    assert set(t.column("kafka_topic").unique().to_pylist()) == {f"file:{log.resolve()}", f"file:{csv.resolve()}"}
    # the same files again: nothing added
    rc, summary, err = run(["archive", "--from-files", str(log), "--out", str(out)], capsys)
    assert rc == 0 and summary["archived"] == 0 and summary["duplicates_dropped"] > 0
    assert archived(out).num_rows == expected


@pytest.mark.parametrize("argv, code, words", [
    (["--from-files", "MISSING"], 2, "input not found"),
    (["--from-files", "RANDOM"], 3, "nothing readable"),
    (["--from-files", "LOG", "--max-bytes", "lots"], 2, "invalid size"),
    (["--from-files", "LOG", "--max-age", "ages"], 2, "invalid duration"),
    (["--from-kafka", "127.0.0.1:1", "--topic", "t"], 2, "cannot reach Kafka at 127.0.0.1:1"),
    (["--from-kafka", "127.0.0.1:1"], 2, "--topic"),
])
def test_user_errors_are_one_line(samples, tmp_path, capsys, argv, code, words):
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    subst = {"MISSING": str(tmp_path / "nope.log"), "RANDOM": str(rnd),
             "LOG": str(samples / "stratosphere" / "008-zeek-mixed.conn.log.labeled")}
    rc, _s, err = run(["archive", *[subst.get(a, a) for a in argv], "--out", str(tmp_path / "a")], capsys)
    assert rc == code
    assert "Traceback" not in err and words in err
    assert len([ln for ln in err.splitlines() if ln.startswith("graphsentry archive")]) == 1


@pytest.mark.parametrize("text, n", [("500MB", 500_000_000), ("2GiB", 2 * 1024 ** 3), ("1.5k", 1500), ("42", 42)])
def test_parse_size(text, n):
    assert parse_size(text) == n


def _produce(bootstrap: str, topic: str, n_json: int, t0: int = 1_764_000_000) -> int:
    """JSON records on both partitions, one Arrow message of 50 records, and bad messages in between;
    returns how many good records went out."""
    import pyarrow as pa

    p = make_producer({"bootstrap": bootstrap})
    for i in range(n_json):
        rec = {"ts": t0 + 10 * i, "src_ip": f"10.0.0.{i % 9}", "dst_ip": "10.1.1.1", "dst_port": 443,
               "proto": "tcp", "row": i}
        p.send(topic, json.dumps(rec).encode(), partition=i % 2)
        if i == n_json // 2:
            p.send(topic, b"{broken json", partition=0)        # a bad one inside a run of JSON messages
            p.send(topic, b"\x00\x01 garbage", partition=1)
    batch = pa.table({"ts": pa.array((t0 + 5000 + np.arange(50)) * 1_000_000, pa.timestamp("us", tz="UTC")),
                      "src_ip": ["10.9.9.9"] * 50, "dst_ip": ["10.1.1.2"] * 50})
    p.send(topic, encode_arrow(batch), partition=0)
    p.flush()
    p.close()
    return n_json + 50


@pytest.mark.kafka
@pytest.mark.slow
def test_from_kafka_archives_every_record_exactly_once(kafka_bootstrap, tmp_path, capsys):
    topic = new_topic(kafka_bootstrap, partitions=2, prefix="archive")
    n = _produce(kafka_bootstrap, topic, 400)
    out = tmp_path / "archive"
    argv = ["archive", "--from-kafka", kafka_bootstrap, "--topic", topic, "--out", str(out), "--until-idle", "2",
            "--group", "g1", "--dead-letter", str(tmp_path / "dlq.jsonl")]
    rc, summary, err = run(argv, capsys)
    assert rc == 0, err
    assert summary["archived"] == n and summary["rejected"] == {"bad_json": 1, "unknown_format": 1}
    assert sum(summary["committed"].values()) == 402 + 1  # every message (bad ones too) committed
    t = archived(out)
    assert t.num_rows == n
    keys = set(zip(t.column("kafka_partition").to_pylist(), t.column("kafka_offset").to_pylist(),
                   t.column("kafka_index").to_pylist()))
    assert len(keys) == n  # every record has its own position
    # exact positions, also around the bad messages inside runs of JSON messages
    assert {o for p, o, _i in keys if p == 0} == set(range(202)) - {101}   # offset 101: the broken JSON
    assert {o for p, o, _i in keys if p == 1} == set(range(201)) - {100}   # offset 100: the garbage
    assert sorted(i for p, o, i in keys if p == 0 and o == 201) == list(range(50))  # the Arrow message
    at = {(p, o): ip for p, o, ip in zip(t.column("kafka_partition").to_pylist(), t.column("kafka_offset").to_pylist(),
                                         t.column("src_ip").to_pylist())}
    assert at[(0, 102)] == "10.0.0.4"   # record i=202 (202 % 9): after the broken JSON at 101
    assert at[(1, 102)] == "10.0.0.5"   # record i=203 (203 % 9): after the garbage at 100
    assert t.column("score").null_count == n and t.column("alert").null_count == n

    # Again with the same group: the offsets were committed, nothing is read.
    rc, summary, err = run(argv, capsys)
    assert rc == 0, err
    assert summary["records_read"] == 0
    # Another group re-reads the whole topic: every record is already archived.
    rc, summary, err = run([*argv[:-4], "--group", "g2"], capsys)
    assert rc == 0, err
    assert summary["records_read"] == n and summary["archived"] == 0 and summary["duplicates_dropped"] == n
    assert archived(out).num_rows == n


@pytest.mark.kafka
@pytest.mark.slow
def test_from_kafka_missing_topic_is_a_user_error(kafka_bootstrap, tmp_path, capsys):
    rc, _s, err = run(["archive", "--from-kafka", kafka_bootstrap, "--topic", "no-such-topic-xyz",
                       "--out", str(tmp_path / "a"), "--until-idle", "1"], capsys)
    assert rc == 2 and "not found" in err and "Traceback" not in err


@pytest.mark.kafka
@pytest.mark.slow
def test_killed_archiver_restarts_without_loss_or_duplicates(kafka_bootstrap, tmp_path):
    """SIGKILL right after the first flush (its offsets possibly not committed yet), then a restart
    with the same group: every record is in the archive exactly once."""
    import os
    import signal
    import subprocess
    import time

    topic = new_topic(kafka_bootstrap, partitions=2, prefix="archive-kill")
    first = _produce(kafka_bootstrap, topic, 300)
    out = tmp_path / "archive"
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "training.cli", "archive", "--from-kafka", kafka_bootstrap, "--topic", topic,
           "--out", str(out), "--group", "g", "--flush-interval", "0.2"]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.is_dir() and archived(out).num_rows >= first:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert archived(out).num_rows == first
    second = _produce(kafka_bootstrap, topic, 200, t0=1_764_100_000)
    r = subprocess.run(cmd + ["--until-idle", "2"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])
    # what the restart re-read beyond the last commit was dropped, the rest archived
    assert summary["archived"] == second and summary["records_read"] == second + summary["duplicates_dropped"]
    print("re-read after the kill and dropped:", summary["duplicates_dropped"])
    t = archived(out)
    assert t.num_rows == first + second
    keys = set(zip(t.column("kafka_partition").to_pylist(), t.column("kafka_offset").to_pylist(),
                   t.column("kafka_index").to_pylist()))
    assert len(keys) == first + second

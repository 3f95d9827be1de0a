"""The daemon's retraining archive (``archive`` section) against a real Kafka-protocol broker and files.

Every scored record is archived once, at its exact source position (topic, partition, offset, index in
the message), with its score, alert flag, alert id and model version; the archive is flushed before the
records' offsets are committed, so a kill -9 and a restart archive nothing twice and lose nothing; a
failing archive holds the commits back without stopping the daemon.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from daemon_helpers import (
    FanoutScorer,
    archived_positions,
    log_tail,
    make_flows,
    read_archived,
    serve_process,
    topic_positions,
    write_fanout_model,
)
from kafka_fixtures import new_topic

from detector.alerts.sinks import read_alert_store
from detector.daemon import Daemon, load_config, scorer_model
from ingest.kafka_io import make_producer, replay

REPO = Path(__file__).resolve().parents[2]
SIZE, LATE = 10.0, 1.0


def kcfg(tmp_path, bootstrap, topic, group, archive, **over):
    base = {
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": group, "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "commit_interval": 0.3, "dead_letter_topic": f"{topic}-dlq"},
        "window": {"size": SIZE, "lateness": LATE, "idle_timeout": 1.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / f"{group}.db")}]},
        "metrics": {"port": 0}, "model": {"watch": False}, "pipeline": {"partition_idle": 5.0},
        "archive": {"enabled": True, "path": str(archive)},
    }
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(overrides=base, env={})


def publish_mixed(bootstrap: str, topic: str, t) -> None:
    """JSON records, a bad JSON message and garbage among them, then Arrow IPC messages of 100 records: poll
    chunks that need the per-run decode to know each record's position."""
    p = make_producer({"bootstrap": bootstrap})
    try:
        replay([t.slice(0, 200)], p, topic, 2, fmt="json")
        p.send(topic, b'{"ts": "not a time", "src_ip": "1.1.1.1", "dst_ip": "2.2.2.2"}', partition=0)
        p.send(topic, b"\x00garbage", partition=1)
        replay([t.slice(200, 100)], p, topic, 2, fmt="json")
        replay([t.slice(300)], p, topic, 2, fmt="arrow", arrow_batch=100)
    finally:
        p.close()


def check_archive(archive: Path, expected: dict[tuple, str], alerts_db: Path) -> None:
    """Each record of ``expected`` ({position: uid}) archived exactly once, at its position, scored; the
    flagged ones carry the id of an alert in the store, and every alert has its records."""
    a = read_archived(archive)
    pos = archived_positions(a)
    assert len(pos) == len(set(pos)), "a record archived twice"
    assert set(pos) == set(expected), (f"missing {sorted(set(expected) - set(pos))[:5]}, "
                                       f"unexpected {sorted(set(pos) - set(expected))[:5]}")
    uids = dict(zip(pos, a.column("uid").to_pylist()))
    assert uids == expected, "a record archived at another record's position"
    assert a.column("score").null_count == 0 and a.column("alert").null_count == 0
    assert a.column("model_version").null_count == 0
    flagged = [i for i, f in enumerate(a.column("alert").to_pylist()) if f]
    ids = a.column("alert_id").to_pylist()
    assert flagged and all(ids[i] for i in flagged)
    assert all(ids[i] is None for i in range(a.num_rows) if i not in set(flagged))
    store = {x["finding_info"]["uid"] for x in read_alert_store(alerts_db)}
    assert {ids[i] for i in flagged} == store


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_daemon_archives_each_record_once_at_its_position(kafka_bootstrap, tmp_path):
    t = make_flows(seed=5)
    topic = new_topic(kafka_bootstrap, 2)
    publish_mixed(kafka_bootstrap, topic, t)
    expected = topic_positions(kafka_bootstrap, topic)
    assert len(expected) == t.num_rows
    archive = tmp_path / "archive"
    cfg = kcfg(tmp_path, kafka_bootstrap, topic, "g-arch", archive, kafka={"stop_at_end": True})
    d = Daemon(cfg, model=scorer_model(FanoutScorer(), version="fan-1"), install_signals=False)
    s = d.run()
    assert s.records_scored == t.num_rows and s.late == 0
    assert s.archived == t.num_rows and s.archive_duplicates == 0
    check_archive(archive, expected, tmp_path / "g-arch.db")
    assert set(read_archived(archive).column("model_version").to_pylist()) == {"fan-1"}
    assert d.metrics.value("graphsentry_archive_records_total") == t.num_rows
    assert d.metrics.value("graphsentry_archive_bytes_total") > 0
    assert d.metrics.value("graphsentry_archive_duplicates_total") == 0
    files = sorted(archive.glob("date=*/hour=*/*.parquet"))
    assert files and all(pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD" for f in files)

    # Another consumer group reads the whole topic again: the archive takes none of it twice.
    cfg2 = kcfg(tmp_path, kafka_bootstrap, topic, "g-arch-2", archive, kafka={"stop_at_end": True})
    d2 = Daemon(cfg2, model=scorer_model(FanoutScorer(), version="fan-1"), install_signals=False)
    s2 = d2.run()
    assert s2.records_scored == t.num_rows
    assert s2.archived == 0 and s2.archive_duplicates == t.num_rows
    assert d2.metrics.value("graphsentry_archive_duplicates_total") == t.num_rows
    check_archive(archive, expected, tmp_path / "g-arch.db")


@pytest.mark.slow
def test_file_source_archives_with_file_positions(tmp_path):
    t = make_flows(seed=6)
    src = tmp_path / "in" / "flows.parquet"
    src.parent.mkdir()
    pq.write_table(t, src)
    archive = tmp_path / "archive"

    def run():
        cfg = load_config(overrides={
            "source": {"type": "file", "paths": [str(src)]}, "window": {"size": SIZE, "lateness": LATE},
            "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / "alerts.db")}]},
            "metrics": {"enabled": False}, "model": {"watch": False},
            "archive": {"enabled": True, "path": str(archive), "max_bytes": "1GB", "max_age": "36500d"}}, env={})
        return Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False).run()

    s = run()
    assert s.records_scored == t.num_rows and s.archived == t.num_rows
    a = read_archived(archive)
    pos = archived_positions(a)
    assert sorted(pos) == [(f"file:{src.resolve()}", 0, r, 0) for r in range(t.num_rows)]
    assert dict(zip(a.column("kafka_offset").to_pylist(), a.column("uid").to_pylist())) == \
        dict(zip(range(t.num_rows), t.column("uid").to_pylist()))
    assert sorted(a.column("row").to_pylist()) == list(range(t.num_rows))    # the input's rows, not the daemon's
    s2 = run()                                                                # the same file again: nothing new
    assert s2.archived == 0 and s2.archive_duplicates == t.num_rows
    assert read_archived(archive).num_rows == t.num_rows


@pytest.mark.kafka
@pytest.mark.slow
def test_archive_failure_holds_commits_back_and_recovers(kafka_bootstrap, tmp_path, caplog):
    t = make_flows(seed=7)
    topic = new_topic(kafka_bootstrap, 2)
    publish_mixed(kafka_bootstrap, topic, t)
    expected = topic_positions(kafka_bootstrap, topic)
    archive = tmp_path / "archive"
    archive.mkdir()
    # The date directory the records' hour goes into cannot be made (a file is in the way): every flush fails.
    # (Read-only permissions would do the same for a non-root daemon; these tests may run as root.)
    blocker = archive / "date=2023-11-14"
    blocker.write_text("in the way")
    cfg = kcfg(tmp_path, kafka_bootstrap, topic, "g-arch-fail", archive, pipeline={"progress_interval": 0})
    d = Daemon(cfg, model=scorer_model(FanoutScorer()), install_signals=False)
    caplog.set_level(logging.INFO, logger="detector.daemon.pipeline")
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("summary", d.run()), daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 60
        while d.metrics.value("graphsentry_archive_errors_total") < 3:
            assert time.monotonic() < deadline, "the archive never failed"
            assert th.is_alive(), "the daemon stopped"
            time.sleep(0.2)
        time.sleep(1.5)                                  # several commit intervals
        assert th.is_alive() and not d._errors           # no crash ...
        assert d.source.committed_offsets() == {}        # ... and nothing committed
        assert d.summary.archived == 0 and d.summary.alerts == 0   # nor alerts written before the archive
        fails = [r for r in caplog.records if "archive" in r.getMessage() and "failed" in r.getMessage()]
        assert fails and fails[0].levelno == logging.ERROR
        blocker.unlink()                                 # the disk is fixed: the retry goes through
        deadline = time.monotonic() + 60
        ends: dict = {}                                  # the last message of each partition is a good one
        for tp, _p, off, _i in expected:
            ends[(tp, _p)] = max(ends.get((tp, _p), 0), off + 1)
        while d.source.committed_offsets() != ends:
            assert time.monotonic() < deadline, f"commits stuck at {d.source.committed_offsets()}"
            time.sleep(0.2)
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        d.stop("test")
        th.join(60)
    assert not th.is_alive()
    assert out["summary"].archived == t.num_rows
    check_archive(archive, expected, tmp_path / "g-arch-fail.db")


# -- kill -9 mid-stream, then a restart -------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
def test_kill9_then_restart_archives_each_record_once(kafka_bootstrap, tmp_path):
    t = make_flows(n_benign=2000, n_scan=400, duration=120.0, seed=12)   # 12 windows of 10 s
    topic = new_topic(kafka_bootstrap, 2)
    p = make_producer({"bootstrap": kafka_bootstrap})
    replay([t.slice(0, 1500)], p, topic, 2, fmt="json")
    replay([t.slice(1500)], p, topic, 2, fmt="arrow", arrow_batch=50)
    p.close()
    expected = topic_positions(kafka_bootstrap, topic)
    assert len(expected) == t.num_rows
    write_fanout_model(tmp_path / "model", delay=0.5)                     # slow enough to die mid-stream
    db, archive = tmp_path / "alerts.db", tmp_path / "archive"
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(json.dumps({
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-arch-crash", "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "commit_interval": 0.2, "max_poll_records": 100},
        "window": {"size": SIZE, "lateness": LATE, "idle_timeout": 2.0},
        "model": {"path": str(tmp_path / "model"), "loader": "daemon_helpers:load_fanout", "watch": False},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(db)}]},
        "metrics": {"port": 0}, "pipeline": {"queue_size": 4, "window_queue_size": 2},
        "archive": {"enabled": True, "path": str(archive)},
    }))
    first = serve_process(cfg, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 90
        while sum(1 for _ in archive.glob("date=*/hour=*/*.parquet")) < 3:
            assert first.poll() is None, f"daemon exited early\n{log_tail(tmp_path / 'first.log')}"
            assert time.monotonic() < deadline, "daemon archived nothing"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = read_archived(archive).num_rows
    assert 0 < before < t.num_rows, "the kill must land mid-stream"
    second = serve_process(cfg, tmp_path / "second.log", {"GRAPHSENTRY_KAFKA_STOP_AT_END": "true"})
    try:
        assert second.wait(150) == 0, log_tail(tmp_path / "second.log")
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    check_archive(archive, expected, db)
    # the restart re-read records the first run had archived but not committed, and archived none of them again
    final = [ln for ln in (tmp_path / "second.log").read_text().splitlines() if "already in the archive" in ln]
    assert final and " (0 already" not in final[-1], log_tail(tmp_path / "second.log")


# -- exact positions of decoded messages (no broker: the decoding the Kafka source does per poll) ----------


@pytest.mark.parametrize("fmt", ["auto", "json"])
def test_decode_positions_maps_every_record_to_its_message(fmt):
    from ingest.kafka_io import decode_messages, encode_arrow, table_to_json_messages
    from ingest.kafka_positions import decode_positions

    t = make_flows(n_benign=40, n_scan=10, seed=3)
    js = table_to_json_messages(t.slice(0, 20))
    bad = b'{"ts": "not a time", "src_ip": "1.1.1.1", "dst_ip": "2.2.2.2"}'
    cases = {
        "json": (js, [(o, 0) for o in range(20)]),
        "json with a bad one": (js[:7] + [bad] + js[7:], [(o if o < 7 else o + 1, 0) for o in range(20)]),
    }
    if fmt == "auto":
        arrow = [encode_arrow(t.slice(20, 12)), encode_arrow(t.slice(32, 18))]
        cases["one arrow message"] = (arrow[:1], [(0, i) for i in range(12)])
        cases["json, garbage, arrow, bad json, json"] = (
            js[:5] + [b"\x00garbage"] + arrow + [bad] + js[5:8],
            [(o, 0) for o in range(5)] + [(6, i) for i in range(12)] + [(7, i) for i in range(18)]
            + [(9, 0), (10, 0), (11, 0)])
    for name, (values, want) in cases.items():
        offsets = [100 + k for k in range(len(values))]
        dec, offs, idx = decode_positions(values, offsets, fmt, "flows")
        got = list(zip((offs - 100).tolist(), idx.tolist()))
        assert got == want, name
        uids = dec.table.column("uid").to_pylist()
        by_msg = {}
        for k, v in enumerate(values):           # the truth: each message decoded alone
            for i, u in enumerate(decode_messages([v], fmt, "flows").table.column("uid").to_pylist()):
                by_msg[(k, i)] = u
        assert uids == [by_msg[p] for p in want], name

"""The archive of scored records: layout, atomic flushes, no record lost or doubled, retention, reading."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest.archive as archive_mod
from ingest.archive import EXTRA_FIELDS, ArchiveWriter, chunk_positions, parse_time, read_archive
from ingest.schema import FLOW_SCHEMA, conform

T0 = int(datetime(2026, 12, 1, 22, 30, tzinfo=timezone.utc).timestamp())  # 22:30 UTC


def flows(n: int, start: int = T0, step: int = 600, row0: int = 0) -> pa.Table:
    ts = (start + np.arange(n) * step) * 1_000_000
    return conform(pa.table({
        "row": pa.array(np.arange(row0, row0 + n, dtype=np.int64)),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "src_ip": [f"10.0.0.{i % 5}" for i in range(n)], "dst_ip": ["10.1.1.1"] * n,
        "dst_port": pa.array([443] * n, pa.int32()), "proto": ["tcp"] * n,
    }), FLOW_SCHEMA)


def pos(offsets, topic="flows", partition=0, index=None) -> dict:
    p = {"topic": topic, "partition": partition, "offset": np.asarray(offsets, dtype=np.int64)}
    if index is not None:
        p["index"] = np.asarray(index, dtype=np.int64)
    return p


def rows(root, **kw) -> pa.Table:
    batches = list(read_archive(root, **kw))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "_journal" not in p.parts)


def test_partitions_by_event_date_and_hour_with_zstd(tmp_path):
    t = flows(12)  # 22:30 .. 00:20 next day, every 10 minutes
    with ArchiveWriter(tmp_path) as w:
        assert w.write(t, scores=np.linspace(0, 1, 12), alerts=np.arange(12) % 3 == 0, model_version="v7",
                       positions=pos(range(12))) == 12
    dirs = sorted({str(p.parent.relative_to(tmp_path)) for p in parquet_files(tmp_path)})
    assert dirs == ["date=2026-12-01/hour=22", "date=2026-12-01/hour=23", "date=2026-12-02/hour=00"]
    for f in parquet_files(tmp_path):
        assert f.name.startswith("part-") and f.suffix == ".parquet"
        md = pq.read_metadata(f)
        assert md.row_group(0).column(0).compression == "ZSTD"
        assert pq.read_schema(f).names == FLOW_SCHEMA.names + [x.name for x in EXTRA_FIELDS]
    back = rows(tmp_path)
    assert back.num_rows == 12
    assert back.column("ts").to_pylist() == t.column("ts").to_pylist()
    assert back.column("model_version").unique().to_pylist() == ["v7"]
    assert back.column("alert").to_pylist() == [i % 3 == 0 for i in range(12)]
    assert back.column("kafka_offset").to_pylist() == list(range(12))


def test_unscored_records_have_null_score_and_alert(tmp_path):
    with ArchiveWriter(tmp_path) as w:
        w.write(flows(3))
    back = rows(tmp_path)
    assert back.column("score").null_count == 3 and back.column("alert").null_count == 3
    assert back.column("kafka_offset").null_count == 3


def test_nothing_visible_before_flush_and_flush_is_durable(tmp_path):
    w = ArchiveWriter(tmp_path)
    w.write(flows(5), positions=pos(range(5)))
    assert w.pending_rows == 5 and rows(tmp_path).num_rows == 0
    new = w.flush()
    assert len(new) == 2 and w.pending_rows == 0 and rows(tmp_path).num_rows == 5
    assert w.stats.rows_written == 5 and w.stats.files_written == 2 and w.stats.flushes == 1
    assert w.stats.bytes_written == sum(f.stat().st_size for f in new)
    assert not list(tmp_path.rglob("*.tmp"))


def test_rows_per_file_flushes_by_itself(tmp_path):
    w = ArchiveWriter(tmp_path, rows_per_file=4)
    w.write(flows(3, step=1), positions=pos(range(3)))
    assert w.stats.flushes == 0
    w.write(flows(3, step=1, start=T0 + 10), positions=pos(range(3, 6)))
    assert w.stats.flushes == 1 and w.pending_rows == 0


def test_crash_before_the_journal_leaves_nothing_visible(tmp_path):
    with ArchiveWriter(tmp_path) as w:
        w.write(flows(2, step=1), positions=pos([0, 1]))
    part = parquet_files(tmp_path)[0].parent
    half = part / ".part-99999999999999999999-deadbeef.parquet.tmp"  # a crash mid-write
    half.write_bytes(b"PAR1 half a file")
    assert rows(tmp_path).num_rows == 2  # readers never see temporary files
    w = ArchiveWriter(tmp_path)
    assert w.stats.discarded_temp_files == 1 and not half.exists()
    assert w.high_water() == {("flows", 0): 1}


@pytest.mark.parametrize("failure", [OSError("disk hiccup"), KeyboardInterrupt("stop")])
def test_a_flush_interrupted_in_its_renames_still_shows_all_or_nothing(tmp_path, monkeypatch, failure):
    w = ArchiveWriter(tmp_path)
    w.write(flows(12), positions=pos(range(12)))   # three hours: three renames in one flush
    real = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        if str(dst).endswith(".parquet"):
            calls["n"] += 1
            if calls["n"] == 2:  # after one rename of three
                raise failure
        return real(src, dst)

    monkeypatch.setattr(archive_mod.os, "replace", failing_replace)
    if isinstance(failure, Exception):
        assert len(w.flush()) == 3
    else:
        with pytest.raises(KeyboardInterrupt):
            w.flush()
    assert rows(tmp_path).num_rows == 12 and w.pending_rows == 0
    assert not list((tmp_path / "_journal").glob("flush-*")) and not list(tmp_path.rglob("*.tmp"))


def test_journal_roll_forward(tmp_path):
    """A journal whose temporary files exist: opening renames them all."""
    d = tmp_path / "date=2026-12-01" / "hour=22"
    d.mkdir(parents=True)
    t = pa.Table.from_arrays(list(flows(2).columns) + [pa.nulls(2, f.type) for f in EXTRA_FIELDS],
                             schema=archive_mod.archive_schema())
    pq.write_table(t, d / ".part-1.parquet.tmp", compression="zstd")
    (tmp_path / "_journal").mkdir()
    (tmp_path / "_journal" / "flush-1.json").write_text(json.dumps(
        {"renames": [["date=2026-12-01/hour=22/.part-1.parquet.tmp", "date=2026-12-01/hour=22/part-1.parquet"]]}))
    w = ArchiveWriter(tmp_path)
    assert w.stats.recovered_files == 1 and (d / "part-1.parquet").exists()
    assert rows(tmp_path).num_rows == 2


def test_read_in_event_time_order_with_since_and_until(tmp_path):
    w = ArchiveWriter(tmp_path)
    late, early = flows(6, start=T0 + 7200), flows(6, start=T0)  # written out of order
    w.write(late, positions=pos(range(6, 12)))
    w.flush()
    w.write(early, positions=pos(range(6)))
    w.close()
    ts = rows(tmp_path).column("ts").cast(pa.int64()).to_numpy()
    hours = ts // 3_600_000_000
    assert (np.diff(hours) >= 0).all()  # partition (hour) order
    since, until = datetime.fromtimestamp(T0 + 1800, timezone.utc), T0 + 7200 + 1200
    sel = rows(tmp_path, since=since.isoformat(), until=until)
    got = sel.column("ts").cast(pa.int64()).to_numpy() // 1_000_000
    assert got.min() >= T0 + 1800 and got.max() < until
    assert len(got) == 6 - 3 + 2
    recent = rows(tmp_path, since="1h", now=T0 + 7200 + 3600)
    assert recent.num_rows == 6
    assert rows(tmp_path, columns=["ts", "score"]).column_names == ["ts", "score"]


def test_read_is_batched(tmp_path):
    with ArchiveWriter(tmp_path) as w:
        w.write(flows(1000, step=1), positions=pos(range(1000)))
    scan = read_archive(tmp_path, batch_size=100)
    sizes = [b.num_rows for b in scan]
    assert sum(sizes) == 1000 and max(sizes) <= 100 and scan.rows == 1000


def test_same_offsets_written_twice_are_archived_once(tmp_path):
    t = flows(10)
    with ArchiveWriter(tmp_path) as w:
        w.write(t, positions=pos(range(10)))
    w = ArchiveWriter(tmp_path)                       # the restart
    assert w.high_water() == {("flows", 0): 9}
    assert w.write(t, positions=pos(range(10))) == 0  # the re-read
    assert w.stats.duplicates_dropped == 10
    more = flows(5, start=T0 + 6000, row0=10)
    assert w.write(more, positions=pos(range(10, 15))) == 5
    w.close()
    back = rows(tmp_path)
    assert back.num_rows == 15 and sorted(back.column("kafka_offset").to_pylist()) == list(range(15))


def test_restart_after_out_of_order_archiving_loses_nothing(tmp_path):
    """The daemon archives windows in event time: offset 7 can be durable while 5 is not. The re-read
    from the last commit then archives 5 and drops 7 (exact positions, not only the high-water mark)."""
    t = flows(10)
    with ArchiveWriter(tmp_path) as w:
        w.write(t.take([0, 1, 2, 7, 8]), positions=pos([0, 1, 2, 7, 8]))
    w = ArchiveWriter(tmp_path)
    assert w.high_water() == {("flows", 0): 8}
    kept = w.write(t.slice(3), positions=pos(range(3, 10)))  # re-read from the commit at 3
    assert kept == 5 and w.stats.duplicates_dropped == 2
    w.close()
    assert sorted(rows(tmp_path).column("kafka_offset").to_pylist()) == list(range(10))


def test_records_of_one_message_are_told_apart_by_index(tmp_path):
    t = flows(5, step=1)
    with ArchiveWriter(tmp_path) as w:   # an Arrow message at offset 40, partly archived
        w.write(t.slice(0, 3), positions=pos([40] * 3, index=[0, 1, 2]))
    with ArchiveWriter(tmp_path) as w:
        assert w.write(t, positions=pos([40] * 5, index=range(5))) == 2
    assert sorted(rows(tmp_path).column("kafka_index").to_pylist()) == [0, 1, 2, 3, 4]


def test_partitions_and_topics_are_separate(tmp_path):
    t = flows(4, step=1)
    with ArchiveWriter(tmp_path) as w:
        w.write(t, positions=pos(range(4), partition=0))
    with ArchiveWriter(tmp_path) as w:
        assert w.high_water() == {("flows", 0): 3}
        assert w.write(t, positions=pos(range(4), partition=1)) == 4
        assert w.write(t, positions=pos(range(4), topic="other")) == 4
        assert w.write(t) == 4  # no position: never deduplicated
    assert rows(tmp_path).num_rows == 16


def test_retention_by_size_deletes_whole_oldest_hours(tmp_path):
    w = ArchiveWriter(tmp_path)
    for h in range(5):
        w.write(flows(200, start=T0 + 3600 * h, step=1), positions=pos(range(200 * h, 200 * (h + 1))))
        w.flush()
    total = sum(f.stat().st_size for f in parquet_files(tmp_path))
    one = total / 5
    w2 = ArchiveWriter(tmp_path, max_bytes=int(one * 2.5))
    w2.write(flows(200, start=T0 + 3600 * 5, step=1), positions=pos(range(1000, 1200)))
    w2.flush()
    hours = sorted({p.parent.name for p in parquet_files(tmp_path)})
    left = sum(f.stat().st_size for f in parquet_files(tmp_path))
    assert left <= int(one * 2.5)
    assert w2.stats.partitions_deleted == 6 - len(hours) >= 3
    assert w2.stats.bytes_deleted > 0
    back = rows(tmp_path)
    assert back.column("kafka_offset").to_numpy().max() == 1199  # the newest hour stays


def test_retention_never_deletes_the_hour_being_written(tmp_path):
    w = ArchiveWriter(tmp_path, max_bytes=1)
    w.write(flows(50, step=1), positions=pos(range(50)))
    w.flush()
    assert rows(tmp_path).num_rows == 50 and w.stats.partitions_deleted == 0


def test_retention_by_age(tmp_path):
    now = T0 + 10 * 3600
    w = ArchiveWriter(tmp_path, max_age="3h", clock=lambda: now)
    for h in range(10):
        w.write(flows(3, start=T0 + 3600 * h, step=1), positions=pos(range(3 * h, 3 * h + 3)))
        w.flush()
    starts = sorted(datetime.strptime(f"{p.parent.parent.name[5:]} {p.parent.name[5:]}", "%Y-%m-%d %H")
                    .replace(tzinfo=timezone.utc).timestamp() for p in parquet_files(tmp_path))
    assert all(s + 3600 > now - 3 * 3600 for s in starts)  # hours that ended more than 3 h ago are gone
    assert len(starts) == 3 and w.stats.partitions_deleted == 7


def test_garbage_files_are_counted_and_skipped(tmp_path):
    with ArchiveWriter(tmp_path) as w:
        w.write(flows(4, step=1), positions=pos(range(4)))
    part = parquet_files(tmp_path)[0].parent
    (part / "part-empty.parquet").write_bytes(b"")
    (part / "part-garbage.parquet").write_bytes(os.urandom(3000))
    pq.write_table(pa.table({"x": [1, 2]}), part / "part-foreign.parquet")
    (tmp_path / "date=nonsense").mkdir()
    (tmp_path / "README.txt").write_text("not data")
    scan = read_archive(tmp_path)
    assert sum(b.num_rows for b in scan) == 4
    assert sorted(p.name for p, _why in scan.bad_files) == ["part-empty.parquet", "part-foreign.parquet",
                                                             "part-garbage.parquet"]
    w = ArchiveWriter(tmp_path)
    assert w.stats.bad_files == 3 and w.high_water() == {("flows", 0): 3}


def test_empty_archive_reads_nothing(tmp_path):
    assert list(read_archive(tmp_path)) == []
    with pytest.raises(FileNotFoundError, match="archive not found"):
        read_archive(tmp_path / "missing")


@pytest.mark.parametrize("kw, match", [
    ({"max_bytes": 0}, "max_bytes"), ({"max_age": -1}, "max_age"), ({"max_age": "soon"}, "invalid duration"),
    ({"rows_per_file": 0}, "rows_per_file"), ({"kind": "packets"}, "kind"),
])
def test_bad_settings_are_refused(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        ArchiveWriter(tmp_path, **kw)


def test_wrong_length_scores_are_refused(tmp_path):
    w = ArchiveWriter(tmp_path)
    with pytest.raises(ValueError, match="one value per record"):
        w.write(flows(3), scores=[0.1, 0.2])


def test_repr_reads_like_the_constructor(tmp_path):
    w = ArchiveWriter(tmp_path, max_bytes=10, max_age="1h", rows_per_file=5)
    assert repr(w) == f"ArchiveWriter({str(tmp_path)!r}, max_bytes=10, max_age=3600.0, rows_per_file=5)"


@pytest.mark.parametrize("value, expected", [
    ("7d", 1_000_000 - 7 * 86400), ("90m", 1_000_000 - 5400), (1_000, 1_000), ("1000", 1_000),
    ("2026-12-01T22:30:00Z", T0), ("2026-12-01T22:30:00", T0),
])
def test_parse_time(value, expected):
    assert parse_time(value, now=1_000_000).timestamp() == expected


def test_parse_time_refuses_nonsense():
    with pytest.raises(ValueError, match="invalid time"):
        parse_time("last tuesday")


def test_chunk_positions():
    off, idx = chunk_positions(3, 40, 40)               # one Arrow message of three records
    assert off.tolist() == [40, 40, 40] and idx.tolist() == [0, 1, 2]
    off, idx = chunk_positions(3, 7, 9)                 # three JSON messages, one record each
    assert off.tolist() == [7, 8, 9] and idx.tolist() == [0, 0, 0]
    assert chunk_positions(2, 7, 9) is None             # one of them was bad: which one is not known


def test_empty_write_is_a_no_op(tmp_path):
    w = ArchiveWriter(tmp_path)
    assert w.write(flows(0), scores=[], positions=pos([])) == 0
    assert w.flush() == [] and w.stats.flushes == 0


# -- compaction (graphsentry archive compact) ---------------------------------------------------------------


def _small_files_archive(root: Path) -> pa.Table:
    """Three hours (22:xx, 23:xx, 00:xx) written one record per flush: a file per record, like a busy daemon."""
    w = ArchiveWriter(root)
    t = flows(36, step=100)                       # 22:30 .. 23:28:20 (18 per hour), then 00:xx below
    for i in range(t.num_rows):
        w.write(t.slice(i, 1), scores=[float(i)], model_version="v1", positions=pos([i]))
        w.flush()
    late = flows(4, start=T0 + 5400, step=60, row0=100)    # 00:00 .. 00:03 next day: the newest hour
    for i in range(late.num_rows):
        w.write(late.slice(i, 1), scores=[0.5], model_version="v1", positions=pos([100 + i]))
        w.flush()
    w.close()
    return rows(root)


def _key(t: pa.Table) -> pa.Table:
    return t.sort_by([("kafka_offset", "ascending")])


def test_compact_merges_closed_hours_and_keeps_exactly_the_same_records(tmp_path, capsys):
    from training.cli import main

    before = _small_files_archive(tmp_path)
    files = parquet_files(tmp_path)
    per_hour = {h: sum(1 for f in files if f.parent.name == h) for h in {f.parent.name for f in files}}
    assert before.num_rows == 40 and per_hour == {"hour=22": 18, "hour=23": 18, "hour=00": 4}
    assert main(["archive", "compact", "--archive", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hours"] == 2 and summary["files_before"] == 36 and summary["files_after"] == 2
    assert summary["records"] == 36 and summary["hours_open"] == 1       # the newest hour is left alone
    files = parquet_files(tmp_path)
    per_hour = {h: sum(1 for f in files if f.parent.name == h) for h in {f.parent.name for f in files}}
    assert per_hour == {"hour=22": 1, "hour=23": 1, "hour=00": 4}
    after = rows(tmp_path)
    assert after.num_rows == 40
    assert _key(after).equals(_key(before))                              # the same records, every column
    merged = pq.read_table(next(f for f in files if f.parent.name == "hour=22"))
    ts = merged.column("ts").cast(pa.int64()).to_numpy()
    assert merged.num_rows == 18 and (np.diff(ts) >= 0).all()
    meta = json.loads(pq.read_metadata(next(f for f in files if f.parent.name == "hour=22")).metadata[b"graphsentry.archive"])
    assert meta["positions"] == [["flows", 0, 0, 17]] and meta["compacted_from"] == 18
    # a second run has nothing to do; a writer opened now still knows every archived position
    assert main(["archive", "compact", "--archive", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["hours"] == 0
    w = ArchiveWriter(tmp_path)
    assert w.write(flows(36, step=100), positions=pos(range(36))) == 0 and w.stats.duplicates_dropped == 36


def test_a_writer_open_during_compaction_still_drops_re_read_records(tmp_path):
    from ingest.archive_compact import compact

    before = _small_files_archive(tmp_path)
    w = ArchiveWriter(tmp_path)                  # indexed the small files
    assert compact(tmp_path)["files_after"] == 2
    assert w.write(flows(36, step=100), positions=pos(range(36))) == 0   # looked up in the merged file
    w.close()
    assert rows(tmp_path).num_rows == before.num_rows == 40


def test_a_compaction_interrupted_after_its_journal_is_finished_and_never_doubles(tmp_path, monkeypatch):
    from ingest.archive_compact import compact

    before = _small_files_archive(tmp_path)
    real = os.replace

    def crash_at_publish(src, dst):
        if str(dst).endswith(".parquet") and "-c" in Path(str(dst)).name:
            raise KeyboardInterrupt("killed")     # after the journal, before the new file is in place
        return real(src, dst)

    monkeypatch.setattr(archive_mod.os, "replace", crash_at_publish)
    with pytest.raises(KeyboardInterrupt):
        compact(tmp_path)
    monkeypatch.setattr(archive_mod.os, "replace", real)
    assert list((tmp_path / "_journal").glob("compact-*.json"))            # the decision is on disk
    assert _key(rows(tmp_path)).equals(_key(before))                      # readers: every record once
    w = ArchiveWriter(tmp_path)                                           # opening finishes it
    assert not list((tmp_path / "_journal").glob("compact-*.json")) and not list(tmp_path.rglob("*.tmp"))
    assert w.write(flows(36, step=100), positions=pos(range(36))) == 0
    assert _key(rows(tmp_path)).equals(_key(before))
    assert sum(1 for f in parquet_files(tmp_path) if f.parent.name == "hour=22") == 1


def test_compact_user_errors_are_one_line(tmp_path, capsys):
    from training.cli import main

    assert main(["archive", "compact", "--archive", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and "Traceback" not in err
    assert main(["archive", "--out", str(tmp_path)]) == 2
    assert "give a source" in capsys.readouterr().err

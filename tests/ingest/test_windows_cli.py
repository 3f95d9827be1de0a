"""`graphsentry windows` on small hand-made canonical files."""
from __future__ import annotations

import argparse
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import cli_windows
from ingest.schema import FLOW_SCHEMA, conform


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="graphsentry")
    sub = parser.add_subparsers(dest="command")
    cli_windows.register(sub)
    args = parser.parse_args(["windows", *argv])
    return args.func(args)


@pytest.fixture()
def flows_file(tmp_path):
    # ts relative to 2021-01-01T00:00:00Z; row 5 (ts 5) arrives after ts 130 -> late with 10 s lateness.
    base = 1_609_459_200
    ts = [0, 10, 61, 62, 130, 5, 131]
    t = conform(
        pa.table(
            {
                "row": list(range(7)),
                "ts": pa.array([(base + s) * 1_000_000 for s in ts]).cast(pa.timestamp("us", tz="UTC")),
                "src_ip": ["a", "a", "b", "c", "a", "a", "d"],
                "dst_ip": ["b", "c", "a", "a", "b", "b", "a"],
                "src_port": [1, 2, 3, 4, 5, 6, 7],
                "dst_port": [80, 80, 22, 22, 80, 80, 443],
                "label": pa.array([0, 1, 1, None, 0, 0, 1], pa.int8()),
            }
        ),
        FLOW_SCHEMA,
    )
    # Two files, read in order: rows continue across them.
    p1, p2 = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(t.slice(0, 4), p1)
    pq.write_table(t.slice(4), p2)
    return [str(p1), str(p2)]


def test_per_window_sizes_and_late_count(flows_file, capsys, tmp_path) -> None:
    late = tmp_path / "late.parquet"
    rc = run_cli([*flows_file, "--window", "60s", "--lateness", "10s", "--late-out", str(late), "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].split() == ["start", "end", "nodes", "edges", "malicious"]
    assert [line.split() for line in out[1:4]] == [
        ["2021-01-01T00:00:00Z", "2021-01-01T00:01:00Z", "3", "2", "1"],
        ["2021-01-01T00:01:00Z", "2021-01-01T00:02:00Z", "3", "2", "1"],
        ["2021-01-01T00:02:00Z", "2021-01-01T00:03:00Z", "3", "2", "1"],
    ]
    text = "\n".join(out)
    assert "records:   7" in text and "late:      1" in text and "malformed: 0" in text
    assert pq.read_table(late).column("row").to_pylist() == [5]


def test_json_sliding_ipport(flows_file, capsys) -> None:
    rc = run_cli([*flows_file, "--window", "1m", "--slide", "30s", "--node", "ipport", "--json", "--lateness", "0"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0
    summary = lines[-1]["summary"]
    assert summary["records"] == 7 and summary["slide"] == 30.0 and summary["late"] == 1
    windows = lines[:-1]
    assert [w["start"] - 1_609_459_200 for w in windows] == [-30, 0, 30, 60, 90, 120]
    assert sum(w["edges"] for w in windows) == summary["graph_edges"] == 2 * 6  # 6 on-time records, 2 windows each
    # ipport: every flow has its own source port, so nodes = distinct src endpoints + dst endpoints
    assert windows[1] == {"start": 1_609_459_200.0, "end": 1_609_459_260.0, "nodes": 4, "edges": 2, "malicious": 1}


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--window", "6x"], "invalid duration '6x'"),
        (["--window", "0s"], "must be > 0"),
        (["--lateness=-1s"], "invalid duration"),
        (["--node", "mac"], "invalid choice"),
    ],
)
def test_bad_arguments_are_usage_errors(flows_file, capsys, argv, msg) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli([*flows_file, *argv])
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err


def test_slide_longer_than_window_is_a_clear_error(flows_file) -> None:
    with pytest.raises(ValueError, match=r"--slide \(90s\) must be <= --window \(60s\)"):
        run_cli([*flows_file, "--window", "60s", "--slide", "90s"])


def test_help_is_complete(capsys) -> None:
    with pytest.raises(SystemExit):
        run_cli(["--help"])
    text = capsys.readouterr().out
    for opt in ("--window", "--slide", "--lateness", "--node", "--format", "--mapping", "--dead-letter",
                "--late-out", "--preprocessor", "--id-capacity", "--json", "--summary-only", "--no-progress",
                "examples:", "Exit status"):
        assert opt in text, opt


def test_bench_skips_without_shared_data(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest_bench.py"
    env = dict(os.environ, GRAPHSENTRY_SHARED_DATA=str(tmp_path / "absent"))
    proc = subprocess.run([sys.executable, str(bench)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "skipped" in proc.stdout


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_luflow_day_every_record_in_one_graph_or_late(shared_data) -> None:
    import numpy as np

    from ingest.graph import GraphBuilder, iter_window_graphs
    from ingest.readers import open_inputs
    from ingest.windows import EventTimeWindower, Tumbling

    day = sorted((shared_data / "flows" / "luflow").glob("*.zip"))[0]
    reader = open_inputs([str(day)], batch_size=8192)
    n_read = 0

    def first_batches():  # the first ~40k records of the day keep this test short
        nonlocal n_read
        for b in reader:
            n_read += b.num_rows
            yield b
            if n_read >= 40_000:
                break

    # LUFlow files are not in time order: with 1 h lateness some records are late, most are not.
    w = EventTimeWindower(Tumbling(300), lateness=3600)
    seen = []
    for win, g in iter_window_graphs(first_batches(), w.windower, GraphBuilder("as"), windowing=w):
        rows = g.edge_row.numpy()
        ts = g.edge_ts.numpy()
        assert np.all((ts >= win.start) & (ts < win.end)) and np.all(np.diff(rows) > 0)
        assert g.edge_index.max() < g.num_nodes
        seen.append(rows)
    late = np.concatenate([b.column("row").to_numpy() for b in w.late]) if w.late else np.array([], np.int64)
    placed = np.concatenate(seen)
    assert 0 < late.size < placed.size
    # every record is in exactly one window or in the late output
    assert np.array_equal(np.sort(np.concatenate([placed, late])), np.arange(n_read))

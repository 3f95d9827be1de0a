"""`graphsentry windows`: the warning when most records are late, the disorder it measures, --node-mode."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import cli_windows
from ingest.disorder import Disorder, late_warning, suggest_lateness
from ingest.schema import FLOW_SCHEMA, conform

BASE = 1_609_459_200


def _table(ts_s: list[float]) -> pa.Table:
    n = len(ts_s)
    return conform(pa.table({
        "row": list(range(n)),
        "ts": pa.array([int((BASE + s) * 1e6) for s in ts_s]).cast(pa.timestamp("us", tz="UTC")),
        "src_ip": [f"10.0.0.{i % 9}" for i in range(n)], "dst_ip": ["10.0.1.1"] * n,
    }), FLOW_SCHEMA)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="graphsentry")
    sub = parser.add_subparsers(dest="command")
    cli_windows.register(sub)
    args = parser.parse_args(["windows", *argv])
    return args.func(args)


def test_disorder_is_the_largest_backward_jump_across_batches():
    d = Disorder()
    d.push(_table([0, 10, 5, 20]))         # 5 s behind 10
    d.push(_table([12, 30, 29]))           # 12 is 8 s behind 20 (the previous batch's newest)
    assert d.max_jump_s == 8.0
    d.push(_table([1]))                    # 29 s behind 30
    assert d.max_jump_s == 29.0
    in_order = Disorder()
    in_order.push(_table(list(range(100))))
    assert in_order.max_jump_s == 0.0


def test_suggested_lateness_covers_the_disorder():
    assert suggest_lateness(0.2) == "1s" and suggest_lateness(59) == "59s" and suggest_lateness(61) == "2m"
    assert suggest_lateness(32101) == "9h" and suggest_lateness(86400) == "1d" and suggest_lateness(90000) == "2d"
    from ingest.windows import parse_duration
    for s in (0.2, 59, 61, 3599, 32101, 86401):
        assert parse_duration(suggest_lateness(s)) >= s


def test_late_warning_only_above_the_share():
    d = Disorder()
    d.push(_table([100, 0]))
    assert late_warning(20, 100, 10.0, d) is None
    text = late_warning(21, 100, 10.0, d)
    assert "21%" in text and "--lateness 2m" in text and "event-time order" in text


@pytest.fixture()
def disordered(tmp_path):
    """Two interleaved streams, one running an hour behind the other: half the records are late."""
    rng = np.random.default_rng(0)
    fast = np.sort(rng.uniform(3600, 7200, 300))
    slow = fast - 3600
    ts = np.empty(600)
    ts[0::2], ts[1::2] = fast, slow
    p = tmp_path / "disordered.parquet"
    pq.write_table(_table(ts.tolist()), p)
    return p


def test_cli_warns_and_the_suggested_lateness_fixes_it(disordered, capsys, caplog):
    assert run_cli([str(disordered), "--window", "60s", "--no-progress", "--summary-only"]) == 0
    out = capsys.readouterr().out
    warn = [ln for ln in out.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "--lateness 1h" in warn[0] and "of records (" in warn[0]
    assert any("--lateness 1h" in r.getMessage() for r in caplog.records)  # and on stderr, via logging
    assert run_cli([str(disordered), "--window", "60s", "--lateness", "1h", "--no-progress", "--json",
                    "--summary-only"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert summary["late"] == 0 and summary["late_warning"] is None and summary["max_disorder_s"] <= 3600


def test_node_mode_and_its_hidden_alias(disordered, capsys):
    assert run_cli([str(disordered), "--node-mode", "ipport", "--lateness", "1h", "--json", "--summary-only",
                    "--no-progress"]) == 0
    a = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert run_cli([str(disordered), "--node", "ipport", "--lateness", "1h", "--json", "--summary-only",
                    "--no-progress"]) == 0
    b = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert a["node_mode"] == b["node_mode"] == "ipport"
    parser = argparse.ArgumentParser(prog="graphsentry")
    cli_windows.register(parser.add_subparsers(dest="command"))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["windows"]
    text = sub.format_help()
    assert "--node-mode" in text and "--node " not in text and "--node\n" not in text


@pytest.mark.slow
def test_luflow_day_warns_with_a_lateness_that_fixes_it(shared_data, capsys):
    day = shared_data / "flows" / "luflow" / "2020.07.08.zip"
    assert run_cli([str(day), "--no-progress", "--summary-only", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert s["late"] > 0.2 * s["records"] and "--lateness" in s["late_warning"]
    fix = s["late_warning"].split("--lateness ")[2].split()[0]  # the suggested value (after "with --lateness 10s")
    assert run_cli([str(day), "--no-progress", "--summary-only", "--json", "--lateness", fix]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["late"] == 0

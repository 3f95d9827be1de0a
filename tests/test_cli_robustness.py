"""Every subcommand against a corpus of bad inputs: it never crashes, never shows a traceback, never
loses a record.

For each (subcommand, bad input) the exit code is 0 (done), 2 (user error, one line) or 3 (nothing could
be read); stderr holds no traceback; and where records could be read, every input record is either in the
output or in the dead-letter file. The matrix runs in-process through the real entry point (one torch
import for all of it); a few cases run as real subprocesses, which is where an abort (SIGABRT) or a
traceback printed by a dying thread would show.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.cli import main

REPO = Path(__file__).resolve().parents[1]
ZEEK = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
LATER = REPO / "samples" / "stratosphere" / "010-zeek-mixed.conn.log.labeled"
CSV = REPO / "samples" / "iot23" / "CTU-Honeypot-Capture-4-1-labeled.csv"
PCAP = REPO / "samples" / "suricata-verify" / "bug-4663-03__icmp_and_ssh.pcap"
GRAPHSENTRY = Path(sys.executable).with_name("graphsentry")
OK_CODES = (0, 2, 3)


def _zeek_as_json_lines(src: Path, dst: Path) -> None:
    """The Zeek TSV sample as Zeek JSON logs (one object per line)."""
    fields = None
    with open(src) as fin, open(dst, "w") as fout:
        for line in fin:
            line = line.rstrip("\n")
            if line.startswith("#fields"):
                fields = line.split("\t")[1:]
            elif line and not line.startswith("#"):
                values = line.split("\t")
                rec = {k: v for k, v in zip(fields, values) if v not in ("-", "(empty)")}
                for k in ("ts", "duration"):
                    if k in rec:
                        rec[k] = float(rec[k])
                fout.write(json.dumps(rec) + "\n")


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    """``dst``: the first ``fraction`` of ``src``'s bytes, cut wherever that falls (mid-line, mid-value)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Bad inputs, each a real file (or directory / missing path) as a user could hand one over."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(7)
    c: dict[str, Path] = {}
    c["empty.log"] = d / "empty.log"
    c["empty.log"].write_bytes(b"")
    c["random.bin"] = d / "random.bin"
    c["random.bin"].write_bytes(bytes(rng.randrange(256) for _ in range(20000)))
    elf = Path("/bin/ls") if Path("/bin/ls").is_file() else Path(sys.executable)
    c["elf-named.log"] = d / "elf-named.log"
    c["elf-named.log"].write_bytes(elf.read_bytes()[:200_000])
    c["truncated-zeek.log"] = _cut(ZEEK, d / "truncated-zeek.log", 0.61)
    c["truncated.csv"] = _cut(CSV, d / "truncated.csv", 0.57)
    jl = d / "zeek.json"
    _zeek_as_json_lines(ZEEK, jl)
    c["truncated.json"] = _cut(jl, d / "truncated.json", 0.43)
    full = d / "flows.parquet"
    assert main(["ingest", str(ZEEK), "--out", str(full)]) == 0
    c["truncated.parquet"] = _cut(full, d / "truncated.parquet", 0.5)
    c["truncated.pcap"] = _cut(PCAP, d / "truncated.pcap", 0.47)
    lines = ZEEK.read_text().splitlines(keepends=True)
    damaged = [ln.replace("\tid.orig_h\t", "\tid.or\x00ig\t") if ln.startswith("#fields") else ln for ln in lines]
    damaged = [ln for ln in damaged if not ln.startswith("#separator")]
    c["damaged-header.log"] = d / "damaged-header.log"
    c["damaged-header.log"].write_text("".join(damaged))
    c["json-named.csv"] = d / "json-named.csv"
    shutil.copy(jl, c["json-named.csv"])
    binary_block = CSV.read_bytes()
    half = len(binary_block) // 2
    c["csv-binary-block.csv"] = d / "csv-binary-block.csv"
    c["csv-binary-block.csv"].write_bytes(binary_block[:half] + elf.read_bytes()[:5000] + binary_block[half:])
    c["a-directory"] = d / "a-directory"
    c["a-directory"].mkdir()
    c["missing.log"] = d / "does-not-exist.log"
    return c


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small real model (one epoch, forest detector) trained on the bundled Zeek sample."""
    m = tmp_path_factory.mktemp("model") / "model"
    rc = main(["train", "--data", str(ZEEK), "--out", str(m), "--epochs", "1", "--window", "30m", "--hidden", "16",
               "--objective", "contrastive", "--detector", "iforest", "--flow-parts", "src,dst,edge", "--no-progress"])
    assert rc == 0
    return m


from cli_helpers import run_cli  # noqa: E402  graphsentry in-process: (exit code, stdout, stderr)


def check(rc: int, err: str, what: str) -> None:
    assert rc in OK_CODES, f"{what}: exit {rc}\n{err[-2000:]}"
    assert "Traceback" not in err, f"{what}: traceback on stderr\n{err[-2000:]}"
    if rc != 0:
        last = [ln for ln in err.splitlines() if ln.strip()]
        assert last and any(w in err.lower() for w in ("error", "nothing", "usage", "could not", "cannot")), \
            f"{what}: exit {rc} without saying why\n{err}"


def _data_lines(path: Path) -> int | None:
    """How many records a line-based text file offers (data lines: not comments, not the CSV header);
    None for files that are not line-based text."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return None
    if "\x00" in text:
        return None
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.startswith("#")]
    if path.suffix == ".csv" and lines and not lines[0].lstrip().startswith("{"):
        lines = lines[1:]  # the header row
    return len(lines)


BAD = ["empty.log", "random.bin", "elf-named.log", "truncated-zeek.log", "truncated.csv", "truncated.json",
       "truncated.parquet", "truncated.pcap", "damaged-header.log", "json-named.csv", "csv-binary-block.csv",
       "a-directory", "missing.log"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD)
def test_ingest_every_record_is_out_or_dead_lettered(corpus, name, tmp_path, capsys):
    src = corpus[name]
    out, dead = tmp_path / "out.parquet", tmp_path / "dead.jsonl"
    rc, _, err = run_cli(["ingest", str(src), "--out", str(out), "--dead-letter", str(dead), "--no-progress"], capsys)
    check(rc, err, f"ingest {name}")
    offered = _data_lines(src) if src.is_file() else None
    if rc == 0 and offered:
        rows = pq.read_metadata(out).num_rows if out.exists() else 0
        dead_n = sum(1 for _ in open(dead)) if dead.exists() else 0
        # a line is a record in the output or one dead letter (a dead letter may stand for a whole
        # unreadable file, which is then the only entry of that file)
        assert rows + dead_n >= offered or (rows == 0 and dead_n >= 1), \
            f"ingest {name}: {offered} records offered, {rows} out + {dead_n} dead-lettered"
        assert rows <= offered


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD)
def test_windows(corpus, name, capsys):
    rc, _, err = run_cli(["windows", str(corpus[name]), "--summary-only", "--no-progress"], capsys)
    check(rc, err, f"windows {name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD)
def test_score(corpus, model_dir, name, tmp_path, capsys):
    src, out, dead = corpus[name], tmp_path / "scores.parquet", tmp_path / "dead.jsonl"
    rc, _, err = run_cli(["score", str(src), "--model", str(model_dir), "--out", str(out),
                          "--dead-letter", str(dead)], capsys)
    check(rc, err, f"score {name}")
    offered = _data_lines(src) if src.is_file() else None
    if rc == 0 and offered:
        rows = pq.read_metadata(out).num_rows
        dead_n = sum(1 for _ in open(dead)) if dead.exists() else 0
        assert rows + dead_n >= offered or (rows == 0 and dead_n >= 1), \
            f"score {name}: {offered} offered, {rows} scored rows + {dead_n} dead letters"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empty.log", "random.bin", "elf-named.log", "damaged-header.log", "a-directory",
                                  "missing.log", "truncated.parquet"])
def test_train_refuses_unusable_inputs(corpus, name, tmp_path, capsys):
    rc, _, err = run_cli(["train", "--data", str(corpus[name]), "--out", str(tmp_path / "m"), "--epochs", "1",
                          "--no-progress"], capsys)
    check(rc, err, f"train {name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empty.log", "elf-named.log", "truncated-zeek.log", "csv-binary-block.csv",
                                  "a-directory", "missing.log"])
def test_calibrate(corpus, model_dir, name, tmp_path, capsys):
    rc, _, err = run_cli(["calibrate", "--model", str(model_dir), "--data", str(corpus[name]),
                          "--out", str(tmp_path / "m2")], capsys)
    check(rc, err, f"calibrate {name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["elf-named.log", "random.bin", "truncated-zeek.log", "empty.log", "a-directory"])
def test_serve_file_source(corpus, model_dir, name, tmp_path, capsys):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"""
source: {{type: file, paths: ["{corpus[name]}", "{LATER}"]}}
model: {{path: "{model_dir}", watch: false}}
alerts: {{sinks: [{{type: sqlite, path: "{tmp_path / 'alerts.db'}"}}]}}
metrics: {{enabled: false}}
window: {{idle_timeout: 1.0}}
""")
    rc, out, err = run_cli(["serve", "--config", str(cfg)], capsys)
    check(rc, err, f"serve {name}")
    assert rc == 0, f"serve {name}: the good file beside the bad one must be scored\n{err}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empty.log", "random.bin", "elf-named.log", "a-directory", "missing.log"])
def test_evaluate_and_fraud_refuse_unusable_inputs(corpus, name, tmp_path, capsys):
    bad = str(corpus[name])
    for argv in (["evaluate", "--train", bad, "--test", str(LATER), "--report", str(tmp_path / "r"), "--epochs", "1"],
                 ["fraud", "train", bad, "--out", str(tmp_path / "fm"), "--epochs", "1", "--quiet"],
                 ["fraud", "evaluate", bad, "--report", str(tmp_path / "fr"), "--folds", "1", "--quiet"],
                 ["fraud", "score", bad, "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "fs.parquet")]):
        rc, _, err = run_cli(argv, capsys)
        check(rc, err, " ".join(argv[:2]) + f" {name}")
        assert rc in (2, 3), f"{argv[:2]} {name}: nothing usable, expected exit 2 or 3, got {rc}\n{err}"


@pytest.mark.parametrize("argv", [
    ["kg", "stats", "samples"],                      # a directory that is not an artifact
    ["kg", "build", "--data", "/nonexistent", "--out", "/tmp/gs-kg-out"],
    ["kg", "explain", "not-a-technique"],
])
def test_kg_bad_inputs(argv, capsys):
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, " ".join(argv))
    assert rc == 2


# -- model directories and configs ------------------------------------------------------------------


def _broken_models(model_dir: Path, root: Path) -> dict[str, Path]:
    out = {}
    for name in ("empty-config", "not-json", "truncated-weights", "no-weights", "empty-dir"):
        d = root / name
        if name == "empty-dir":
            d.mkdir()
        else:
            shutil.copytree(model_dir, d)
        out[name] = d
    (out["empty-config"] / "config.json").write_text("{}")
    (out["not-json"] / "config.json").write_text("{not json")
    w = out["truncated-weights"] / "weights.pt"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    (out["no-weights"] / "weights.pt").unlink()
    out["a-file"] = root / "a-file"
    out["a-file"].write_text("model")
    out["missing"] = root / "missing"
    return out


@pytest.mark.slow
def test_broken_model_directories_are_user_errors(model_dir, tmp_path, capsys):
    for name, d in _broken_models(model_dir, tmp_path).items():
        for argv in (["score", str(LATER), "--model", str(d), "--out", str(tmp_path / "s.parquet")],
                     ["calibrate", "--model", str(d), "--data", str(LATER), "--out", str(tmp_path / "c")]):
            rc, _, err = run_cli(argv, capsys)
            check(rc, err, f"{argv[0]} with model {name}")
            assert rc == 2, f"{argv[0]} with model {name}: a broken model is a user error (exit 2), got {rc}\n{err}"
            assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, f"one line, got:\n{err}"


@pytest.mark.parametrize("text", [
    "source: [unclosed\n",                                   # broken YAML
    "alerts:\n  sinks:\n    - {type: sqlite, pth: x.db}\n",   # a typo'd key inside a sink
    "metrics: {port: seventy}\n",                             # wrong type
    "nonsense_section: {}\n",
    "- just\n- a list\n",
])
def test_broken_configs_are_user_errors(text, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    rc, _, err = run_cli(["serve", "--config", str(cfg), "--print-config"], capsys)
    check(rc, err, f"serve --config {text!r}")
    assert rc == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=12))
def test_any_duration_is_parsed_or_refused(capsys, value):
    rc, _, err = run_cli(["windows", str(ZEEK), "--window", value, "--summary-only", "--no-progress"], capsys)
    check(rc, err, f"windows --window {value!r}")


@pytest.mark.parametrize("argv", [
    ["windows", str(ZEEK), "--window", "-5m"],
    ["windows", str(ZEEK), "--lateness", "soon"],
    ["train", "--data", str(ZEEK), "--out", "/nonexistent-root-dir/x/model", "--window", "0s"],
    ["score", str(ZEEK), "--model", "/nonexistent", "--out", "/tmp/x.parquet"],
    ["kg", "explain", "T99999"],
    ["kg", "stats", "/nonexistent"],
    ["replay", str(ZEEK), "--bootstrap", "127.0.0.1:1", "--topic", "t", "--speed", "fast"],
    ["ingest", str(ZEEK), "--out", "/nonexistent-root-dir/deeper/out.parquet"],
])
def test_bad_values_are_user_errors(argv, capsys):
    rc, _, err = run_cli(argv, capsys)
    check(rc, err, " ".join(argv))
    assert rc == 2, f"{argv}: expected exit 2, got {rc}\n{err}"
    assert not Path("/nonexistent-root-dir").exists(), "--out must not create directories anywhere"


# -- real processes: where an abort or a dying thread's traceback would show ---------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cmd", ["ingest", "windows", "score"])
def test_binary_log_in_a_real_process(corpus, model_dir, cmd, tmp_path):
    argv = {"ingest": ["ingest", str(corpus["elf-named.log"]), str(ZEEK), "--out", str(tmp_path / "o.parquet")],
            "windows": ["windows", str(corpus["elf-named.log"]), str(ZEEK), "--summary-only"],
            "score": ["score", str(corpus["elf-named.log"]), str(ZEEK), "--model", str(model_dir),
                      "--out", str(tmp_path / "s.parquet")]}[cmd]
    p = subprocess.run([str(GRAPHSENTRY), *argv], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONFAULTHANDLER": ""})
    check(p.returncode, p.stderr, f"{cmd} (subprocess)")
    assert p.returncode == 0, f"{cmd}: the good file beside the binary one must be read\n{p.stderr}"
    if cmd == "ingest":
        assert pq.read_metadata(tmp_path / "o.parquet").num_rows == _data_lines(ZEEK)


def test_version_and_debug_everywhere():
    for argv in (["--version"], ["score", "--version"], ["kg", "explain", "--version"]):
        p = subprocess.run([str(GRAPHSENTRY), *argv], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and p.stdout.startswith("graphsentry "), (argv, p.stdout, p.stderr)
    p = subprocess.run([str(GRAPHSENTRY), "score", str(ZEEK), "--model", "/nonexistent", "--out", "/tmp/x.parquet",
                        "--debug"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr, "--debug shows the traceback"


def test_every_subcommand_help_ends_with_an_example():
    from training.cli import _subparsers, build_parser

    for path, sp in _subparsers(build_parser()):
        text = sp.format_help()
        assert "example:\n  graphsentry " in text, f"graphsentry {' '.join(path)} --help has no example"

"""Retraining benchmark: peak memory (RSS) of `graphsentry retrain` against the size of the archive it reads.

    .venv/bin/python benchmarks/retrain_bench.py                       # 0.5M and 2M records
    .venv/bin/python benchmarks/retrain_bench.py --sizes 100000 500000 # other sizes

The archive is built from the bundled Stratosphere day (samples/stratosphere/full/008-zeek-mixed, 5663 real
flows, 24 h): a tiny champion (random encoder + kNN, 10-minute windows, as in tests/training/test_retrain.py)
scores the day once, and the scored day is archived again and again, each copy shifted by a whole day (its
records keep their own positions), until the archive holds the size asked for; a larger archive is a longer
history of the same sensor. Each size gets, each in a fresh process whose peak RSS (``ru_maxrss``) is
reported:

* ``retrain``: `graphsentry retrain` over the whole archive with the caps of ``CONFIG`` below (training part
  read at most ``max_train_records`` records, held-out part ``max_holdout_records``);
* ``read_all``: what a run that loads the range into memory holds just for the records: every archive
  column of every record in one Arrow table (no training);
* ``baseline``: the interpreter with the retraining modules imported (the fixed part of every run).

The ``retrain`` rows also give the peak RSS reached by the end of each phase: counting the windows (first pass),
reading the kept blocks (second pass), training the challenger; the rest is scoring and the gate.

Writes reports/retrain_memory.json (with commit, date and cores) and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
DAY = ROOT / "samples" / "stratosphere" / "full" / "008-zeek-mixed.conn.log.labeled.gz"
OUT = ROOT / "reports" / "retrain_memory.json"
CONFIG = {"max_train_records": 60_000, "max_holdout_records": 30_000, "speed_records": 5000, "speed_repeats": 2,
          "gate": {"bootstrap": 200}}
DAY_US = 86_400 * 1_000_000

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
what, args = sys.argv[1], json.loads(sys.argv[2])
out = {}
if what == "retrain":
    import training.pretrain, training.retrain_data
    from training.cli import main
    def peak():
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    def phase(name, fn):
        def wrapped(*a, **k):
            r = fn(*a, **k)
            out[f"peak_rss_after_{name}_mb"] = peak()
            return r
        return wrapped
    out["peak_rss_before_mb"] = peak()
    training.retrain_data.count_windows = phase("count", training.retrain_data.count_windows)
    training.retrain_data.read_sample = phase("read", training.retrain_data.read_sample)
    training.pretrain.train_bundle = phase("train", training.pretrain.train_bundle)
    out["rc"] = main(args)
elif what == "read_all":
    import pyarrow as pa
    from ingest.archive import read_archive
    t = pa.Table.from_batches(list(read_archive(args[0])))
    out["records"], out["table_bytes"] = t.num_rows, t.nbytes
else:
    import training.retrain, training.pretrain, detector.scoring  # noqa: F401
out["seconds"] = round(time.perf_counter() - t0, 1)
out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print("BENCH " + json.dumps(out), file=sys.stderr, flush=True)
"""


def _child(what: str, args: list[str]) -> dict:
    env = dict(os.environ, GRAPHSENTRY_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", CHILD, what, json.dumps(args)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("BENCH ")]
    if p.returncode or not lines:
        raise RuntimeError(f"{what} failed (exit {p.returncode}): {p.stderr[-2000:]}")
    return json.loads(lines[-1][6:])


def build(champion: Path, root: Path, size: int) -> dict:
    """An archive of ``size`` records: the scored day, copy k shifted by k days."""
    import numpy as np
    import pyarrow as pa

    from detector.bundle import load_bundle
    from detector.scoring import score_table
    from ingest.archive import ArchiveWriter
    from training.commands import read_table

    t, _ = read_table([str(DAY)])
    s = score_table(load_bundle(champion), t)
    score = s.column("score").to_numpy(zero_copy_only=False)
    alert = np.asarray(s.column("alert").to_numpy(zero_copy_only=False), bool)
    ts = t.column("ts").cast(pa.int64()).to_numpy()
    copies = -(-size // t.num_rows)
    t0 = time.perf_counter()
    n = 0
    with ArchiveWriter(root, rows_per_file=400_000) as w:
        for k in range(copies):
            m = min(t.num_rows, size - n)
            c = t.slice(0, m)
            c = c.set_column(c.schema.get_field_index("ts"), "ts",
                             pa.array(ts[:m] + k * DAY_US, pa.int64()).cast(t.schema.field("ts").type))
            w.write(c, scores=score[:m], alerts=alert[:m], model_version="v0001",
                    positions={"topic": f"file:{DAY}#copy{k}", "partition": 0, "offset": c.column("row")})
            n += m
    size_bytes = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    return {"records": n, "days": copies, "bytes": size_bytes, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[500_000, 2_000_000])
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    from training.cli import main as cli
    from training.registry import Registry
    from training.report_meta import report_meta

    rows = []
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
        tmp = Path(tmp)
        champion = tmp / "champion"
        rc = cli(["train", "--data", str(SAMPLE), "--out", str(champion), "--epochs", "1", "--objective", "none",
                  "--window", "10m", "--detector", "knn", "--benign-only", "--no-progress"])
        if rc:
            raise SystemExit(f"training the champion failed ({rc})")
        cfg = tmp / "retrain.yaml"
        cfg.write_text(json.dumps(CONFIG))          # JSON is YAML
        baseline = _child("baseline", [])
        print(f"baseline (modules imported): {baseline['peak_rss_mb']} MB", file=sys.stderr)
        for size in a.sizes:
            arch = tmp / f"archive-{size}"
            info = build(champion, arch, size)
            print(f"archive of {info['records']} records ({info['days']} days, {info['bytes'] / 1e6:.1f} MB)",
                  file=sys.stderr)
            reg = Registry(tmp / f"registry-{size}")
            reg.promote(reg.register(champion))
            r = _child("retrain", ["retrain", "--archive", str(arch), "--registry", str(reg.root), "--since",
                                   "2000-01-01T00:00:00Z", "--config", str(cfg), "--no-progress",
                                   "--report-dir", str(tmp / f"report-{size}")])
            rep = json.loads((tmp / f"report-{size}" / "report.json").read_text())
            d = rep.get("data") or {}
            r.update({"status": rep.get("status"), "decision": rep.get("decision"),
                      "records_read": d.get("records_read"), "sample": d.get("sample"),
                      "trained_on": (d.get("training_selection") or {}).get("kept")})
            full = _child("read_all", [str(arch)])
            rows.append({"archive": info, "retrain": r, "read_all": full})
            print(f"  retrain: peak {r['peak_rss_mb']} MB in {r['seconds']} s (read {r['records_read']}); "
                  f"read_all: peak {full['peak_rss_mb']} MB", file=sys.stderr)
            import shutil

            shutil.rmtree(arch, ignore_errors=True)
    report = {**report_meta(), "benchmark": "retrain_memory", "data": str(DAY.relative_to(ROOT)),
              "config": CONFIG, "torch_threads": 1, "baseline": baseline, "runs": rows,
              "notes": "peak RSS (ru_maxrss) of a fresh process per row; retrain reads the archive twice (window "
                       "counts, then the kept blocks) and holds at most max_train_records + max_holdout_records "
                       "records; read_all is every record of the archive in one Arrow table, no training"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`graphsentry serve` with a file source against `graphsentry score` on the same Zeek conn.log.

One generated hour of Zeek ``conn.log`` (TSV behind the Zeek header), ``--records`` records (default
1,000,000) from about as many distinct sources (``--sources``, default: one per record), a few scanners
among them. A model is trained by ``graphsentry train`` on ``--train-records`` records generated for the
``--train-minutes`` *before* the scored hour (time-ordered; ``--model DIR`` takes an existing one). Then,
each as a subprocess as a user runs it, one after the other:

* ``graphsentry score LOG --model M --out scores.parquet`` [score]
* ``graphsentry serve LOG --model M --config C --summary-json S`` (file source, sqlite alert sink) [serve]
* with ``--follow``: the same with ``--follow`` (the tailing source, stopped by ``pipeline.max_records``
  after the log's records) [serve_follow]

Per run: wall s, records/s, CPU-s per record (user + sys of the child), peak RSS (the child's
``ru_maxrss``), flagged records (score: rows with ``alert``; serve: the summary's ``flagged_records``)
and alerts (serve: after aggregation per source and technique). ``serve_to_score`` (``serve_follow_to_score``,
``serve_baseline_to_score``) holds the ratios and the difference in flagged records. ``--baseline DIR`` also
runs ``serve`` from another checkout (e.g. ``git worktree add DIR COMMIT``) [serve_baseline, baseline_commit].
Figures go to ``reports/serve_file_bench.json`` (``--out``), with ``training/report_meta.py``'s provenance.

    .venv/bin/python benchmarks/serve_file_bench.py                    # 1M records, trains a model
    .venv/bin/python benchmarks/serve_file_bench.py --records 200000 --model out/bench-model
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.report_meta import report_meta  # noqa: E402

FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
          "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
          "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents"]
TYPES = ["time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count", "count",
         "string", "bool", "bool", "count", "string", "count", "count", "count", "count", "set[string]"]
T0 = 1_700_000_000.0  # the scored hour starts here (epoch seconds)


def _ips(prefix: str, ids: np.ndarray) -> pa.Array:
    """``prefix.a.b.c`` for 24-bit ``ids``, vectorised in Arrow."""
    parts = [pc.cast(pa.array((ids >> s) & 255), pa.string()) for s in (16, 8, 0)]
    return pc.binary_join_element_wise(pa.array(np.full(len(ids), prefix)), *parts, ".")


def gen_conn(n: int, t0: float, seconds: float, seed: int, n_src: int) -> pa.Table:
    """``n`` Zeek conn records over ``seconds`` from ``t0``, time-ordered, as string columns in FIELDS order.

    Sources: ``n_src`` random 24-bit ids under 10/8 (about ``n_src`` distinct); destinations: 2,000 servers
    on 53/80/443/22; 0.5% of the records come from 20 scanners (S0 to random ports of many hosts)."""
    rng = np.random.default_rng(seed)
    ts = t0 + np.sort(rng.uniform(0.0, seconds, n))
    src = rng.integers(0, 1 << 24, n_src)[rng.integers(0, n_src, n)] if n_src < n else rng.integers(0, 1 << 24, n)
    scan = rng.random(n) < 0.005
    src = np.where(scan, rng.integers(0, 20, n), src)
    dst = np.where(scan, rng.integers(0, 1 << 16, n), rng.integers(0, 2000, n))
    svc_port = np.array([53, 80, 443, 22])
    k = rng.integers(0, 4, n)
    dport = np.where(scan, rng.integers(1, 65535, n), svc_port[k])
    proto = np.where(scan, "tcp", np.where(k == 0, "udp", "tcp"))
    service = np.where(scan, "-", np.array(["dns", "http", "ssl", "ssh"])[k])
    dur = np.where(scan, 0.0, rng.exponential(1.0, n)).round(6)
    ob = np.where(scan, 0, rng.integers(40, 5000, n))
    rb = np.where(scan, 0, rng.integers(40, 80000, n))
    op = np.where(scan, 1, rng.integers(1, 60, n))
    rp = np.where(scan, 0, rng.integers(1, 90, n))
    state = np.where(scan, "S0", "SF")
    uid = pc.binary_join_element_wise(pa.array(np.full(n, "C")), pc.cast(pa.array(np.arange(n) + seed * n), pa.string()), "")
    cols = {
        "ts": pc.cast(pa.array(ts), pa.string()),
        "uid": uid,
        "id.orig_h": pc.binary_join_element_wise(pa.array(np.full(n, "10")), pc.cast(pa.array((src >> 16) & 255), pa.string()),
                                                 pc.cast(pa.array((src >> 8) & 255), pa.string()),
                                                 pc.cast(pa.array(src & 255), pa.string()), "."),
        "id.orig_p": pc.cast(pa.array(rng.integers(1024, 65535, n)), pa.string()),
        "id.resp_h": _ips("172", dst),
        "id.resp_p": pc.cast(pa.array(dport), pa.string()),
        "proto": pa.array(proto), "service": pa.array(service),
        "duration": pc.cast(pa.array(dur), pa.string()),
        "orig_bytes": pc.cast(pa.array(ob), pa.string()), "resp_bytes": pc.cast(pa.array(rb), pa.string()),
        "conn_state": pa.array(state), "local_orig": pa.array(np.full(n, "T")), "local_resp": pa.array(np.full(n, "F")),
        "missed_bytes": pa.array(np.full(n, "0")),
        "history": pa.array(np.where(scan, "S", "ShADadFf")),
        "orig_pkts": pc.cast(pa.array(op), pa.string()), "orig_ip_bytes": pc.cast(pa.array(ob + 40 * op), pa.string()),
        "resp_pkts": pc.cast(pa.array(rp), pa.string()), "resp_ip_bytes": pc.cast(pa.array(rb + 40 * rp), pa.string()),
        "tunnel_parents": pa.array(np.full(n, "(empty)")),
    }
    return pa.table([cols[f] for f in FIELDS], names=FIELDS)


def write_zeek(path: Path, table: pa.Table) -> None:
    """``table`` (string columns in FIELDS order) as a Zeek conn.log with its header and ``#close`` line."""
    head = "\n".join(["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
                      "#path\tconn", "#open\t2023-11-14-22-13-20", "#fields\t" + "\t".join(FIELDS),
                      "#types\t" + "\t".join(TYPES)]) + "\n"
    with open(path, "wb") as f:
        f.write(head.encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
        f.write(b"#close\t2023-11-14-23-13-20\n")


def run_measured(cmd: list[str], env: dict, logfile: Path, cwd: Path = REPO) -> dict:
    """Run ``cmd`` (output to ``logfile``); wall s, the child's own CPU s (user + sys) and peak RSS (MB,
    ``ru_maxrss`` from ``wait4``), or exit with its log's tail when it fails."""
    with open(logfile, "wb") as lf:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=lf, stderr=subprocess.STDOUT)
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.stderr.write(logfile.read_text(errors="replace")[-4000:])
        raise SystemExit(f"{cmd[3]} failed with exit status {p.returncode}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records in the scored hour (default 1,000,000)")
    ap.add_argument("--sources", type=int, default=0, help="distinct sources to draw from (default 0: one per record)")
    ap.add_argument("--seconds", type=float, default=3600.0, help="event-time span of the scored log (default 3600)")
    ap.add_argument("--train-records", type=int, default=30_000, help="records to train on (default 30,000)")
    ap.add_argument("--train-minutes", type=float, default=15.0, help="their span, just before the hour (default 15)")
    ap.add_argument("--model", default=None, metavar="DIR", help="use this model directory (no training)")
    ap.add_argument("--skip", choices=["score", "serve"], default=None, help="run only the other command")
    ap.add_argument("--follow", action="store_true",
                    help="also `graphsentry serve --follow` (the tailing source) on the same log [serve_follow]")
    ap.add_argument("--baseline", default=None, metavar="DIR", help="also run serve from this checkout [serve_baseline]")
    ap.add_argument("--out", default=str(REPO / "reports" / "serve_file_bench.json"))
    ap.add_argument("--workdir", default=None, help="keep the generated files here (default: a temporary directory)")
    a = ap.parse_args()

    tmpctx = tempfile.TemporaryDirectory(prefix="serve_file_bench-") if a.workdir is None else None
    work = Path(a.workdir or tmpctx.name)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    exe = [sys.executable, "-m", "training.cli"]
    n_src = a.sources or a.records
    try:
        t = time.perf_counter()
        log = work / "hour.conn.log"
        write_zeek(log, gen_conn(a.records, T0, a.seconds, seed=1, n_src=n_src))
        print(f"generated {a.records} records ({log.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s",
              flush=True)
        model = a.model
        train_s = None
        if model is None:
            train_log = work / "before.conn.log"
            span = a.train_minutes * 60.0
            write_zeek(train_log, gen_conn(a.train_records, T0 - span, span, seed=2,
                                           n_src=max(1, int(n_src * a.train_records / a.records))))
            model = str(work / "model")
            t = time.perf_counter()
            r = subprocess.run(exe + ["train", str(train_log), "--out", model, "--epochs", "1", "--no-progress",
                                      "--validation", "benign"], env=env, cwd=REPO, capture_output=True, text=True)
            if r.returncode != 0:
                sys.stderr.write(r.stderr[-4000:])
                raise SystemExit("graphsentry train failed")
            train_s = time.perf_counter() - t
            print(f"trained on {a.train_records} records in {train_s:.0f} s", flush=True)
        out: dict = {"records": a.records, "distinct_sources_drawn_from": n_src, "seconds": a.seconds,
                     "train_records": a.train_records if a.model is None else None, "model": a.model or "trained here",
                     "train_s": None if train_s is None else round(train_s, 1)}
        if a.skip != "score":
            scores = work / "scores.parquet"
            r = run_measured(exe + ["score", str(log), "--model", model, "--out", str(scores)], env, work / "score.log")
            import pyarrow.parquet as pq

            st = pq.read_table(scores, columns=["alert"])
            r["flagged_records"] = int(pc.sum(pc.cast(st.column("alert"), pa.int64())).as_py() or 0)
            out["score"] = r
        runs = [("serve", False, REPO), ("serve_follow", True, REPO)]
        if a.baseline:
            base = Path(a.baseline).resolve()
            runs.append(("serve_baseline", False, base))
            out["baseline_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=base, capture_output=True,
                                                    text=True).stdout.strip() or None
        for key, follow, code in runs:
            if a.skip == "serve" or (follow and not a.follow):
                continue
            db = work / f"alerts-{key}.db"
            db.unlink(missing_ok=True)  # a fresh alert store: no alert deduplicated against an earlier run
            conf = {"alerts": {"sinks": [{"type": "sqlite", "path": str(db)}]},
                    "metrics": {"enabled": False}, "model": {"watch": False}}
            if follow:  # tailing never ends by itself: stop after the log's records
                conf["pipeline"] = {"max_records": a.records}
            cfg = work / f"{key}.yaml"
            cfg.write_text(json.dumps(conf))
            summ = work / f"{key}-summary.json"
            r = run_measured(exe + ["serve", str(log), "--model", model, "--config", str(cfg), "--summary-json",
                                    str(summ)] + (["--follow"] if follow else []),
                             dict(env, PYTHONPATH=str(code)), work / f"{key}.log", cwd=code)
            s = json.loads(summ.read_text())
            r.update(flagged_records=s["flagged_records"], alerts=s["alerts"], records_scored=s["records_scored"],
                     late=s["late"], windows_scored=s["windows_scored"])
            out[key] = r
        for k in ("score", "serve", "serve_follow", "serve_baseline"):
            if k in out:
                r = out[k]
                r["records_per_s"] = round(a.records / r["wall_s"])
                r["cpu_s_per_record"] = r["cpu_s"] / a.records
                r["wall_s"], r["cpu_s"], r["peak_rss_mb"] = round(r["wall_s"], 2), round(r["cpu_s"], 2), round(r["peak_rss_mb"])
        for k in ("serve", "serve_follow", "serve_baseline"):
            if "score" in out and k in out:
                out[f"{k}_to_score"] = {
                    "wall": round(out[k]["wall_s"] / out["score"]["wall_s"], 2),
                    "cpu": round(out[k]["cpu_s"] / max(out["score"]["cpu_s"], 1e-9), 2),
                    "peak_rss": round(out[k]["peak_rss_mb"] / max(out["score"]["peak_rss_mb"], 1), 2),
                    "flagged_records_difference": out[k]["flagged_records"] - out["score"]["flagged_records"],
                }
        out.update(report_meta())
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
    finally:
        if tmpctx is not None:
            tmpctx.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest throughput on the LUFlow days in ../shared/data (~800k flows).

Prints, for the same files in the same run:

* ``csv``    -- bare ``pyarrow.csv`` read of the zipped CSVs (the floor: no normalisation);
* ``parse``  -- ``ingest.readers.open_inputs`` (parse + normalise to FLOW_SCHEMA);
* ``graphs`` -- file -> event-time windows -> PyG graph tensors (readers + windower +
  FlowPreprocessor + GraphBuilder), for a few window settings;

with records/s (wall and per CPU-second, since the machine may be shared), the ratio
against the bare CSV read, and peak RSS. Each stage runs in its own child process so
that its peak RSS is its own. Then ``read-ahead``: reading the later LUFlow days (from
2020.12.16: similar small files) serially vs with read-ahead (the next file read in a
background thread, ``open_inputs(read_ahead=...)``), alternating in one process, best of
``--repeat``. Skips (exit 0) with a message when the shared data is absent.

    .venv/bin/python benchmarks/ingest_bench.py [--files N] [--json OUT.json]
    .venv/bin/python benchmarks/ingest_bench.py --stages none --readahead-days 2,11 --repeat 15 --idle
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRAPHSENTRY_SHARED_DATA", REPO.parent / "shared" / "data"))
LUFLOW = SHARED / "flows" / "luflow"
# LUFlow day files are not in time order (flows lag up to ~22 h behind the newest one in
# the same file), so the watermark must allow a day of lateness or most flows are late.
LATENESS = 86400.0
GRAPH_CONFIGS = {
    "graphs-60s": dict(window=60.0, slide=None, node="ip"),
    "graphs-60s-slide30s": dict(window=60.0, slide=30.0, node="ip"),
    "graphs-10m": dict(window=600.0, slide=None, node="ip"),
    "graphs-10m-ipport": dict(window=600.0, slide=None, node="ipport"),
    # Windowing + graph building alone, from batches already in memory (no parsing).
    "mem:windows+graphs-60s": dict(window=60.0, slide=None, node="ip", in_memory=True),
    "mem:windows+graphs-10m": dict(window=600.0, slide=None, node="ip", in_memory=True),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def stage_csv(files: list[str]) -> dict:
    import zipfile

    import pyarrow.csv as pcsv

    n = 0
    for f in files:
        with zipfile.ZipFile(f) as z:
            for name in z.namelist():
                with z.open(name) as fh:  # decompress + parse, nothing else
                    n += pcsv.read_csv(fh).num_rows
    return {"records": n}


def stage_parse(files: list[str]) -> dict:
    from ingest.readers import open_inputs

    reader = open_inputs(files, format="auto")
    n = 0
    for b in reader:
        n += b.num_rows
    return {"records": n, "malformed": reader.stats.rows_malformed}


def stage_graphs(files: list[str], window: float, slide: float | None, node: str, in_memory: bool = False) -> dict:
    from ingest.features import FlowPreprocessor
    from ingest.graph import GraphBuilder, NodeIdMap
    from ingest.readers import open_inputs
    from ingest.windows import EventTimeWindower, Sliding, Tumbling

    # Fit the preprocessor on the first day only (training data), outside the timed part.
    pre = FlowPreprocessor().fit(open_inputs(files[:1], format="auto"))
    if in_memory:  # windows + graphs alone: read everything first, outside the timed part
        batches = list(open_inputs(files, format="auto"))
    t0, c0 = time.perf_counter(), time.process_time()
    reader = open_inputs(files, format="auto")
    source = batches if in_memory else reader
    win = EventTimeWindower(Sliding(window, slide) if slide else Tumbling(window), lateness=LATENESS)
    builder = GraphBuilder(node, preprocessor=pre, id_map=NodeIdMap(1_000_000))
    windows = edges = nodes = 0

    def consume(closed: list) -> None:
        nonlocal windows, edges, nodes
        for g in builder.build_many(closed):
            windows += 1
            # edge_index.size(1), not g.num_edges: PyG's property scans every attribute (~60 us)
            edges += g.edge_index.size(1)
            nodes += len(g.node_key)

    for b in source:
        consume(win.push(b))
        win.drain_late()
    consume(win.flush())
    return {
        "records": sum(b.num_rows for b in batches) if in_memory else reader.stats.rows_ok,
        "windows": windows,
        "graph_edges": edges,
        "graph_nodes": nodes,
        "late": win.stats.late,
        "edge_features": pre.num_features,
        "_t": (t0, c0),
    }


def wait_idle(limit_s: float = 60.0, idle: float = 0.9) -> bool:
    """Wait until the host's CPUs were >= ``idle`` idle over one second (others' jobs share our 2 cores)."""
    def times() -> list[int]:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:9]]
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        a = times()
        time.sleep(1.0)
        b = times()
        d = [y - x for x, y in zip(a, b)]
        if sum(d) and (d[3] + d[4]) / sum(d) >= idle:
            return True
    return False


def readahead_figure(files: list[str], days: list[int], repeat: int, ahead: list[int],
                     idle: bool = False) -> list[dict]:
    """Serial vs read-ahead reads of the first ``n`` of ``files`` for each n in ``days``: best of ``repeat``,
    the variants alternating within each round so that host noise hits them alike (``idle``: each round
    starts when the host is idle, if it gets so within a minute)."""
    from ingest.readers import open_inputs

    out = []
    for n in days:
        paths = files[:n]
        variants = [0] + ahead
        best = {v: (float("inf"), float("inf")) for v in variants}
        records = {}
        for _ in range(repeat):
            if idle and os.path.exists("/proc/stat"):
                wait_idle()
            for v in variants:
                t0, c0 = time.perf_counter(), time.process_time()
                reader = open_inputs(paths, format="auto", read_ahead=v)
                records[v] = sum(b.num_rows for b in reader)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if wall < best[v][0]:
                    best[v] = (wall, cpu)
        assert len(set(records.values())) == 1, records
        for v in variants:
            out.append({"days": n, "read_ahead": v, "records": records[v], "wall_s": best[v][0],
                        "cpu_s": best[v][1], "speedup": best[0][0] / best[v][0]})
    return out


def child(stage: str, files: list[str]) -> None:
    # Imports outside the timed part (torch alone takes seconds).
    import pyarrow.csv  # noqa: F401

    import ingest.readers  # noqa: F401

    if "graphs" in stage:
        import ingest.graph  # noqa: F401
    if stage == "read-ahead":
        args = json.loads(os.environ["INGEST_BENCH_RA"])
        later = [f for f in files if Path(f).name >= "2020.12.16"]  # similar-sized days
        print(json.dumps(readahead_figure(later, **args)))
        return
    t0, c0 = time.perf_counter(), time.process_time()
    if stage == "csv":
        out = stage_csv(files)
    elif stage == "parse":
        out = stage_parse(files)
    else:
        out = stage_graphs(files, **GRAPH_CONFIGS[stage])
        t0, c0 = out.pop("_t")
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=0, help="use only the first N day files (default all)")
    ap.add_argument("--stages", default="csv,parse," + ",".join(GRAPH_CONFIGS), help="comma-separated stages")
    ap.add_argument("--readahead-days", default="2,11",
                    help="day counts for the serial vs read-ahead figure (days from 2020.12.16; '' = skip)")
    ap.add_argument("--read-ahead", default="1,2", help="read_ahead values compared with serial (0)")
    ap.add_argument("--repeat", type=int, default=7, help="rounds for the read-ahead figure (best of)")
    ap.add_argument("--idle", action="store_true", help="start each read-ahead round when the host is idle")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    files = sorted(glob.glob(str(LUFLOW / "*.zip")))
    if args.files:
        files = files[: args.files]
    if args.child:
        child(args.child, files)
        return 0
    if not files:
        print(f"ingest_bench: skipped: no LUFlow days at {LUFLOW} (set GRAPHSENTRY_SHARED_DATA)")
        return 0
    print(f"ingest_bench: {len(files)} LUFlow day files, {sum(os.path.getsize(f) for f in files) / 1e6:.1f} MB zipped; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    for f in files:  # warm the page cache so the first stage is not penalised
        Path(f).read_bytes()
    results: dict[str, dict] = {}
    for stage in [s for s in args.stages.split(",") if s and s != "none"]:
        cmd = [sys.executable, __file__, "--child", stage] + (["--files", str(args.files)] if args.files else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(f"{stage}: FAILED\n{proc.stderr[-2000:]}")
            return 1
        results[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results.get("csv")
    if results:
        print(f"{'stage':<25}{'records':>10}{'wall s':>9}{'rec/s':>11}{'rec/cpu-s':>11}{'x csv':>8}{'peak RSS MB':>13}  notes")
    for stage, r in results.items():
        rate = r["records"] / r["wall_s"]
        cpu_rate = r["records"] / r["cpu_s"] if r["cpu_s"] > 0 else float("nan")
        ratio = (base["wall_s"] / r["wall_s"]) if base else float("nan")
        r.update(records_per_s=round(rate), records_per_cpu_s=round(cpu_rate), speed_vs_csv=round(ratio, 3))
        notes = ""
        if "windows" in r:
            notes = f"{r['windows']} windows, {r['graph_edges']} edges, {r['late']} late"
        elif "malformed" in r:
            notes = f"{r['malformed']} malformed"
        print(f"{stage:<25}{r['records']:>10}{r['wall_s']:>9.2f}{rate:>11,.0f}{cpu_rate:>11,.0f}{ratio:>8.2f}"
              f"{r['peak_rss_mb']:>13.0f}  {notes}")
    if results:
        print("x csv = bare pyarrow.csv wall time / stage wall time (1.0 = as fast as the bare read).")
        print("Goals (2 cores): parse >= 300k rec/s, graphs >= 150k rec/s, peak RSS < 2048 MB.")
    days = [int(d) for d in args.readahead_days.split(",") if d]
    later = [f for f in sorted(glob.glob(str(LUFLOW / "*.zip"))) if Path(f).name >= "2020.12.16"]
    if days and later:
        ra = {"days": [d for d in days if d <= len(later)], "repeat": args.repeat,
              "ahead": [int(v) for v in args.read_ahead.split(",") if v], "idle": args.idle}
        env = dict(os.environ, INGEST_BENCH_RA=json.dumps(ra))
        proc = subprocess.run([sys.executable, __file__, "--child", "read-ahead"], capture_output=True, text=True,
                              cwd=REPO, env=env)
        if proc.returncode != 0:
            print(f"read-ahead: FAILED\n{proc.stderr[-2000:]}")
            return 1
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        results["read-ahead"] = {"rows": rows, **ra}
        print(f"\nread-ahead: LUFlow days from 2020.12.16, serial (0) vs read-ahead, alternating, "
              f"best of {args.repeat}{' idle-host rounds' if args.idle else ''}; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'days':>5}{'records':>10}{'read_ahead':>12}{'wall s':>9}{'cpu s':>8}{'speedup':>9}")
        for r in rows:
            print(f"{r['days']:>5}{r['records']:>10}{r['read_ahead']:>12}{r['wall_s']:>9.3f}{r['cpu_s']:>8.3f}"
                  f"{r['speedup']:>9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

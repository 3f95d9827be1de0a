"""Training benchmark: pretraining epoch time, 1 process vs 2 processes (torchrun, gloo), on the same data in one run.

    .venv/bin/python benchmarks/train_bench.py                 # bundled Stratosphere samples (samples/stratosphere/full)
    .venv/bin/python benchmarks/train_bench.py --luflow        # LUFlow's first day from ../shared/data/flows/luflow

Three `graphsentry train` runs on the same inputs and options, one after the other: 1 process x 1 torch thread,
`--nproc 2` (2 ranks x 1 thread), and 1 process x 2 threads (skipped with --no-threads-run). The epoch time is the one the model directory records
(`metrics.epoch_seconds`, rank 0's clock; the median over the epochs), so the torchrun start, reading and preparing
the inputs and fitting the detectors are left out of it; the wall time of each command is reported beside it.
Prints the cores, the times, the ratios and an extrapolation to N ranks (what it assumes is written next to it) and
writes reports/train_bench.json.

Note: the 2-rank run is the sharded algorithm (training/distributed.py): the same windows per epoch, fewer optimizer
steps, each on several windows. The epoch does the same forward/backward work, which is what is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples" / "stratosphere" / "full").glob("*.labeled.gz"))
LUFLOW_DAY = ROOT.parent / "shared" / "data" / "flows" / "luflow" / "2020.07.08.zip"


def _train(inputs: list[str], out: Path, opts: list[str], threads: int, nproc: int,
           timeout: float | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GRAPHSENTRY_DIST_FAIL_RANK"}
    env.update(GRAPHSENTRY_TORCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "training.cli", "train", *inputs, "--out", str(out), *opts]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"processes": nproc, "threads_per_process": threads, "timed_out_after_s": timeout,
                "loadavg_1m_before": round(load, 2)}
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    m = json.loads((out / "config.json").read_text())["metrics"]
    ep = m["epoch_seconds"]
    return {"processes": nproc, "threads_per_process": threads, "epoch_seconds": ep,
            "epoch_seconds_median": statistics.median(ep), "pretrain_seconds": m["pretrain_seconds"],
            "command_wall_seconds": round(wall, 2), "loadavg_1m_before": round(load, 2),
            "train_windows": m["train_windows"], "train_flows": m["train_flows"], "records_in": m["records_in"],
            "layout": (m["history"][-1].get("distributed") or {}) if m["history"] else {}}


def extrapolate(speedup_2: float, ns=(2, 4, 8, 16)) -> dict:
    """Amdahl fit through the measured 2-rank speed-up: ``S(N) = 1 / ((1 - p) + p / N)``, ``p = 2 (1 - 1/S2)``."""
    p = min(max(2.0 * (1.0 - 1.0 / speedup_2), 0.0), 1.0)
    return {"parallel_fraction_p": round(p, 3),
            "speedup": {str(n): round(1.0 / ((1.0 - p) + p / n), 2) for n in ns},
            "assumes": ("one free core per rank (this host has the cores printed beside it, shared with other "
                        "work); the part that did not parallelise at 2 ranks (lockstep waits on the larger window "
                        "of a step, the per-step all-reduce of the ~100k-parameter gradient, Python overhead) stays "
                        "the same fraction at N ranks; each rank's run keeps many windows (a rank needs >= 1 window "
                        "per step, so N <= windows); the data fits each rank's memory (every rank receives only its "
                        "shard, rank 0 still prepares all windows). Across hosts, add the network's all-reduce time "
                        "per step. Not measured beyond 2 ranks."),
            "note": ("the sharded algorithm takes fewer optimizer steps per epoch (the shortest run's window "
                     "count), each on several windows: an equal epoch time is not an equal model; more epochs "
                     "may be needed at large N")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--luflow", action="store_true", help=f"LUFlow's first day ({LUFLOW_DAY.name}) instead of the "
                                                          "bundled samples")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--window", default="60s")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "train_bench.json")
    ap.add_argument("--no-threads-run", action="store_true",
                    help="skip the 1 process x 2 threads run (on a host shared with other jobs, 2 OpenMP threads "
                         "can be descheduled in turn and take many times longer)")
    a = ap.parse_args(argv)
    if a.luflow:
        if not LUFLOW_DAY.is_file():
            raise SystemExit(f"{LUFLOW_DAY} not found (the shared LUFlow data)")
        inputs, source = [str(LUFLOW_DAY)], f"LUFlow {LUFLOW_DAY.name}"
    else:
        inputs, source = [str(p) for p in SAMPLES], "bundled samples: " + ", ".join(p.name for p in SAMPLES)
    # one objective, detector and input: the three runs differ only in processes/threads
    opts = ["--benign-only", "--epochs", str(a.epochs), "--window", a.window, "--objective", "contrastive",
            "--detector", "iforest", "--flow-parts", "src,dst,edge", "--no-progress"]
    cores = os.cpu_count()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    runs = {}
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        plan = [("1proc_1thread", 1, 1), ("2proc_1thread", 1, 2)] + ([] if a.no_threads_run else
                                                                       [("1proc_2threads", 2, 1)])
        for name, threads, nproc in plan:
            # the threads run is the optional one: bounded (4x the 1-thread command) so it cannot stall the bench
            limit = 4 * runs["1proc_1thread"]["command_wall_seconds"] if threads > 1 else None
            runs[name] = _train(inputs, Path(tmp) / name, opts, threads, nproc, limit)
            if "timed_out_after_s" in runs[name]:
                print(f"{name}: stopped after {limit:.0f} s", flush=True)
                continue
            print(f"{name}: epoch {runs[name]['epoch_seconds_median']:.2f} s (median of {a.epochs}), command "
                  f"{runs[name]['command_wall_seconds']:.1f} s", flush=True)
    t1, t2 = (runs[k]["epoch_seconds_median"] for k in ("1proc_1thread", "2proc_1thread"))
    t1b = runs.get("1proc_2threads", {}).get("epoch_seconds_median", float("nan"))
    s2 = t1 / t2
    rep = {
        "data": source, "records": runs["1proc_1thread"]["records_in"],
        "train_windows": runs["1proc_1thread"]["train_windows"], "options": opts,
        "cores": cores, "cores_usable": affinity, "cpu": platform.processor() or platform.machine(),
        "host_shared": "yes: other jobs ran on the same cores (see loadavg_1m_before per run)",
        "runs": runs,
        "ratio_epoch_1proc_1thread_over_2proc": round(s2, 3),
        "ratio_epoch_1proc_2threads_over_2proc": round(t1b / t2, 3) if t1b == t1b else None,
        "extrapolation": extrapolate(s2),
        "command": "python benchmarks/train_bench.py" + (" --luflow" if a.luflow else "") +
                   (" --no-threads-run" if a.no_threads_run else ""),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from training.report_meta import report_meta

    rep.update(report_meta())  # commit, date and cores of the code that measured
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rep, indent=2) + "\n")
    print(f"cores: {cores} (usable {affinity}); epoch 1 process x 1 thread {t1:.2f} s, 1 process x 2 threads "
          f"{t1b:.2f} s, 2 processes x 1 thread {t2:.2f} s; ratio 1proc/2proc {s2:.2f}x (vs 2 threads "
          f"{t1b / t2:.2f}x)")
    ex = rep["extrapolation"]
    print(f"extrapolated speed-up (Amdahl, p={ex['parallel_fraction_p']}): " +
          ", ".join(f"{n} ranks {v}x" for n, v in ex["speedup"].items()) + f" -- assumes {ex['assumes']}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

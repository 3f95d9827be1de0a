"""Running the benchmark: every selected split built and evaluated, one JSON per split written, the report
rendered; and its command line (``python -m training.eval_suites generalise``).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

from training.generalise.methods import METHODS, evaluate
from training.generalise.provenance import _dirty, _torch_threads, _versions, git_head
from training.generalise.report import render
from training.generalise.splits import DATA, build, select, split_specs

log = logging.getLogger(__name__)


def run(out: Path, patterns: str | None = None, max_train: int = 150_000, max_test: int = 100_000,
        epochs: int = 1, seed: int = 0, data: Path = DATA, methods=METHODS, window: float | None = None) -> dict:
    """Evaluate the selected splits, one JSON per split under ``out/splits``, then :func:`render`."""
    from training.pretrain import TrainConfig

    cfg = TrainConfig(benign_only=True, epochs=epochs, seed=seed)   # the `graphsentry train --benign-only` defaults
    if window is not None:
        cfg = replace(cfg, window=window)
    specs = select(split_specs(Path(data)), patterns)
    if not specs:
        raise SystemExit(f"no split matches {patterns!r} under {data}")
    d = Path(out) / "splits"
    d.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    run_meta = {"commit": git_head(), "uncommitted_code": _dirty(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "cores": os.cpu_count(), "torch_threads": _torch_threads(),
                "machine": os.environ.get("GENERALISE_MACHINE") or platform.node(),
                "caps": {"max_train": max_train, "max_test": max_test,
                         "sampling": "even stride over the time-sorted records (never random rows)"},
                "config": asdict(cfg), "methods": list(methods), "seed": seed, "epochs": epochs,
                "versions": _versions()}
    for spec in specs:
        print(f"== {spec.name}", flush=True)
        t0 = time.perf_counter()
        try:
            split = build(spec, max_train, max_test)
            rep = evaluate(split, cfg, methods, cache)
        except Exception as e:  # noqa: BLE001 -- one failed split must not lose the others; it is reported
            log.exception("split %s failed", spec.name)
            rep = {"split": spec.name, "group": spec.group, "held_out": spec.held_out, "notes": spec.notes,
                   "error": f"{type(e).__name__}: {e}", "results": {}, "seconds": round(time.perf_counter() - t0, 1)}
        rep["run"] = run_meta
        (d / f"{spec.name.replace('/', '__')}.json").write_text(json.dumps(rep, indent=2, default=str))
        render(Path(out))
    return render(Path(out))


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.eval_suites generalise",
                                 description="Leave-one-network-out development benchmark")
    add_arguments(ap)
    return run_args(ap.parse_args(argv))


def add_arguments(ap) -> None:
    ap.add_argument("--out", default="reports/generalise")
    ap.add_argument("--splits", default=None, help="comma-separated name patterns, e.g. 'iot23/*Malware-8*,"
                                                   "stratosphere,luflow' (default: all)")
    ap.add_argument("--max-train", type=int, default=150_000, help="cap on training records (even time stride)")
    ap.add_argument("--max-test", type=int, default=100_000, help="cap on test records (even time stride)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DATA), help="the shared flows folder")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--list", action="store_true", help="print the split names and exit")
    ap.add_argument("--render-only", action="store_true", help="re-render report.{json,md} from OUT/splits")


def run_args(a) -> int:
    if a.list:
        for s in select(split_specs(Path(a.data)), a.splits):
            print(s.name)
        return 0
    if a.render_only:
        render(Path(a.out))
        return 0
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown methods {bad}; choose from {list(METHODS)}")
    run(Path(a.out), a.splits, a.max_train, a.max_test, a.epochs, a.seed, Path(a.data), methods)
    print(f"report written to {a.out}/report.md")
    return 0

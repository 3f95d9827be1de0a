"""Seconds per stage of scoring one large window and building its findings, with the real default model.

Issue 20's latency goal (p99 event -> alert <= window + 2 s with 5 s windows and 1 s lateness) leaves about
one second for everything after a window closes: ``StreamScorer.score_window`` and the alert build
(``AlertStage.build``: findings, explanations). This measures both, stage by stage, on consecutive windows
of ``--records`` flows (the scorer keeps node memory and behaviour state across them), in one process on
this machine's cores, after :func:`detector.scoring.warm_up` as the daemon runs it:

* ``graph_features``: the window's graph and knowledge block joined into the model inputs
  (``GraphStream.build``), of which ``graph`` (``GraphBuilder.build``) and ``knowledge``
  (``KnowledgeFeaturizer.transform``); ``behaviour``: the long-horizon behaviour state fed;
* ``gnn``: the STGNN (encoder, memory step, flow blocks); ``detector``: the embedding detector;
* ``fusion``: the technique channel fused into the scores, node scores and top techniques (``_finish``);
* ``alert_build``: the findings less their explanations; ``explanations``: ``explain`` of each finding's
  best record; ``score_total`` / ``build_total``: the two calls end to end.

Per stage the median and the maximum over the windows, in wall-clock seconds [stages] and in CPU seconds of
the process, all its threads [stages_cpu] (on a shared machine the CPU figures move less with the other
load, recorded in [load_average]); per window the flagged records and findings [windows]. The model is ``graphsentry train``'s defaults trained on the bench generator's
traffic from before the scored windows (``serve_bench``'s ``train_default_model``), or ``--model DIR``.
Figures land in reports/window_bench.json.

    .venv/bin/python benchmarks/window_bench.py                 # trains the model here (~30-90 s)
    .venv/bin/python benchmarks/window_bench.py --model DIR --windows 8
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

try:  # the serve benchmarks' generator and model (moved to serve_common; serve_bench re-exports them)
    from serve_common import gen_flows, train_default_model  # noqa: E402
except ImportError:  # pragma: no cover - an older layout
    from serve_bench import gen_flows, train_default_model  # noqa: E402

T0 = 1_700_000_000.0  # the scored windows' start (the model trains on traffic two hours before)
STAGES = ("graph_features", "graph", "knowledge", "behaviour", "gnn", "detector", "fusion", "score_total",
          "alert_build", "explanations", "build_total")


class _Timer:
    """Wall and CPU seconds of calls to wrapped callables, per stage, for the window being measured (CPU: the
    process's, all threads; the stages run one after the other, so each stage's own, its threads included)."""

    def __init__(self) -> None:
        self.now: dict[str, float] = defaultdict(float)

    def wrap(self, obj, name: str, stage: str) -> None:
        """Replace ``obj.name`` (an instance attribute shadowing the method) by a timed call of it."""
        fn = getattr(obj, name)

        def timed(*a, **kw):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                self.now[stage] += time.perf_counter() - t
                self.now[stage + "_cpu"] += time.process_time() - c

        setattr(obj, name, timed)

    def take(self) -> dict[str, float]:
        out, self.now = dict(self.now), defaultdict(float)
        return out


def instrument(scorer, timer: _Timer) -> None:
    """Time the scorer's stages through its own objects (nothing else changes: same calls, same order)."""
    stream = scorer.stream
    timer.wrap(stream, "build", "graph_features")
    timer.wrap(stream.builder, "build", "graph")
    if stream.kf is not None:
        timer.wrap(stream.kf, "transform", "knowledge")
    timer.wrap(scorer, "_behave", "behaviour")
    for name in ("embed_rows", "embed"):  # score_window calls one of them, per detector
        if hasattr(scorer.model, name):
            timer.wrap(scorer.model, name, "gnn")
    timer.wrap(scorer.bundle.detector, "decision_function", "detector")
    timer.wrap(scorer, "_finish", "fusion")


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "max": round(max(values), 4)}


def run(model_dir: str, n_windows: int, records: int, seconds: float) -> dict:
    from detector.alerts.stage import AlertStage
    from detector.daemon import default_loader
    from detector.daemon.config import load_config
    from ingest.windows import Window

    t = time.perf_counter()
    model = default_loader(model_dir)
    load_s = time.perf_counter() - t
    warm = getattr(model.scorer, "warm_up", None)  # (absent from code before it: measured without)
    warm_s = warm() if warm is not None else None
    cfg = load_config(overrides={"source": {"type": "kafka"}, "kafka": {"bootstrap": "127.0.0.1:1", "topic": "t"}},
                      env={})
    stage = AlertStage.from_config(cfg["alerts"])
    timer = _Timer()
    instrument(model.scorer, timer)
    rate = records / seconds
    per_window = []
    for i in range(n_windows):
        start = T0 + i * seconds
        window = Window(start, start + seconds, gen_flows(records, start, rate, seed=100 + i))
        timer.take()
        c0, t0 = time.process_time(), time.perf_counter()
        ws = model.scorer.score_window(window)
        t1, c1 = time.perf_counter(), time.process_time()
        stages = timer.take()
        explain = ws.explain
        if explain is not None:
            ws.explain = lambda k, f=explain: _timed(f, k, timer)
        wa = stage.build(window, ws, model_version=model.version, threshold=model.threshold,
                         ref_rows=np.arange(records), explain=model.explain)
        t2, c2 = time.perf_counter(), time.process_time()
        ex = timer.take()
        expl, expl_cpu = ex.get("explanations", 0.0), ex.get("explanations_cpu", 0.0)
        stages.update(score_total=t1 - t0, score_total_cpu=c1 - c0, build_total=t2 - t1, build_total_cpu=c2 - c1,
                      explanations=expl, explanations_cpu=expl_cpu, alert_build=t2 - t1 - expl,
                      alert_build_cpu=c2 - c1 - expl_cpu)
        per_window.append({"records": records, "flagged": int(wa.flagged), "alerts": len(wa.alerts),
                           **{k: round(stages.get(k, 0.0), 4) for k in STAGES},
                           "cpu": {k: round(stages.get(k + "_cpu", 0.0), 4) for k in STAGES}})
        print(f"window {i}: score {t1 - t0:.3f} s (cpu {c1 - c0:.3f}), build {t2 - t1:.3f} s (cpu {c2 - c1:.3f}), "
              f"flagged {wa.flagged}, findings {len(wa.alerts)}", flush=True)
    return {"load_s": round(load_s, 3), "warm_up_s": None if warm_s is None else round(warm_s, 3),
            "windows": per_window,
            "stages": {k: summary([w[k] for w in per_window]) for k in STAGES},
            "stages_cpu": {k: summary([w["cpu"][k] for w in per_window]) for k in STAGES},
            "first_window": {k: per_window[0][k] for k in ("score_total", "build_total")},
            "later_windows": {k: summary([w[k] for w in per_window[1:]]) for k in ("score_total", "build_total")}
            if len(per_window) > 1 else None}


def _timed(fn, k, timer: _Timer):
    t, c = time.perf_counter(), time.process_time()
    try:
        return fn(k)
    finally:
        timer.now["explanations"] += time.perf_counter() - t
        timer.now["explanations_cpu"] += time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=6, help="consecutive windows scored (default 6)")
    ap.add_argument("--records", type=int, default=50000, help="flows per window (default 50000: 10k/s, 5 s)")
    ap.add_argument("--window-seconds", type=float, default=5.0)
    ap.add_argument("--model", help="a model directory (default: train the default model here)")
    ap.add_argument("--out", default=str(REPO / "reports" / "window_bench.json"))
    args = ap.parse_args()
    if args.windows < 1 or args.records < 1 or not args.window_seconds > 0:
        print("window_bench: --windows and --records must be >= 1, --window-seconds > 0", file=sys.stderr)
        return 2
    from training.report_meta import report_meta

    with tempfile.TemporaryDirectory() as td:
        t = time.perf_counter()
        model_dir = args.model or train_default_model(Path(td), T0, args.records / args.window_seconds)
        train_s = time.perf_counter() - t
        result = run(model_dir, args.windows, args.records, args.window_seconds)
    result = {**report_meta(), "load_average": [round(x, 2) for x in os.getloadavg()],
              "model": args.model or "graphsentry train defaults on the bench generator before the windows",
              "train_s": None if args.model else round(train_s, 1), "records_per_window": args.records,
              "window_seconds": args.window_seconds, **result}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'stage':16s} {'median s':>9s} {'max s':>8s} {'cpu median':>11s} {'cpu max':>8s}")
    for k, v in result["stages"].items():
        c = result["stages_cpu"][k]
        print(f"{k:16s} {v['median']:9.4f} {v['max']:8.4f} {c['median']:11.4f} {c['max']:8.4f}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

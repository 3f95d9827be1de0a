"""`graphsentry retrain`: train a challenger on the recent archive, gate it against the champion, register it.

One run (docs/retraining.md, section "Retraining job"):

1. read the archive since ``--since`` in bounded memory (:mod:`training.retrain_data`: a first pass counts
   the records per time window, the range is cut in time -- the latest ``holdout_frac`` of the records,
   cut on a window boundary, is held out, neither model saw it -- and a second pass reads each side,
   whole event-time blocks spread evenly over it when it holds more than its cap), with the triage
   verdicts of ``--verdicts`` (``ingest.verdicts``);
2. training part: records the champion alerted on leave (unless an analyst cleared them: verdict
   ``benign``), and so do records with verdict ``malicious`` or label 1;
3. train the challenger (``training.pretrain.train_bundle``, the champion's train config with the
   ``train:`` overrides of ``--config``; ``--nproc N``: pretraining on N processes under torchrun,
   :mod:`training.retrain_worker`): encoder, detector and calibration;
4. score the held-out slice (and the ``--eval`` inputs) with both models, measure their scoring speed,
   apply the gate (:mod:`training.gate`);
5. register the challenger (parent = champion, data time range and sample, metrics, gate decision)
   and promote it when the gate passed (unless ``--no-promote``); refused, it becomes the ``challenger``.

Everything up to step 5 happens in a work folder (``REGISTRY/.retrain-tmp/<run id>``) whose owner holds an
exclusive lock on its ``.owner`` file; the registry is only written at the end, so a failed, refused or
interrupted (even SIGKILLed) run never changes the champion, and the next run removes the work folders
whose lock nobody holds. A report (``report.md``, ``report.json``, ``pr-*.png`` / ``roc-*.png``;
:mod:`training.retrain_report`) goes to ``--report-dir`` (default ``REGISTRY/reports/<run id>/``); job
metrics go to a Pushgateway with ``--pushgateway``.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.gate import EVAL, HOLDOUT, EvalSet, ModelEval, gate
from training.retrain_config import RetrainConfig, load_config, train_fields
from training.retrain_data import labels_of, read_recent, training_selection, ts_seconds
from training.retrain_report import JOB, curves, job_metrics, push, write_report

log = logging.getLogger(__name__)

WORK = ".retrain-tmp"
OWNER = ".owner"
STALE_UNLOCKED_S = 600.0   # a work folder without an owner file this old is a run killed while creating it


@dataclass
class RetrainOptions:
    archive: str
    registry: str
    since: str | None = None
    until: str | None = None
    config: str | None = None
    eval: list[str] = field(default_factory=list)
    verdicts: str | None = None
    from_scratch: bool = False
    no_promote: bool = False
    report_dir: str | None = None
    pushgateway: str | None = None
    progress: bool = True
    now: float | None = None          # "now" for --since durations (tests)


class Progress:
    """Stage lines on stderr (stdout keeps the one JSON summary)."""

    def __init__(self, on: bool) -> None:
        self.on, self.t0 = on, time.monotonic()

    def __call__(self, msg: str) -> None:
        log.info(msg)
        if self.on:
            print(f"[retrain {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{uuid.uuid4().hex[:6]}"


def _iso(s: float | None) -> str | None:
    return None if s is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))


# -- the work folder: owned under a lock, removed by the next run when its owner is gone ----------------


@contextlib.contextmanager
def work_folder(root: Path, run_id: str):
    """``REGISTRY/.retrain-tmp/<run id>``, its ``.owner`` file locked (flock) for the run; removed at the end.
    A run killed with SIGKILL leaves it; the lock goes with the process, and :func:`clean_stale_work` of the
    next run removes it (a lock, unlike a pid, also tells across containers sharing the registry)."""
    d = root / WORK / run_id
    d.mkdir(parents=True)
    fd = os.open(d / OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
        os.close(fd)


def _owned(d: Path) -> bool:
    """A run holds ``d``'s owner lock (or created ``d`` a moment ago and is about to)."""
    try:
        fd = os.open(d / OWNER, os.O_RDWR)
    except FileNotFoundError:
        try:
            return time.time() - d.stat().st_mtime < STALE_UNLOCKED_S
        except FileNotFoundError:
            return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)   # releases the lock if we took it
    return False


def clean_stale_work(root: Path) -> list[str]:
    """Remove the work folders of earlier runs that no process owns any more (a run killed mid-way)."""
    d = root / WORK
    removed = []
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if p.is_dir() and not _owned(p):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


# -- scoring and evaluation -----------------------------------------------------------------------------


def _flows(table: pa.Table) -> pa.Table:
    from ingest.schema import FLOW_SCHEMA

    return table.select(FLOW_SCHEMA.names).cast(FLOW_SCHEMA)


def _score(bundle, table: pa.Table) -> np.ndarray:
    from detector.scoring import score_table

    out = score_table(bundle, _flows(table))
    return np.asarray(out.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)


def _speed(bundles: dict, table: pa.Table, n: int, repeats: int) -> dict[str, float]:
    """Records per CPU second of each bundle on the first ``n`` records, the fastest of ``repeats`` runs,
    interleaved. CPU time of this process (all its threads), not wall time: on a machine shared with other
    work, wall time measures the neighbours as much as the model."""
    from detector.scoring import score_table

    sub = _flows(table.slice(0, n))
    best = {k: float("inf") for k in bundles}
    for _ in range(repeats):
        for k, b in bundles.items():
            t0 = time.process_time()
            score_table(b, sub)
            best[k] = min(best[k], time.process_time() - t0)
    return {k: sub.num_rows / v if v > 0 else None for k, v in best.items()}


def _eval_set(name: str, table: pa.Table, scores: np.ndarray, window_s: float, hours: float | None = None) -> EvalSet:
    """``hours``: the event time the records cover (default: their span, rounded out to a window)."""
    ts = ts_seconds(table)
    if hours is None:
        hours = (float(ts.max() - ts.min()) + window_s) / 3600.0 if len(ts) else 0.0
    attack = np.asarray(table.column("attack").to_pylist(), dtype=object) if "attack" in table.column_names \
        else np.full(table.num_rows, None, dtype=object)
    return EvalSet(name, scores, labels_of(table), np.floor(ts / window_s).astype(np.int64), hours,
                   {"attack": attack})


def _warm_start(champion, tcfg, from_scratch: bool) -> tuple[dict | None, dict]:
    """The champion's weights when the architecture matches (train_bundle's ``init_state``)."""
    if from_scratch:
        return None, {"used": False, "why": "--from-scratch"}
    m = champion.model.config
    same = all(getattr(m, k, None) == getattr(tcfg, k) for k in ("hidden", "layers", "time_dim", "temporal", "use_time"))
    if not same:
        return None, {"used": False, "why": "the champion's architecture differs from the train config: "
                                            "trained from scratch"}
    state = champion.model.state_dict()
    return state, {"used": True, "why": "weights of the champion loaded before pretraining", "of": len(state)}


def _read_eval(paths: list[str]) -> pa.Table:
    from training.commands import read_table

    et, _ = read_table(list(paths))
    et = et.take(pc.sort_indices(et, sort_keys=[("ts", "ascending")]))
    return et.set_column(et.schema.get_field_index("row"), "row", pa.array(np.arange(et.num_rows), pa.int64()))


def _span(table: pa.Table) -> tuple[str | None, str | None]:
    if not table.num_rows:
        return None, None
    ts = ts_seconds(table)
    return _iso(float(ts.min())), _iso(float(ts.max()))


def run(opts: RetrainOptions) -> dict:
    """One retraining run; returns the summary (also in the report). Raises on failure, after writing a
    failure report and pushing failure metrics; the registry is then unchanged."""
    t0 = time.time()
    say = Progress(opts.progress)
    run_id = _run_id()
    cfg = load_config(opts.config)
    root = Path(opts.registry)
    summary: dict[str, Any] = {"run_id": run_id, "status": "failed", "started": _iso(t0)}
    report_dir = Path(opts.report_dir) if opts.report_dir else root / "reports" / run_id
    try:
        from training.registry import Registry, RegistryError

        reg = Registry(root)
        champion_v = reg.alias("champion") if reg.versions_dir.is_dir() else None
        if champion_v is None:
            raise RegistryError(f"{root} has no champion to retrain from: register and promote a first model "
                                f"(graphsentry models register MODEL_DIR --registry {root} --promote)")
        stale = clean_stale_work(root)
        if stale:
            say(f"removed {len(stale)} work folder(s) of interrupted runs: {', '.join(stale)}")
        summary["champion"] = champion_v
        with work_folder(root, run_id) as work:
            _run(opts, cfg, reg, champion_v, work, run_id, summary, say)
        summary["duration_seconds"] = round(time.time() - t0, 2)
        summary["report_dir"] = str(report_dir)
        write_report(summary, summary.pop("_curves", {}), report_dir)
        push(opts.pushgateway, ok=True, summary=summary, duration=time.time() - t0, say=say)
        return summary
    except BaseException as exc:
        summary.pop("_curves", None)
        summary.update({"status": "failed", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                        "duration_seconds": round(time.time() - t0, 2), "report_dir": str(report_dir)})
        with contextlib.suppress(Exception):
            write_report(summary, {}, report_dir)
        with contextlib.suppress(Exception):
            push(opts.pushgateway, ok=False, summary=summary, duration=time.time() - t0, say=say)
        raise


def _run(opts: RetrainOptions, cfg: RetrainConfig, reg, champion_v: str, work: Path, run_id: str, summary: dict,
         say: Progress) -> None:
    from detector.bundle import load_bundle
    from ingest.windows import parse_duration
    from training.pretrain import TrainConfig, train_bundle

    champion = load_bundle(reg.resolve(champion_v))
    if getattr(champion, "kind", "flows") != "flows":
        raise ValueError(f"champion {champion_v} is a {champion.kind!r} model: graphsentry retrain handles flow models")
    window_s = float((champion.window or {}).get("size", 60.0))
    since = opts.since or cfg.since
    until = opts.until or cfg.until
    say(f"champion {champion_v}; reading {opts.archive} since {since}")
    early, later, plan, data_info = read_recent(
        opts.archive, since, until, opts.verdicts, window_s=window_s, holdout_frac=cfg.holdout_frac,
        max_train=cfg.max_train_records, max_holdout=cfg.max_holdout_records,
        block_s=parse_duration(cfg.sample_block), now=opts.now, say=say)
    train_t, sel = training_selection(early)
    train_from, train_to = _span(train_t.filter(pc.fill_null(pc.not_equal(train_t.column("label"), 1), True)))
    say(f"split at {_iso(plan.cut)}: {early.num_rows} earlier records read ({sel['kept']} kept for training: "
        f"{sel['excluded_alerted_by_champion']} alerted, {sel['excluded_malicious']} malicious left out), "
        f"{later.num_rows} held-out records read")
    if sel["kept"] < cfg.min_train_records:
        raise ValueError(f"only {sel['kept']} training records after excluding alerted and malicious ones "
                         f"(min_train_records {cfg.min_train_records}): widen --since")
    base = {k: v for k, v in (champion.extra.get("train_config") or {}).items() if k in train_fields()}
    base.update(cfg.train)
    base["benign_only"] = True
    tcfg = TrainConfig(**base)
    init, warm = _warm_start(champion, tcfg, opts.from_scratch)
    say(f"training the challenger on {sel['kept']} records ({'warm start' if init is not None else 'from scratch'})")
    kwargs = {"init_state": init} if init is not None else {}
    meta = {"retrain": {"run_id": run_id, "parent": champion_v, "archive": data_info["archive"]}}
    with contextlib.redirect_stdout(sys.stderr):   # train_bundle prints epoch lines: progress, not output
        challenger = train_bundle([_flows(train_t)], tcfg, out_dir=work / "challenger", progress=opts.progress,
                                  extra_meta=meta, **kwargs)
    del train_t
    if init is not None:   # how many of the champion's tensors matched the challenger's shapes
        warm["loaded"] = int((challenger.metrics.get("warm_start") or {}).get("loaded", 0))
    say(f"challenger: {challenger.detector_name}, threshold {challenger.threshold:.6g}")
    ev_champ: dict[str, EvalSet] = {}
    ev_chall: dict[str, EvalSet] = {}
    tables: dict[str, pa.Table] = {}
    if later.num_rows:
        tables[HOLDOUT] = later
    if opts.eval:
        tables[EVAL] = _read_eval(opts.eval)
    for name, t in tables.items():
        say(f"scoring {name} ({t.num_rows} records) with champion and challenger")
        hours = plan.hours("holdout") if name == HOLDOUT else None
        ev_champ[name] = _eval_set(name, t, _score(champion, t), window_s, hours)
        ev_chall[name] = _eval_set(name, t, _score(challenger, t), window_s, hours)
    speed_t = tables.get(HOLDOUT, tables.get(EVAL))
    rps = {"champion": None, "challenger": None}
    if speed_t is not None:
        say(f"timing scoring speed ({min(cfg.speed_records, speed_t.num_rows)} records x {cfg.speed_repeats})")
        rps = _speed({"champion": champion, "challenger": challenger}, speed_t, cfg.speed_records, cfg.speed_repeats)
    a = ModelEval(champion_v, champion.threshold, ev_champ, rps["champion"], champion.calibration.target_fpr)
    b = ModelEval("challenger", challenger.threshold, ev_chall, rps["challenger"], challenger.calibration.target_fpr)
    result = gate(a, b, cfg.gate)
    say(f"gate: {result.decision}" + (f" ({'; '.join(result.reasons)})" if result.reasons else ""))
    holdout_from, holdout_to = _span(later)
    summary.update({
        "status": "done", "decision": result.decision, "gate_passed": result.passed, "reasons": result.reasons,
        "data": {**data_info, "cut": _iso(plan.cut), "train_from": train_from, "train_to": train_to,
                 "holdout_records": later.num_rows, "holdout_from": holdout_from, "holdout_to": holdout_to,
                 "training_selection": sel, "eval_inputs": list(opts.eval),
                 "eval_records": tables[EVAL].num_rows if EVAL in tables else 0},
        "warm_start": warm, "train_config": asdict(tcfg),
        "challenger": {"detector": challenger.detector_name, "threshold": challenger.threshold,
                       "target_fpr": challenger.calibration.target_fpr,
                       "train_seconds": challenger.metrics.get("total_seconds"),
                       "distributed": _distributed_of(challenger)},
        "gate": result.to_dict(), "config": cfg.model_dump(),
        "_curves": curves(ev_champ, ev_chall),
    })
    # -- the registry is written only from here on ----------------------------------------------------------
    gate_meta = {**result.to_dict(), "run_id": run_id}
    metrics = {"retrain": {c.name + (f"_{c.data}" if c.data else ""): c.values for c in result.checks}}
    version = reg.register(work / "challenger", {
        "parent": champion_v,
        "data": {"from": train_from, "to": train_to, "archive": data_info["archive"], "holdout_from": holdout_from,
                 "holdout_to": holdout_to, "sample": data_info["sample"], "training_selection": sel},
        "metrics": metrics, "gate": gate_meta, "retrain_run": run_id}, reason=f"retrain {run_id}")
    summary["version"] = version
    promoted = False
    if result.passed and cfg.promote and not opts.no_promote:
        if reg.alias("champion") != champion_v:
            summary["note"] = (f"not promoted: the champion changed during the run ({champion_v} -> "
                               f"{reg.alias('champion')}); promote {version} by hand if wanted")
        else:
            reg.promote(version, reason=f"retrain {run_id}: gate passed")
            promoted = True
    if not promoted:
        reg.set_alias("challenger", version, reason=f"retrain {run_id}: {result.decision}"
                      + ("" if result.passed else " (" + "; ".join(result.reasons)[:300] + ")"))
    summary["promoted"] = promoted
    summary["champion_after"] = reg.alias("champion")
    say(f"registered {version}" + (" and promoted it" if promoted else f"; champion stays {summary['champion_after']}"))


def _distributed_of(bundle) -> dict | None:
    """World size and shards of the challenger's pretraining when it ran on several processes."""
    for rec in reversed(bundle.metrics.get("history") or []):
        if isinstance(rec, dict) and rec.get("distributed"):
            d = rec["distributed"]
            return {k: d.get(k) for k in ("world_size", "shards", "backend", "steps_per_epoch")}
    return None


# -- command line ---------------------------------------------------------------------------------------


def cmd_retrain(args: argparse.Namespace) -> int:
    opts = RetrainOptions(archive=args.archive, registry=args.registry, since=args.since, until=args.until,
                          config=args.config, eval=args.eval or [], verdicts=args.verdicts,
                          from_scratch=args.from_scratch, no_promote=args.no_promote, report_dir=args.report_dir,
                          pushgateway=args.pushgateway, progress=not args.no_progress)
    if args.config and not Path(args.config).is_file():
        raise FileNotFoundError(f"--config {args.config}: no such file")
    for p in opts.eval:
        if not Path(p).exists():
            raise FileNotFoundError(f"--eval {p}: no such file")
    if not Path(args.archive).is_dir():   # before any torchrun start
        raise FileNotFoundError(f"--archive {args.archive}: no such directory (write one with graphsentry archive "
                                f"or the daemon's archive sink)")
    load_config(args.config)              # a bad config: one line now, not from rank 0 later
    if args.nproc < 0:
        raise ValueError(f"--nproc {args.nproc}: give the number of processes (2 or more), or leave it out")
    if args.nproc > 1:   # N ranks under torchrun; rank 0 runs this function (training/retrain_worker.py)
        from training.distributed import launch

        return launch(args, module="training.retrain_worker", what="retrain")
    s = run(opts)
    print(json.dumps({k: s.get(k) for k in ("run_id", "champion", "version", "decision", "promoted",
                                            "champion_after", "reasons", "report_dir", "duration_seconds")}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("retrain", help="train a challenger on the recent archive, gate it, register/promote it",
                              description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--archive", required=True, metavar="DIR", help="the archive (graphsentry archive / daemon sink)")
    p.add_argument("--registry", required=True, metavar="DIR", help="the model registry holding the champion")
    p.add_argument("--since", help="archive records from (7d, 12h, an ISO time; default: config since, 7d)")
    p.add_argument("--until", help="archive records before (same forms; default: now)")
    p.add_argument("--config", metavar="retrain.yaml", help="job and gate settings (docs/retraining.md)")
    p.add_argument("--eval", nargs="+", metavar="LABELLED_INPUT", help="labelled captures for the labelled checks")
    p.add_argument("--verdicts", metavar="CSV", help="triage verdicts (alert_id, verdict)")
    p.add_argument("--from-scratch", action="store_true", help="do not warm-start from the champion's weights")
    p.add_argument("--no-promote", action="store_true", help="register the challenger, never promote it")
    p.add_argument("--report-dir", metavar="DIR", help="where the report goes (default: REGISTRY/reports/RUN_ID)")
    p.add_argument("--pushgateway", metavar="URL", help="push job metrics to this Prometheus Pushgateway")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--nproc", type=int, default=0, metavar="N",
                   help="pretrain the challenger with N processes on this host (torchrun, gloo, one torch thread "
                        "each; docs/distributed-training.md)")
    p.set_defaults(func=cmd_retrain)


__all__ = ["JOB", "RetrainConfig", "RetrainOptions", "clean_stale_work", "job_metrics", "load_config", "read_recent",
           "run", "training_selection", "work_folder"]

"""`graphsentry retrain`: train a challenger on the recent archive, gate it against the champion, register it.

One run (docs/retraining.md, section "Retraining job"):

1. read the archive since ``--since`` (``ingest.archive.read_archive``, batch by batch; when it holds more
   than ``max_records`` records, every k-th record is kept, an even stride in time, and the report says so),
   with the triage verdicts of ``--verdicts`` (``ingest.verdicts``);
2. split it in time: the earlier part trains, the latest ``holdout_frac`` (cut on a window boundary) is
   held out; neither model saw it;
3. training part: records the champion alerted on leave (unless an analyst cleared them: verdict
   ``benign``), and so do records with verdict ``malicious`` or label 1;
4. train the challenger (``training.pretrain.train_bundle``, the champion's train config with the
   ``train:`` overrides of ``--config``): encoder, detector and calibration;
5. score the held-out slice (and the ``--eval`` inputs) with both models, measure their scoring speed,
   apply the gate (:mod:`training.gate`);
6. register the challenger (parent = champion, data time range and fingerprint, metrics, gate decision)
   and promote it when the gate passed (unless ``--no-promote``); refused, it becomes the ``challenger``.

Everything up to step 6 happens in a work folder (``REGISTRY/.retrain-tmp/<run id>``); the registry is
only written at the end, so a failed, refused or interrupted run never changes the champion, and the
next run removes the folders of runs whose process is gone. A report (``report.md``, ``report.json``,
``pr-*.png`` / ``roc-*.png``) goes to ``--report-dir`` (default ``REGISTRY/reports/<run id>/``); job
metrics go to a Pushgateway with ``--pushgateway``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from training.gate import EVAL, HOLDOUT, EvalSet, GateConfig, ModelEval, gate

log = logging.getLogger(__name__)

WORK = ".retrain-tmp"
JOB = "graphsentry_retrain"
SCORE_COLUMNS = ("score", "alert", "alert_id", "model_version")


# -- configuration --------------------------------------------------------------------------------------


class RetrainConfig(BaseModel):
    """``retrain.yaml``: every key optional; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: str = Field("7d", description="archive records from: a duration back from now, an ISO time or epoch s")
    until: str | None = Field(None, description="archive records before (same forms); None: to the end")
    holdout_frac: float = Field(0.2, gt=0, lt=0.9, description="latest fraction of the records held out")
    max_records: int = Field(2_000_000, ge=100, description="more records than this: an even stride keeps this many")
    min_train_records: int = Field(100, ge=10, description="fewer training records after exclusion: refuse to train")
    speed_records: int = Field(20_000, ge=10, description="records of the held-out slice timed for scoring speed")
    speed_repeats: int = Field(5, ge=1, le=20, description="timed repeats per model (the fastest counts)")
    promote: bool = Field(True, description="promote a challenger that passes the gate")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides over the champion's")
    gate: GateConfig = Field(default_factory=GateConfig)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _time_text(cls, v: Any) -> Any:
        """An unquoted YAML date/time (``since: 2026-12-01``) arrives as a date: keep it as ISO text (UTC)."""
        import datetime as dt

        if isinstance(v, dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)).isoformat()
        if isinstance(v, dt.date):
            return f"{v.isoformat()}T00:00:00Z"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        return v


def _train_fields() -> set[str]:
    from training.pretrain import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def load_config(path: str | os.PathLike | None) -> RetrainConfig:
    """``RetrainConfig`` from a YAML file (safe loader, duplicate keys refused); ValueError in one line naming
    the key and the rule."""
    if path is None:
        return RetrainConfig()
    import yaml

    from detector.daemon.config import _UniqueKeyLoader

    p = Path(path)
    text = p.read_text()
    try:
        data = _UniqueKeyLoader.parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{p}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level must be a mapping of keys ({', '.join(RetrainConfig.model_fields)}), "
                         f"got a {type(data).__name__}")
    try:
        cfg = RetrainConfig(**data)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = e["loc"][0] if len(e["loc"]) > 1 else None
            known = GateConfig.model_fields if parent == "gate" else RetrainConfig.model_fields
            raise ValueError(f"{p}: unknown key {key!r} (known{f' in {parent}' if parent else ''}: "
                             f"{', '.join(known)})") from None
        raise ValueError(f"{p}: {key}: {e['msg']} (got {e.get('input')!r})") from None
    bad = sorted(set(cfg.train) - _train_fields())
    if bad:
        raise ValueError(f"{p}: unknown key 'train.{bad[0]}' (known in train: {', '.join(sorted(_train_fields()))})")
    return cfg


# -- the run --------------------------------------------------------------------------------------------


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
    """Stage lines and a crude bar on stderr (stdout keeps the one JSON summary)."""

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


def _ts_s(table: pa.Table) -> np.ndarray:
    return table.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6


def _clean_stale_work(root: Path) -> list[str]:
    """Remove the work folders of earlier runs whose process is gone (a run killed mid-way)."""
    removed = []
    d = root / WORK
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        pid = p.name.rsplit("-pid", 1)[-1]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():   # our own pid: an earlier run in this process
            try:
                os.kill(int(pid), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def read_recent(archive: str, since: Any, until: Any, verdicts: str | None, max_records: int,
                now: float | None, say: Progress) -> tuple[pa.Table, dict]:
    """The archive's flow records in ``[since, until)`` with a ``verdict`` column, sorted by time; at most
    ``max_records`` (an even stride over the records in archive order, which is time order by hour)."""
    from ingest.archive import read_archive
    from ingest.schema import FLOW_SCHEMA
    from ingest.verdicts import apply_verdicts, read_verdicts

    if not Path(archive).is_dir():
        raise FileNotFoundError(f"--archive {archive}: no such directory (write one with graphsentry archive "
                                f"or the daemon's archive sink)")
    counted = read_archive(archive, since, until, columns=["ts"], now=now)
    n = sum(b.num_rows for b in counted)
    if n == 0:
        raise ValueError(f"no archived records in {archive} between {since or 'the start'} and {until or 'now'}: "
                         f"nothing to retrain on (widen --since)")
    stride = max(1, math.ceil(n / max_records))
    say(f"archive: {n} records in range" + (f"; keeping every {stride}th (max_records {max_records})"
                                            if stride > 1 else ""))
    cols = [c for c in FLOW_SCHEMA.names] + list(SCORE_COLUMNS)
    scan = read_archive(archive, since, until, columns=cols, now=now)
    vd = read_verdicts(verdicts) if verdicts else {}
    kept, seen = [], 0
    for b in apply_verdicts(scan, vd):
        if stride > 1:
            idx = np.flatnonzero((np.arange(seen, seen + b.num_rows) % stride) == 0)
            seen += b.num_rows
            b = b.take(pa.array(idx))
        kept.append(b)
    table = pa.Table.from_batches(kept) if kept else None
    if table is None or table.num_rows == 0:
        raise ValueError(f"no readable archived records in {archive}")
    table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending")]))
    table = table.set_column(table.schema.get_field_index("row"), "row", pa.array(np.arange(table.num_rows), pa.int64()))
    info = {"archive": str(Path(archive).resolve()), "since": since, "until": until, "records_in_range": n,
            "stride": stride, "records_read": table.num_rows, "bad_files": [list(x) for x in scan.bad_files],
            "verdicts": verdicts, "verdict_count": len(getattr(vd, "by_alert", vd))}
    return table, info


def _labels(table: pa.Table) -> np.ndarray:
    """1 malicious, 0 benign, -1 unknown: the record's label where it has one (2 = background: unknown),
    else its alert's verdict (malicious 1, benign 0)."""
    lab = table.column("label").to_numpy(zero_copy_only=False) if "label" in table.column_names else None
    out = np.full(table.num_rows, -1, dtype=np.int64)
    if lab is not None:
        lab = np.asarray(pd_fill(lab), dtype=np.float64)
        out[lab == 1] = 1
        out[lab == 0] = 0
    if "verdict" in table.column_names:
        v = np.asarray(table.column("verdict").to_pylist(), dtype=object)
        unk = out == -1
        out[unk & (v == "malicious")] = 1
        out[unk & (v == "benign")] = 0
    return out


def pd_fill(a: np.ndarray) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in a], dtype=np.float64) if a.dtype == object else a


def split_in_time(table: pa.Table, holdout_frac: float, window_s: float) -> tuple[float, pa.Table, pa.Table]:
    """``(cut, earlier, later)``: the latest ``holdout_frac`` of the records (by count) are held out, cut on a
    window boundary when that leaves records on both sides."""
    ts = _ts_s(table)
    k = min(max(int(len(ts) * (1 - holdout_frac)), 1), len(ts) - 1)
    raw = float(ts[k])
    cut = math.floor(raw / window_s) * window_s
    if not (ts < cut).any() or not (ts >= cut).any():
        cut = raw
    early = ts < cut
    return cut, table.filter(pa.array(early)), table.filter(pa.array(~early))


def training_selection(table: pa.Table) -> tuple[pa.Table, dict]:
    """The training part with what may not be learnt as normal marked ``label = 1``: records the champion
    alerted on (unless cleared: verdict benign), verdict malicious, label 1. ``train_bundle`` with
    ``benign_only`` then leaves them out of what it fits but keeps them in the graph of the held-back
    windows it calibrates on, as the daemon will see them (fitted on benign-only graphs, the threshold is
    far too low for traffic that has attacks in it)."""
    n = table.num_rows
    alert = np.asarray(pc.fill_null(table.column("alert"), False).to_numpy(zero_copy_only=False), dtype=bool)
    verdict = np.asarray(table.column("verdict").to_pylist(), dtype=object)
    lab = np.asarray(pd_fill(table.column("label").to_numpy(zero_copy_only=False)), dtype=np.float64)
    malicious = (verdict == "malicious") | (lab == 1)
    cleared = verdict == "benign"
    alerted = alert & ~cleared & ~malicious
    keep = ~(malicious | alerted)
    info = {"records": n, "excluded_alerted_by_champion": int(alerted.sum()),
            "excluded_malicious": int(malicious.sum()), "kept_cleared_false_positives": int((alert & cleared).sum()),
            "kept": int(keep.sum())}
    lab_new = np.where(keep, lab, 1.0)
    col = pa.array(lab_new, pa.int8(), mask=np.isnan(lab_new))
    return table.set_column(table.schema.get_field_index("label"), "label", col), info


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


def _eval_set(name: str, table: pa.Table, scores: np.ndarray, window_s: float) -> EvalSet:
    ts = _ts_s(table)
    hours = (float(ts.max() - ts.min()) + window_s) / 3600.0 if len(ts) else 0.0
    attack = np.asarray(table.column("attack").to_pylist(), dtype=object) if "attack" in table.column_names \
        else np.full(table.num_rows, None, dtype=object)
    return EvalSet(name, scores, _labels(table), np.floor(ts / window_s).astype(np.int64), hours,
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
    work = None
    try:
        from training.registry import Registry, RegistryError

        reg = Registry(root)
        champion_v = reg.alias("champion") if reg.versions_dir.is_dir() else None
        if champion_v is None:
            raise RegistryError(f"{root} has no champion to retrain from: register and promote a first model "
                                f"(graphsentry models register MODEL_DIR --registry {root} --promote)")
        stale = _clean_stale_work(root)
        if stale:
            say(f"removed {len(stale)} work folder(s) of interrupted runs: {', '.join(stale)}")
        work = root / WORK / f"{run_id}-pid{os.getpid()}"
        work.mkdir(parents=True)
        summary["champion"] = champion_v
        from detector.bundle import load_bundle

        champion = load_bundle(reg.resolve(champion_v))
        if getattr(champion, "kind", "flows") != "flows":
            raise ValueError(f"champion {champion_v} is a {champion.kind!r} model: graphsentry retrain handles flow models")
        window_s = float((champion.window or {}).get("size", 60.0))
        since = opts.since or cfg.since
        until = opts.until or cfg.until
        say(f"champion {champion_v}; reading {opts.archive} since {since}")
        table, data_info = read_recent(opts.archive, since, until, opts.verdicts, cfg.max_records, opts.now, say)
        cut, early, later = split_in_time(table, cfg.holdout_frac, window_s)
        train_t, sel = training_selection(early)
        say(f"split at {_iso(cut)}: {early.num_rows} earlier records ({sel['kept']} kept for training: "
            f"{sel['excluded_alerted_by_champion']} alerted, {sel['excluded_malicious']} malicious left out), "
            f"{later.num_rows} held out")
        if sel["kept"] < cfg.min_train_records:
            raise ValueError(f"only {sel['kept']} training records after excluding alerted and malicious ones "
                             f"(min_train_records {cfg.min_train_records}): widen --since")
        from training.pretrain import TrainConfig, train_bundle

        base = {k: v for k, v in (champion.extra.get("train_config") or {}).items() if k in _train_fields()}
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
        if init is not None:   # how many of the champion's tensors matched the challenger's shapes
            warm["loaded"] = int((challenger.metrics.get("warm_start") or {}).get("loaded", 0))
        say(f"challenger: {challenger.detector_name}, threshold {challenger.threshold:.6g}")
        ev_champ: dict[str, EvalSet] = {}
        ev_chall: dict[str, EvalSet] = {}
        tables: dict[str, pa.Table] = {}
        if later.num_rows:
            tables[HOLDOUT] = later
        if opts.eval:
            from training.commands import read_table

            et, _ = read_table(list(opts.eval))
            et = et.take(pc.sort_indices(et, sort_keys=[("ts", "ascending")]))
            et = et.set_column(et.schema.get_field_index("row"), "row", pa.array(np.arange(et.num_rows), pa.int64()))
            tables[EVAL] = et
        for name, t in tables.items():
            say(f"scoring {name} ({t.num_rows} records) with champion and challenger")
            ev_champ[name] = _eval_set(name, t, _score(champion, t), window_s)
            ev_chall[name] = _eval_set(name, t, _score(challenger, t), window_s)
        speed_t = tables.get(HOLDOUT, tables.get(EVAL))
        rps = {"champion": None, "challenger": None}
        if speed_t is not None:
            say(f"timing scoring speed ({min(cfg.speed_records, speed_t.num_rows)} records x {cfg.speed_repeats})")
            rps = _speed({"champion": champion, "challenger": challenger}, speed_t, cfg.speed_records,
                         cfg.speed_repeats)
        a = ModelEval(champion_v, champion.threshold, ev_champ, rps["champion"], champion.calibration.target_fpr)
        b = ModelEval("challenger", challenger.threshold, ev_chall, rps["challenger"],
                      challenger.calibration.target_fpr)
        result = gate(a, b, cfg.gate)
        say(f"gate: {result.decision}" + (f" ({'; '.join(result.reasons)})" if result.reasons else ""))
        ts_train = _ts_s(train_t)[np.asarray(pc.fill_null(pc.not_equal(train_t.column("label"), 1), True))]
        summary.update({
            "status": "done", "decision": result.decision, "gate_passed": result.passed, "reasons": result.reasons,
            "data": {**data_info, "cut": _iso(cut), "train_from": _iso(float(ts_train.min())),
                     "train_to": _iso(float(ts_train.max())), "holdout_records": later.num_rows,
                     "holdout_from": _iso(float(_ts_s(later).min())) if later.num_rows else None,
                     "holdout_to": _iso(float(_ts_s(later).max())) if later.num_rows else None,
                     "training_selection": sel, "eval_inputs": list(opts.eval),
                     "eval_records": tables[EVAL].num_rows if EVAL in tables else 0},
            "warm_start": warm, "train_config": asdict(tcfg),
            "challenger": {"detector": challenger.detector_name, "threshold": challenger.threshold,
                           "target_fpr": challenger.calibration.target_fpr,
                           "train_seconds": challenger.metrics.get("total_seconds")},
            "gate": result.to_dict(), "config": cfg.model_dump(),
        })
        curves = _curves(ev_champ, ev_chall)
        # -- the registry is written only from here on ------------------------------------------------------
        gate_meta = {**result.to_dict(), "run_id": run_id}
        metrics = {"retrain": {c.name + (f"_{c.data}" if c.data else ""): c.values for c in result.checks}}
        version = reg.register(work / "challenger", {
            "parent": champion_v,
            "data": {"from": summary["data"]["train_from"], "to": summary["data"]["train_to"],
                     "archive": data_info["archive"], "holdout_from": summary["data"]["holdout_from"],
                     "holdout_to": summary["data"]["holdout_to"], "stride": data_info["stride"],
                     "training_selection": sel},
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
        summary["duration_seconds"] = round(time.time() - t0, 2)
        summary["report_dir"] = str(report_dir)
        write_report(summary, curves, report_dir)
        _push(opts.pushgateway, ok=True, summary=summary, duration=time.time() - t0, say=say)
        return summary
    except BaseException as exc:
        summary.update({"status": "failed", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                        "duration_seconds": round(time.time() - t0, 2), "report_dir": str(report_dir)})
        with contextlib.suppress(Exception):
            write_report(summary, {}, report_dir)
        with contextlib.suppress(Exception):
            _push(opts.pushgateway, ok=False, summary=summary, duration=time.time() - t0, say=say)
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


# -- report ---------------------------------------------------------------------------------------------


def _curve_points(y: np.ndarray, s: np.ndarray, kind: str, max_points: int = 200) -> dict:
    from sklearn.metrics import precision_recall_curve, roc_curve

    sv = np.nan_to_num(s, nan=-1e300)
    if kind == "roc":
        x, yy, _ = roc_curve(y, sv)
    else:
        yy, x, _ = precision_recall_curve(y, sv)
    idx = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int))
    return {"x": [round(float(v), 5) for v in x[idx]], "y": [round(float(v), 5) for v in yy[idx]]}


def _curves(a: dict[str, EvalSet], b: dict[str, EvalSet]) -> dict:
    out: dict = {}
    for name, sa in a.items():
        m = (sa.labels == 0) | (sa.labels == 1)
        y = sa.labels[m] == 1
        if y.all() or not y.any():
            continue
        out[name] = {kind: {"champion": _curve_points(y, sa.scores[m], kind),
                            "challenger": _curve_points(y, b[name].scores[m], kind)} for kind in ("pr", "roc")}
    return out


def _plot(curves: dict, d: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    for name, kinds in curves.items():
        for kind, models in kinds.items():
            fig, ax = plt.subplots(figsize=(4.5, 4), dpi=80)
            for model, pts in models.items():
                ax.plot(pts["x"], pts["y"], label=model, lw=1)
            ax.set_xlabel("FPR" if kind == "roc" else "recall")
            ax.set_ylabel("TPR" if kind == "roc" else "precision")
            ax.set_title(f"{kind.upper()} on {name}", fontsize=9)
            ax.legend(fontsize=7)
            fig.tight_layout()
            f = d / f"{kind}-{name}.png"
            fig.savefig(f)
            plt.close(fig)
            files.append(f.name)
    return files


def markdown(s: dict) -> str:
    lines = [f"# Retraining run {s['run_id']}", ""]
    if s.get("status") != "done":
        return "\n".join(lines + [f"**Failed** after {s.get('duration_seconds')} s: {s.get('error')}", "",
                                  f"Champion {s.get('champion') or '-'} unchanged; nothing was registered."]) + "\n"
    g, d = s["gate"], s["data"]
    dec = "**promoted**" if s.get("promoted") else ("passed, **not promoted**" if s["gate_passed"] else "**refused**")
    lines += [f"Challenger {s['version']} (parent {s['champion']}): gate {g['decision']}, {dec}. "
              f"Champion after the run: {s['champion_after']}.", ""]
    if g["reasons"]:
        lines += ["Why refused:", ""] + [f"- {r}" for r in g["reasons"]] + [""]
    if s.get("note"):
        lines += [s["note"], ""]
    sel = d["training_selection"]
    lines += ["## Data", "",
              f"- archive {d['archive']}, since {d['since']}, until {d['until'] or 'now'}: {d['records_in_range']} "
              f"records" + (f"; **sampled**: every {d['stride']}th record kept ({d['records_read']})"
                            if d["stride"] > 1 else ""),
              f"- training part: {d['train_from']} .. {d['train_to']}; {sel['records']} records, "
              f"{sel['excluded_alerted_by_champion']} alerted by the champion and {sel['excluded_malicious']} "
              f"malicious (verdict or label) left out, {sel['kept_cleared_false_positives']} cleared false "
              f"positives kept: {sel['kept']} trained on",
              f"- held-out later slice (neither model saw it): from {d['cut']}, {d['holdout_records']} records "
              f"({d['holdout_from']} .. {d['holdout_to']})",
              f"- --eval inputs: {', '.join(d['eval_inputs']) or 'none'} ({d['eval_records']} records)",
              f"- warm start: {'yes' if s['warm_start']['used'] else 'no'} ({s['warm_start']['why']})",
              f"- challenger: detector {s['challenger']['detector']}, threshold {s['challenger']['threshold']:.6g}, "
              f"target FPR {s['challenger']['target_fpr']}, trained in {s['challenger']['train_seconds']} s", "",
              "## Gate", "", "| check | data | result | detail |", "|---|---|---|---|"]
    for c in g["checks"]:
        lines.append(f"| {c['name']} | {c['data'] or '-'} | {c['status']} | {c['reason']} |")
    if g["notes"]:
        lines += [""] + [f"- {n}" for n in g["notes"]]
    for c in g["checks"]:
        if c["name"] == "slices" and c["values"].get("slices"):
            lines += ["", f"Slices ({c['data']}), recall at FPR {c['values']['target_fpr']}:", "",
                      "| kind | slice | positives | champion | challenger | drop |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['kind']} | {r['slice']} | {r['positives']} | {r['champion']} | {r['challenger']} | "
                      f"{r['drop']} |" for r in c["values"]["slices"]]
    if s.get("plots"):
        lines += ["", "## Curves", ""] + [f"![{p}]({p})" for p in s["plots"]]
    lines += ["", f"Run took {s['duration_seconds']} s."]
    return "\n".join(lines) + "\n"


def write_report(summary: dict, curves: dict, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    summary["plots"] = _plot(curves, d) if curves else []
    if curves and not summary["plots"]:
        summary["plots_note"] = "matplotlib is not installed: the curve points are in report.json"
    (d / "report.json").write_text(json.dumps({**summary, "curves": curves}, indent=2, default=str) + "\n")
    (d / "report.md").write_text(markdown(summary))
    return d


# -- metrics --------------------------------------------------------------------------------------------


def job_metrics(ok: bool, summary: dict, duration: float, now: float | None = None):
    """The job's metrics in a fresh CollectorRegistry (pushed with ``pushadd``: a failed run must not erase
    the last success timestamp)."""
    from prometheus_client import CollectorRegistry, Gauge

    r = CollectorRegistry()
    now = time.time() if now is None else now
    Gauge(f"{JOB}_duration_seconds", "Duration of the last retraining run", registry=r).set(duration)
    if ok:
        Gauge(f"{JOB}_last_success_timestamp_seconds", "When a retraining run last completed (gate applied)",
              registry=r).set(now)
        Gauge(f"{JOB}_gate_passed", "1 when the last completed run's challenger passed the gate, else 0",
              registry=r).set(1.0 if summary.get("gate_passed") else 0.0)
        g = Gauge(f"{JOB}_records", "Records of the last completed run, by part", ["part"], registry=r)
        d = summary.get("data") or {}
        g.labels("read").set(d.get("records_read") or 0)
        g.labels("train").set((d.get("training_selection") or {}).get("kept") or 0)
        g.labels("holdout").set(d.get("holdout_records") or 0)
    else:
        Gauge(f"{JOB}_last_failure_timestamp_seconds", "When a retraining run last failed", registry=r).set(now)
    return r


def _push(url: str | None, ok: bool, summary: dict, duration: float, say: Progress) -> None:
    if not url:
        return
    from prometheus_client import pushadd_to_gateway

    try:
        pushadd_to_gateway(url, job=JOB, registry=job_metrics(ok, summary, duration), timeout=10)
        say(f"metrics pushed to {url}")
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; the stale alert will notice
        print(f"graphsentry retrain: warning: could not push metrics to {url}: {exc}", file=sys.stderr)


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
    s = run(opts)
    print(json.dumps({k: s.get(k) for k in ("run_id", "champion", "version", "decision", "promoted",
                                            "champion_after", "reasons", "report_dir", "duration_seconds")}))
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
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
    p.set_defaults(func=cmd_retrain)


__all__ = ["RetrainConfig", "RetrainOptions", "job_metrics", "load_config", "read_recent", "run",
           "split_in_time", "training_selection"]

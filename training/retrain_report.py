"""The report of a retraining run (``report.md``, ``report.json``, PR/ROC plots) and its job metrics.

The job metrics follow the Prometheus convention for batch jobs: pushed to a Pushgateway with
``pushadd`` (a failed run never erases the last success timestamp), alerting rules in
``deploy/prometheus/retrain-rules.yml``.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.gate import EVAL, HOLDOUT, EvalSet

JOB = "graphsentry_retrain"
#: how the report names the data of a check
DATA_NAMES = {HOLDOUT: "archive (held-out later slice)", EVAL: "--eval replay data"}


def _sample_text(s: dict) -> str:
    parts = []
    for side, name in (("train", "training part"), ("holdout", "held-out part")):
        x = s.get(side) or {}
        if x.get("sampled"):
            parts.append(f"{name}: {x['kept_records']} of {x['records']} records read ({x['kept_blocks']} of "
                         f"{x['blocks']} blocks of {s['block_seconds']:g} s, cap {x['cap']})")
    return ("; **sampled** by whole blocks spread over time: " + "; ".join(parts)) if parts else ""


def _curve_points(y: np.ndarray, s: np.ndarray, kind: str, max_points: int = 200) -> dict:
    from sklearn.metrics import precision_recall_curve, roc_curve

    sv = np.nan_to_num(s, nan=-1e300)
    if kind == "roc":
        x, yy, _ = roc_curve(y, sv)
    else:
        yy, x, _ = precision_recall_curve(y, sv)
    idx = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int))
    return {"x": [round(float(v), 5) for v in x[idx]], "y": [round(float(v), 5) for v in yy[idx]]}


def curves(a: dict[str, EvalSet], b: dict[str, EvalSet]) -> dict:
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
              f"records" + _sample_text(d.get("sample") or {}),
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
        lines.append(f"| {c['name']} | {DATA_NAMES.get(c['data'], c['data'] or '-')} | {c['status']} | {c['reason']} |")
    src = g.get("data_sources") or {}
    if src:
        lines += ["", "Which data each check ran on: "
                  + "; ".join(f"{k}: {' and '.join(DATA_NAMES.get(x, x) for x in v) if v else 'did not run'}"
                              for k, v in src.items())]
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


def push(url: str | None, ok: bool, summary: dict, duration: float, say: Callable[[str], None]) -> None:
    if not url:
        return
    from prometheus_client import pushadd_to_gateway

    try:
        pushadd_to_gateway(url, job=JOB, registry=job_metrics(ok, summary, duration), timeout=10)
        say(f"metrics pushed to {url}")
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; the stale alert will notice
        print(f"graphsentry retrain: warning: could not push metrics to {url}: {exc}", file=sys.stderr)


__all__ = ["DATA_NAMES", "JOB", "curves", "job_metrics", "markdown", "push", "write_report"]

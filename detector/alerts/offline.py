"""Findings of a whole scored input, for ``graphsentry score --findings FINDINGS.jsonl``.

The scores table of :mod:`detector.cli_score` (``row, score, alert, top_technique``, one row per input record)
and the input records themselves are cut into tumbling event-time windows of the model's window size; each
window's findings are built and folded into ongoing incidents exactly as the daemon does
(:class:`detector.alerts.stage.AlertStage`), then written one OCSF JSON object per line (creates and updates;
the last line of a ``finding_info.uid`` is its state). The scorer's knowledge block is gone by then, so the
findings carry no ``data.knowledge`` (the daemon's do).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.alerts.severity import DEFAULT_INTERNAL
from detector.alerts.sinks import JsonLinesSink
from detector.alerts.stage import AlertStage


@dataclass
class _Window:
    start: float
    end: float
    table: pa.Table


@dataclass
class _Scores:
    rows: np.ndarray
    scores: np.ndarray
    alerts: np.ndarray
    top_technique: list


def write_findings(records: pa.Table, scores: pa.Table, out: str | Path, window: float, threshold: float | None,
                   model_version: str = "", incident_gap: float = 600.0,
                   internal_networks: tuple[str, ...] = DEFAULT_INTERNAL) -> dict:
    """Write the findings of ``records`` (the input, ``row`` = position) scored by ``scores``; returns counts."""
    if not window > 0:
        raise ValueError(f"window={window!r}: must be > 0 seconds")
    stage = AlertStage.from_config({"incident_gap": incident_gap, "internal_networks": list(internal_networks)})
    score = scores.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    alert = scores.column("alert").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    tech = scores.column("top_technique").to_pylist()
    ts = records.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
    ok = np.isfinite(score) & np.isfinite(ts)
    bucket = np.floor(ts / window)
    sink = JsonLinesSink(out)
    uids: set[str] = set()
    writes = 0
    try:
        for b in np.unique(bucket[ok & alert]):
            sel = np.flatnonzero(ok & (bucket == b))
            table = records.take(pa.array(sel))
            table = table.set_column(table.schema.get_field_index("row"), "row", pa.array(sel, pa.int64())) \
                if "row" in table.column_names else table.append_column("row", pa.array(sel, pa.int64()))
            w = _Window(float(b * window), float((b + 1) * window), table)
            ws = _Scores(sel.astype(np.int64), score[sel], alert[sel], [tech[i] for i in sel.tolist()])
            wa = stage.build(w, ws, model_version=model_version, threshold=threshold)
            sink.write(wa.alerts)
            writes += len(wa.alerts)
            uids.update(a["finding_info"]["uid"] for a in wa.alerts)
    finally:
        sink.close()
    return {"findings": len(uids), "writes": writes,
            "flagged": int(pc.sum(scores.column("alert")).as_py() or 0) if scores.num_rows else 0}

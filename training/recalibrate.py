"""Recalibrate a model's alert threshold on recent traffic, without retraining (``graphsentry calibrate``).

The answer to a ``GraphsentryThresholdDrift`` alert when the cause is benign change (new devices, a new
service): the encoder, detector and feature pipeline stay as they are; the inputs are scored exactly as
``graphsentry score`` would, and the threshold becomes the conformal ``1 - target_fpr`` quantile of those
scores (:func:`detector.calibration.calibrate_threshold`). Records labelled malicious are left out when the
inputs carry labels and ``benign_only`` is set; unlabelled traffic is taken as it is, so attacks inside it
raise the threshold (harmless while they are a small share of it, by the quantile). Writes a *new* model
directory (the old one stays for rollback) whose ``config.json`` records the recalibration: previous
threshold, data fingerprint, records used, and the share the old threshold flagged on them.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.bundle import ModelBundle
from detector.calibration import calibrate_threshold
from detector.scoring import score_table
from training.pretrain import fingerprint

MIN_PER_TARGET = 10  # at least 10 / target_fpr scores (1,000 at 1%): 10 expected exceedances at the quantile


def malicious_mask(table: pa.Table) -> np.ndarray:
    """True for records labelled malicious (label 1); all False when the table has no labels."""
    if "label" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return pc.fill_null(pc.equal(table.column("label"), 1), False).to_numpy(zero_copy_only=False)


def recalibrate(model_dir: str | Path, table: pa.Table, out_dir: str | Path, target_fpr: float | None = None,
                benign_only: bool = True) -> dict:
    """Score ``table`` with the model in ``model_dir``, refit its threshold, save to ``out_dir``; returns a summary.

    ``target_fpr`` defaults to the model's own. Raises ``ValueError`` when ``out_dir`` is ``model_dir``
    or fewer than ``10 / target_fpr`` records could be scored. The threshold is the embedding detector's:
    the records are scored without the technique channel (whose lift is relative to the threshold and has
    its own benign budget), so the quantile is not moved by flows the channel lifts.
    """
    src, dst = Path(model_dir), Path(out_dir)
    if dst.resolve() == src.resolve():
        raise ValueError("--out must be a new model directory (the current one stays for rollback)")
    bundle = ModelBundle.load(src)
    target = float(target_fpr if target_fpr is not None else bundle.calibration.target_fpr)
    if not 0.0 < target < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target!r}")
    plain = copy.copy(bundle)
    plain.technique = None
    out = score_table(plain, table)
    scores = out.column("score").to_numpy(zero_copy_only=False).astype(np.float64)  # NaN where unscored
    use = np.isfinite(scores)
    excluded = 0
    if benign_only:
        malicious = malicious_mask(table)
        excluded = int((use & malicious).sum())
        use &= ~malicious
    n = int(use.sum())
    need = math.ceil(MIN_PER_TARGET / target)
    if n < need:
        raise ValueError(f"only {n} scorable records to calibrate on; a {target:g} target needs at least {need}")
    s = scores[use]
    old = bundle.calibration
    new = calibrate_threshold(s, target)
    summary = {
        "from_model": str(src), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "records": int(table.num_rows), "used": n, "excluded_malicious": excluded,
        "unscored": int((~np.isfinite(scores)).sum()), "target_fpr": target,
        "previous_threshold": float(old.threshold), "previous_target_fpr": float(old.target_fpr),
        "threshold": float(new.threshold),
        "flagged_share_before": float((s > old.threshold).mean()),
        "flagged_share_after": float(new.calibration_fpr),
        "data_fingerprint": fingerprint(table),
    }
    bundle.calibration = new
    bundle.detector.threshold_ = new.threshold  # the detector carries the same threshold (as train_bundle sets it)
    history = list(bundle.extra.get("recalibrations", []))
    bundle.extra["recalibrations"] = history + [summary]
    bundle.save(dst)
    return summary

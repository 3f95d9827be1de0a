"""Assembly of a :class:`~detector.bundle.ModelBundle`: prepare the data, pretrain, select the detector
input and detector, calibrate the threshold, save (the protocol is in :mod:`training.pretrain`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from detector.bundle import ModelBundle
from detector.calibration import calibrate_threshold
from detector.models import STGNN, ModelConfig
from training.pretrain.checkpoint import load_checkpoint, save_checkpoint, warm_start
from training.pretrain.config import OBJECTIVE_CANDIDATES, TrainConfig
from training.pretrain.data import Prepared, fingerprint, prepare
from training.pretrain.determinism import deterministic_torch, runtime_info, seed_everything
from training.pretrain.embed import embed_blocks
from training.pretrain.selection import class_groups, pick_best, select_flow_detector, stratified_keep
from training.pretrain.trainer import Pretrainer

log = logging.getLogger(__name__)


def train_bundle(tables, cfg: TrainConfig, out_dir: str | Path | None = None, progress: bool = True,
                 resume: bool = False, extra_meta: dict | None = None,
                 prepared: Prepared | None = None, init_state: dict | None = None) -> ModelBundle:
    """Train encoder + detectors + threshold on ``tables`` (canonical flow records); save when ``out_dir``.

    ``init_state``: a model ``state_dict`` to start pretraining from (warm start, e.g. the deployed
    champion's weights in a retraining job): every tensor whose name and shape match is loaded, the rest
    keep their fresh initialisation; ``metrics["warm_start"]`` says how many were loaded."""
    from detector.runtime import torch_threads

    with torch_threads(), deterministic_torch():
        return _train_bundle(tables, cfg, out_dir, progress, resume, extra_meta, prepared, init_state)


def _pretrain_and_select(cfg: TrainConfig, graphs: list, val: tuple, ckpt: Path | None, progress: bool,
                         resume: bool, init_state: dict | None = None) -> dict:
    """Pretrain one encoder with ``cfg.objective`` and pick its detector input/detector on the held-back period."""
    seed_everything(cfg.seed)
    g0 = graphs[0]
    mcfg = ModelConfig(node_in=int(g0.x.size(1)), edge_in=int(g0.edge_attr.size(1)), hidden=cfg.hidden,
                       layers=cfg.layers, time_dim=cfg.time_dim, temporal=cfg.temporal, use_time=cfg.use_time)
    model = STGNN(mcfg)
    warm = warm_start(model, init_state) if init_state is not None else None
    trainer = Pretrainer(model, cfg)
    if resume and ckpt is not None and ckpt.is_file():
        trainer.load_state_dict(load_checkpoint(ckpt))
        log.info("resumed from %s at epoch %d", ckpt, trainer.epoch)
    t_pre = time.perf_counter()
    epoch_times = []
    n_epochs = cfg.epochs if cfg.objective != "none" else 0
    while trainer.epoch < n_epochs:
        te = time.perf_counter()
        rec = trainer.run_epoch(graphs, progress=progress)
        epoch_times.append(time.perf_counter() - te)
        log.info("epoch %d: %s", trainer.epoch, rec)
        if progress:
            print(f"epoch {trainer.epoch}/{n_epochs} " + " ".join(
                f"{k}={v:.4f}" for k, v in rec.items() if isinstance(v, float)), flush=True)
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(trainer, ckpt)
    pretrain_s = time.perf_counter() - t_pre
    # Embeddings: training windows, then (state continuing) the held-back windows.
    val_graphs, labels, held_back, cont, classes = val
    tr_blocks = embed_blocks(model, graphs, reset=True)
    va_blocks = embed_blocks(model, val_graphs, reset=not cont)
    # validation flows: every non-malicious flow of the held-back period (these also calibrate) and
    # every flow labelled malicious of the training inputs (benign-only training never saw them)
    keep = held_back | (labels == 1)
    groups = class_groups(labels, classes)
    att = np.flatnonzero(keep & (labels == 1) & ~held_back)
    n_hb_att = int((keep & (labels == 1) & held_back).sum())
    if n_hb_att + len(att) > cfg.max_val_attacks:  # bound the detector queries: seeded subsample of the
        # training-period attacks, spread evenly over their classes (held-back ones all kept)
        sub = stratified_keep(groups[att], max(0, cfg.max_val_attacks - n_hb_att), np.random.default_rng(cfg.seed))
        keep[att[~sub]] = False
    va_blocks = {k: v[keep] for k, v in va_blocks.items()}
    y_val = labels[keep]
    groups = class_groups(y_val, classes[keep] if classes is not None else None)  # rare = rare after the cap
    n_tr = len(tr_blocks["edge"])
    if n_tr > cfg.max_fit_flows:
        idx = np.sort(np.random.default_rng(cfg.seed).choice(n_tr, cfg.max_fit_flows, replace=False))
        tr_blocks = {k: v[idx] for k, v in tr_blocks.items()}
    if not (y_val != 1).any():
        raise ValueError("no flows in the held-back calibration windows")
    sel = select_flow_detector(tr_blocks, va_blocks, y_val, cfg, groups)
    model.config.flow_parts = sel["chosen"]["flow_parts"]  # the model now emits the chosen detector input
    key = f"{sel['chosen']['flow_parts']}|{sel['chosen']['detector']}"
    return {"model": model, "trainer": trainer, "sel": sel, "y_val": y_val, "pretrain_s": pretrain_s,
            "epoch_times": epoch_times, "n_val": int((y_val != 1).sum()), "best_score": sel["score"],
            "best_drift": sel["drift"][key], "warm_start": warm}


def _train_bundle(tables, cfg: TrainConfig, out_dir, progress: bool, resume: bool,
                  extra_meta: dict | None, prepared: Prepared | None = None,
                  init_state: dict | None = None) -> ModelBundle:
    t0 = time.perf_counter()
    prep = prepared if prepared is not None else prepare(tables, cfg)
    seed_everything(cfg.seed)
    table, n_in, removed = prep.table, prep.records_in, prep.removed
    train_w, val_w, pipeline = prep.train_w, prep.val_w, prep.pipeline
    graphs = prep.graphs
    val = prep.validation(cfg.val_context)
    val_labels = val[1]
    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    objectives = [(cfg.objective, cfg.weighting)]
    if cfg.objective == "auto":
        n_att = int((val_labels == 1).sum()) if val_labels is not None else 0
        labelled = cfg.validation == "labels" and n_att >= cfg.min_val_attacks
        objectives = list(OBJECTIVE_CANDIDATES) if labelled else [OBJECTIVE_CANDIDATES[0]]
    runs: dict[str, dict] = {}
    for obj, weighting in objectives:
        ocfg = replace(cfg, objective=obj, weighting=weighting)
        ck = ckpt_path if len(objectives) == 1 else None  # several objectives: no per-epoch checkpoints
        runs[f"{obj}/{weighting}"] = run = _pretrain_and_select(ocfg, graphs, val, ck, progress, resume, init_state)
        log.info("objective %s/%s: validation score %s", obj, weighting, run["best_score"])
    # several objectives (only with labelled attacks): the validation rule again, on each run's chosen candidate
    best = pick_best({k: r["best_score"] for k, r in runs.items()},
                     {k: r["best_drift"] for k, r in runs.items()}, cfg.val_tol) if len(runs) > 1 else next(iter(runs))
    run = runs[best]
    model, trainer, sel, y_val = run["model"], run["trainer"], run["sel"], run["y_val"]
    if ckpt_path is not None and len(objectives) > 1:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(trainer, ckpt_path)
    pretrain_s, epoch_times, n_va = run["pretrain_s"], run["epoch_times"], run["n_val"]
    parts, chosen = sel["chosen"]["flow_parts"], sel["chosen"]["detector"]
    det, va_s = sel["fitted"]
    calib = calibrate_threshold(va_s[y_val != 1], cfg.target_fpr)  # non-malicious held-back flows only
    det.threshold_ = calib.threshold
    technique = None
    if cfg.technique:  # after the detector: its held-back benign scores give the lift's unit
        from detector.technique_detector import fit_channel

        technique = fit_channel(graphs, train_w, prep.val_graphs, val_w, prep.val_labels, pipeline.kf,
                                cfg.target_fpr, va_s[y_val != 1], calib.threshold,
                                max_rows=max(cfg.max_fit_flows, 100_000), seed=cfg.seed)
    drift = sel["drift"]
    metrics = {
        "records_in": n_in, "removed_malicious": removed, "train_windows": len(train_w), "val_windows": len(val_w),
        "train_flows": int(sum(w.table.num_rows for w in train_w)), "val_flows": n_va,
        "objective": {"chosen": best, "candidates": {k: r["best_score"] for k, r in runs.items()},
                      "drift": {k: r["best_drift"] for k, r in runs.items()}},
        "epochs": trainer.epoch, "history": trainer.history, "pretrain_seconds": round(pretrain_s, 2),
        "epoch_seconds": [round(x, 2) for x in epoch_times], "total_seconds": round(time.perf_counter() - t0, 2),
        "val_attacks": int((y_val == 1).sum()),
        "detector_selection": {"rule": sel["rule"], "drift": drift, "chosen": chosen, "flow_parts": parts,
                               "candidates": sel["candidates"]},
        "reproducibility": runtime_info(torch.get_num_threads()),
        "warm_start": run.get("warm_start"),
    }
    if technique is not None:
        metrics["technique"] = {"threshold": technique.threshold_, "calibration_fpr": technique.calibration_fpr_,
                                "fit_flows": technique.n_fit_, "calibration_flows": technique.n_calibration_,
                                "columns": len(technique.columns_)}
    bundle = ModelBundle(model, det, calib, pipeline,
                         window={"size": cfg.window, "lateness": min(cfg.window, 60.0)},
                         detector_name=chosen, fingerprint=fingerprint(table), metrics=metrics,
                         extra={"train_config": asdict(cfg), **(extra_meta or {})}, technique=technique)
    if out_dir is not None:
        bundle.save(out_dir)
    return bundle

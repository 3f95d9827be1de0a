"""Self-supervised pretraining of the STGNN and assembly of a ModelBundle.

Protocol (time-ordered, label-free apart from the optional ``benign_only`` filter):

1. records are sorted by event time and cut into tumbling windows;
2. the earliest ``1 - val_frac`` of the windows train the encoder and the
   detectors; the latest ``val_frac`` are held back (never trained on) to pick
   the detector input and calibrate the alert threshold to ``target_fpr``;
3. with ``benign_only`` every record labelled malicious (label == 1) is removed
   from the *training* windows -- the standard "benign-only training" protocol;
4. with ``val_context`` (default) the held-back windows keep every record of their period
   (attacks included) so that the graph context at calibration is the one the scorer will see;
   the threshold is the conformal quantile of the non-malicious flows' scores there;
5. detector input, detector and pretraining objective: fixed defaults (``dst,edge,raw``, fusion,
   contrastive with GradNorm), the top candidate of the leave-one-network-out sweep (:mod:`training.defaults_sweep`,
   ``reports/defaults/report.md``). With ``"auto"`` the selection rule (:func:`select_flow_detector`) picks
   them instead: when the training inputs hold at least ``min_val_attacks`` labelled attacks, the
   (flow parts, detector) pair with the highest per-attack-class partial AUROC at low benign FPR
   (:func:`val_score`) is chosen, near-ties going to the most stable benign threshold; otherwise the
   benign-only threshold-transfer rule picks the detector on ``src,dst,edge``. Test data never enters.
   Comparisons are made on rounded values with a fixed preference order for ties (:func:`pick_best`),
   so float noise cannot flip the choice between candidates that score the same.

Reproducibility (docs/reproducibility.md): the same commit, data, config (seed included), torch thread
count (``GRAPHSENTRY_TORCH_THREADS``, default 1) and library versions give the same model bit for bit,
whatever ``PYTHONHASHSEED`` and whatever else ran before in the process; ``metrics["reproducibility"]``
records the thread count and versions.

One idea per module: :mod:`.config` (:class:`TrainConfig`, candidate lists), :mod:`.determinism`
(seeding, deterministic torch), :mod:`.data` (windows, time-ordered split, graphs), :mod:`.trainer` (the
pretraining loop), :mod:`.embed` (embeddings of window graphs), :mod:`.selection` (the validation rule),
:mod:`.checkpoint` (checkpoints, warm start), :mod:`.assemble` (:func:`train_bundle`).
"""
from __future__ import annotations

from training.pretrain.assemble import train_bundle
from training.pretrain.checkpoint import _plain, load_checkpoint, save_checkpoint, warm_start
from training.pretrain.config import (
    DETECTOR_CANDIDATES,
    FLOW_CANDIDATES,
    OBJECTIVE_CANDIDATES,
    PRETRAIN_PARTS,
    VIEWS,
    TrainConfig,
)
from training.pretrain.data import Prepared, as_table, fingerprint, make_windows, prepare, split_windows, ts_seconds
from training.pretrain.determinism import deterministic_torch, runtime_info, seed_everything
from training.pretrain.embed import embed_blocks, embed_graphs
from training.pretrain.selection import (
    RARE,
    ROUND_DIGITS,
    TIE_REL,
    class_groups,
    pick_best,
    select_flow_detector,
    stratified_keep,
    val_score,
)
from training.pretrain.trainer import EPOCH_RUNNER, Pretrainer

__all__ = ["DETECTOR_CANDIDATES", "EPOCH_RUNNER", "FLOW_CANDIDATES", "OBJECTIVE_CANDIDATES", "PRETRAIN_PARTS",
           "Prepared", "Pretrainer", "RARE", "ROUND_DIGITS", "TIE_REL", "TrainConfig", "VIEWS", "_plain", "as_table",
           "class_groups", "deterministic_torch", "embed_blocks", "embed_graphs", "fingerprint", "load_checkpoint",
           "make_windows", "pick_best", "prepare", "runtime_info", "save_checkpoint", "seed_everything",
           "select_flow_detector", "split_windows", "stratified_keep", "train_bundle", "ts_seconds", "val_score",
           "warm_start"]

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
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from detector.bundle import ModelBundle
from detector.calibration import calibrate_threshold
from detector.detectors import KNNDetector, make_detector, select_detector
from detector.models import STGNN, ModelConfig, parse_flow_parts
from detector.pipeline import FeaturePipeline, PipelineConfig, default_impl, load_featurizer, preprocessor_class
from training.losses import EdgeDGI, GradNormWeighter, ProjectionHead, info_nce
from training.views import feature_view, structural_view, temporal_pairs

log = logging.getLogger(__name__)
# Sharded/multi-process pretraining (training/distributed.py) sets this for the duration of a run: a callable
# ``(trainer, graphs, progress) -> epoch record`` that replaces :meth:`Pretrainer.run_epoch`'s loop.
EPOCH_RUNNER: contextvars.ContextVar = contextvars.ContextVar("graphsentry_epoch_runner", default=None)
VIEWS = ("temporal", "structural", "feature")
PRETRAIN_PARTS = ("src", "dst", "edge")   # the flow embedding the pretraining objectives see
# Detector inputs tried by the validation rule (flow_parts="auto"), in tie-break order.
FLOW_CANDIDATES = ("src,dst,edge", "dst,edge", "dst,edge,raw", "src,dst,edge,raw")
# Detectors tried with detector="auto", in tie-break order; fusion only on inputs ending in raw.
DETECTOR_CANDIDATES = ("iforest", "knn", "fusion")
# Pretraining objectives tried with objective="auto" (only when labelled attacks are held back), in tie-break order.
OBJECTIVE_CANDIDATES = (("contrastive", "gradnorm"), ("contrastive", "fixed"), ("dgi", "gradnorm"))


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the bundle)."""

    window: float = 60.0
    epochs: int = 3
    hidden: int = 64
    layers: int = 2
    time_dim: int = 8
    lr: float = 1e-3
    # objective / flow_parts / detector defaults: the top candidate of the leave-one-network-out sweep
    # (python -m training.defaults_sweep, reports/defaults/report.md); "auto" (the validation rule) is a flag
    objective: str = "contrastive"     # contrastive | dgi | none (random encoder) | auto (OBJECTIVE_CANDIDATES, picked
                                       # on the training inputs' labelled attacks like the detector input)
    weighting: str = "gradnorm"        # gradnorm | fixed
    temporal: bool = True
    use_time: bool = True
    knowledge: bool = True
    node_mode: str = "ip"
    benign_only: bool = False
    val_frac: float = 0.2
    target_fpr: float = 0.01
    detector: str = "fusion"           # fusion (kNN on the embedding + IsolationForest on the raw features; inputs
                                       # ending in raw) | knn | iforest | auto (picked on validation)
    flow_parts: str = "dst,edge,raw"   # e.g. "dst,edge" | auto (picked on validation from FLOW_CANDIDATES)
    validation: str = "labels"         # labels: attacks of the held-back training period pick the input/detector
                                       # (benign rule when fewer than min_val_attacks) | benign: benign rule only
    min_val_attacks: int = 10
    max_val_attacks: int = 5000        # cap on the training inputs' attack flows scored for validation (seeded,
                                       # spread evenly over the attack classes)
    val_max_fpr: float = 0.0           # validation score = per-class partial AUROC up to this benign FPR; 0 = the
                                       # target FPR, raised so that >= 10 held-back benign flows lie in the range
    val_tol: float = 0.005             # candidates within this of the best validation score count as tied; the
                                       # tie goes to the smallest benign threshold drift (then candidate order)
    val_context: bool = True           # held-back windows keep their attacks in the graph (calibration context)
    seed: int = 0
    max_anchors: int = 256             # anchors per InfoNCE term per window (cost bound)
    drop_edge: float = 0.2
    mask_feature: float = 0.2
    temperature: float = 0.2
    max_fit_flows: int = 20000         # cap on benign training flows given to the detectors
    knn_bank: str = "coreset"          # kNN memory bank: coreset (greedy k-center) | random (uniform subsample)
    knn_bank_size: int = 512           # kNN bank rows (scoring cost per flow grows with it)
    gradnorm_every: int = 4            # GradNorm weight update every k steps (second-order grads are costly)
    technique: bool = True             # fit the technique channel (detector.technique_detector, technique.json):
                                       # per-technique benign bounds fused into the scores; False: embedding only
    impl: str = field(default_factory=default_impl)

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {self.window!r}")
        if self.objective not in ("contrastive", "dgi", "none", "auto"):
            raise ValueError(f"objective must be contrastive, dgi, none or auto, got {self.objective!r}")
        if self.weighting not in ("gradnorm", "fixed"):
            raise ValueError(f"weighting must be gradnorm or fixed, got {self.weighting!r}")
        if self.detector not in ("auto", "knn", "iforest", "fusion"):
            raise ValueError(f"detector must be auto, knn, iforest or fusion, got {self.detector!r}")
        if self.detector == "fusion" and self.flow_parts != "auto" and parse_flow_parts(self.flow_parts)[-1] != "raw":
            raise ValueError(f"detector fusion needs flow_parts ending in raw (its forest's input), "
                             f"got {self.flow_parts!r}: e.g. flow_parts='dst,edge,raw' (--flow-parts dst,edge,raw)")
        if self.knn_bank not in KNNDetector.BANKS or self.knn_bank_size < 2:
            raise ValueError(f"knn_bank must be one of {KNNDetector.BANKS} and knn_bank_size >= 2, got "
                             f"{self.knn_bank!r}, {self.knn_bank_size!r}")
        if self.flow_parts != "auto":
            parse_flow_parts(self.flow_parts)
        if self.validation not in ("labels", "benign"):
            raise ValueError(f"validation must be labels or benign, got {self.validation!r}")
        if not 0.0 <= self.val_max_fpr <= 1.0 or not 0.0 <= self.val_tol < 1.0:
            raise ValueError(f"val_max_fpr must be in [0, 1] and val_tol in [0, 1), got {self.val_max_fpr!r}, "
                             f"{self.val_tol!r}")
        if self.min_val_attacks < 1:
            raise ValueError(f"min_val_attacks must be >= 1, got {self.min_val_attacks!r}")
        if not 0.0 < self.val_frac < 1.0:
            raise ValueError(f"val_frac must be in (0, 1), got {self.val_frac!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (called again before every encoder is built,
    so each objective of ``objective="auto"`` starts from the same state whatever ran before it in the
    process). Samplers of the run itself do not draw from these: the contrastive views and anchor samples
    use :attr:`Pretrainer.gen`, subsamples ``np.random.default_rng(cfg.seed)``, detectors ``random_state``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_torch():
    """Run the block with ``torch.use_deterministic_algorithms(True, warn_only=True)``, then restore the
    previous setting. On CPU torch's kernels are deterministic for a fixed thread count already; this makes
    any op without a deterministic implementation say so (a warning) instead of varying silently."""
    was, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


def runtime_info(threads: int) -> dict:
    """What a bit-for-bit reproduction of a run needs besides the commit, data and train config (stored in
    ``metrics["reproducibility"]``): the torch thread count (MKL picks other GEMM kernels for another
    thread count on small odd-sized matrices such as a window's edges x hidden: measured 1.7e-6 on the
    weights after one epoch on the Stratosphere sample, 1 vs 2 threads, which longer training can grow)
    and the numeric library versions (instruction-set dispatch and rounding differ between them)."""
    import sklearn

    return {"torch_threads": int(threads), "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "deterministic_algorithms": True}


def as_table(tables) -> pa.Table:
    """Concatenate tables/record batches into one table."""
    ts = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    if not ts:
        raise ValueError("no input records")
    return pa.concat_tables(ts, promote_options="default") if len(ts) > 1 else ts[0]


def ts_seconds(table: pa.Table) -> np.ndarray:
    return table.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6


def fingerprint(table: pa.Table) -> dict:
    """Cheap, order-sensitive fingerprint of the training records (count, time span, content hash)."""
    h = hashlib.sha256()
    for c in ("ts", "src_ip", "dst_ip", "dst_port", "src_bytes"):
        if c in table.column_names:
            h.update(str(table.column(c).to_pylist()).encode())
    ts = ts_seconds(table)
    lab = table.column("label").to_numpy(zero_copy_only=False) if "label" in table.column_names else None
    return {"records": int(table.num_rows), "sha256": h.hexdigest(),
            "ts_min": float(ts.min()) if len(ts) else None, "ts_max": float(ts.max()) if len(ts) else None,
            "labelled_malicious": int(np.nansum(lab == 1)) if lab is not None else None}


def make_windows(table: pa.Table, size: float):
    """Tumbling windows over ``table`` in event-time order (each record in exactly one window)."""
    from ingest.windows import Tumbling, window_all

    if table.num_rows == 0:
        return []
    # Sorted by time, so with zero lateness nothing is late and every record lands in one window.
    srt = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("row", "ascending")]))
    windows, w = window_all(srt.to_batches(max_chunksize=65536), Tumbling(size), lateness=0.0)
    if w.stats.invalid:
        log.warning("%d records without a timestamp were left out of training", w.stats.invalid)
    return windows


def split_windows(windows: list, val_frac: float) -> tuple[list, list]:
    """Earliest windows for training, the latest ``val_frac`` (by flow count) held back."""
    if len(windows) < 2:
        raise ValueError(f"need at least 2 windows to hold some back for calibration, got {len(windows)}; "
                         "use a smaller --window or more data")
    sizes = np.array([w.table.num_rows for w in windows], dtype=np.float64)
    cum = np.cumsum(sizes) / sizes.sum()
    k = int(np.searchsorted(cum, 1.0 - val_frac)) + 1
    k = min(max(k, 1), len(windows) - 1)
    return windows[:k], windows[k:]


class Pretrainer:
    """Runs the pretraining epochs over a fixed list of window graphs (in time order)."""

    def __init__(self, model: STGNN, cfg: TrainConfig) -> None:
        self.model, self.cfg = model, cfg
        H = cfg.hidden
        self.heads = torch.nn.ModuleDict({
            "temporal": ProjectionHead(H), "structural": ProjectionHead(H), "feature": ProjectionHead(3 * H),
        })
        self.dgi = EdgeDGI(3 * H)
        self.weighter = GradNormWeighter(list(VIEWS), mode=cfg.weighting)
        params = list(model.parameters()) + list(self.heads.parameters()) + list(self.dgi.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0
        self.steps = 0
        self.history: list[dict] = []
        self.epoch_runner = EPOCH_RUNNER.get()  # None: the single-process loop of run_epoch
        self.update = None  # optional callable(total): replaces backward + optimizer step (training/distributed.py)

    def _sample(self, n: int) -> torch.Tensor:
        if n <= self.cfg.max_anchors:
            return torch.arange(n)
        return torch.randperm(n, generator=self.gen)[: self.cfg.max_anchors]

    def _forward(self, d, edge_ids=None, edge_attr=None):
        """Model pass on the full window, or on the subset ``edge_ids`` of its edges (structural view).

        Returns ``(z, h, flow)`` with ``flow = [z_u || z_v || e_uv]`` whatever the detector input is.
        """
        ea = d.edge_attr if edge_attr is None else edge_attr
        ei, dtw, dtp = d.edge_index, d.edge_dt_window, d.edge_dt_prev
        if edge_ids is not None:
            ei, ea, dtw, dtp = ei[:, edge_ids], ea[edge_ids], dtw[edge_ids], dtp[edge_ids]
        z, h, e = self.model.encode(d.x, ei, ea, dtw, dtp, d.node_gid, update_state=False)
        return z, h, STGNN.compose(z, e, ei, ea, PRETRAIN_PARTS)

    def step(self, d, prev) -> tuple[dict[str, float], tuple]:
        cfg, m = self.cfg, self.model
        z, h, flow = self._forward(d)
        losses: dict[str, torch.Tensor] = {}
        if cfg.objective == "dgi":
            perm = torch.randperm(d.edge_attr.size(0), generator=self.gen)
            _, _, flow_c = self._forward(d, edge_attr=d.edge_attr[perm])
            losses["dgi"] = self.dgi(flow, flow_c)
            total = losses["dgi"]
        else:
            if prev is not None:
                ip, ic = temporal_pairs(prev[0], d.node_gid)
                if ic.numel() >= 2:
                    s = self._sample(ic.numel())
                    # anchor: this window's spatial state; positive: the same endpoint's state in the
                    # previous window (detached: gradients stay inside the current window)
                    losses["temporal"] = info_nce(self.heads["temporal"](h[ic[s]]),
                                                  self.heads["temporal"](prev[1][ip[s]]), cfg.temperature)
            if d.num_nodes >= 2 and d.edge_index.size(1) >= 1:
                _, k1 = structural_view(d.edge_index, cfg.drop_edge, self.gen)
                _, k2 = structural_view(d.edge_index, cfg.drop_edge, self.gen)
                z1, _, _ = self._forward(d, edge_ids=k1)
                z2, _, _ = self._forward(d, edge_ids=k2)
                s = self._sample(int(d.num_nodes))
                losses["structural"] = info_nce(self.heads["structural"](z1[s]), self.heads["structural"](z2[s]),
                                                cfg.temperature)
            if d.edge_index.size(1) >= 2:
                _, _, f1 = self._forward(d, edge_attr=feature_view(d.edge_attr, cfg.mask_feature, self.gen))
                _, _, f2 = self._forward(d, edge_attr=feature_view(d.edge_attr, cfg.mask_feature, self.gen))
                s = self._sample(d.edge_index.size(1))
                losses["feature"] = info_nce(self.heads["feature"](f1[s]), self.heads["feature"](f2[s]),
                                             cfg.temperature)
            if not losses:
                total = None
            else:
                self.steps += 1
                upd = self.steps % max(1, cfg.gradnorm_every) == 0
                shared = m.encoder.convs[-1].lin_upd.weight if upd else None
                total = self.weighter.combine(losses, shared)
        if self.update is not None:
            self.update(total)
        elif total is not None:
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            self.opt.step()
        if m.memory is not None:
            m.memory.write(d.node_gid, z.detach(), t=float(d.window_end))
        return {k: float(v.detach()) for k, v in losses.items()}, (d.node_gid, h.detach())

    def run_epoch(self, graphs: list, progress: bool = True) -> dict[str, float]:
        if self.epoch_runner is not None:
            return self.epoch_runner(self, graphs, progress)
        self.model.train()
        self.model.reset_state()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        prev = None
        it = graphs
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(graphs, desc=f"epoch {self.epoch + 1}", unit="win", leave=False, mininterval=2.0)
            it = bar
        for d in it:
            if d.edge_index.size(1) == 0:
                continue
            vals, prev = self.step(d, prev)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            if bar is not None and vals:
                bar.set_postfix({k: f"{sums[k] / counts[k]:.3f}" for k in sums}, refresh=False)
        if bar is not None:
            bar.close()
        self.epoch += 1
        rec = {k: sums[k] / counts[k] for k in sums}
        rec["epoch"] = self.epoch
        if self.cfg.objective == "contrastive":
            rec["weights"] = self.weighter.weights()
        self.history.append(rec)
        return rec

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "heads": self.heads.state_dict(), "dgi": self.dgi.state_dict(),
                "weighter": self.weighter.state_dict(), "weighter_initial": self.weighter.initial,
                "opt": self.opt.state_dict(), "epoch": self.epoch, "steps": self.steps, "history": self.history,
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.heads.load_state_dict(s["heads"])
        self.dgi.load_state_dict(s["dgi"])
        self.weighter.load_state_dict(s["weighter"])
        self.weighter.initial = dict(s["weighter_initial"])
        self.opt.load_state_dict(s["opt"])
        self.epoch, self.history = int(s["epoch"]), list(s["history"])
        self.steps = int(s.get("steps", 0))
        self.gen.set_state(s["gen"])
        torch.set_rng_state(s["torch_rng"])


@torch.no_grad()
def embed_graphs(model: STGNN, graphs: list, reset: bool = True) -> list[np.ndarray]:
    """Flow embeddings per graph, running the temporal state through the sequence in order."""
    model.eval()
    if reset:
        model.reset_state()
    out = []
    for d in graphs:
        _, _, flow = model(d.x, d.edge_index, d.edge_attr, d.edge_dt_window, d.edge_dt_prev, d.node_gid,
                           t=float(d.window_end), update_state=True)
        out.append(flow.numpy())
    return out


@torch.no_grad()
def embed_blocks(model: STGNN, graphs: list, reset: bool = True) -> dict[str, np.ndarray]:
    """Every flow block (``src``, ``dst``, ``edge``, ``raw``) over ``graphs``, stacked, temporal state in order."""
    model.eval()
    if reset:
        model.reset_state()
    out: dict[str, list] = {p: [] for p in ("src", "dst", "edge", "raw")}
    for d in graphs:
        z, _, e = model.encode(d.x, d.edge_index, d.edge_attr, d.edge_dt_window, d.edge_dt_prev, d.node_gid,
                               t=float(d.window_end), update_state=True)
        for p in out:
            out[p].append(STGNN.compose(z, e, d.edge_index, d.edge_attr, (p,)).numpy())
    return {p: _stack(v, model.part_dim(p)) for p, v in out.items()}


def _stack(arrs: list[np.ndarray], dim: int) -> np.ndarray:
    arrs = [a for a in arrs if len(a)]
    return np.concatenate(arrs) if arrs else np.zeros((0, dim), np.float32)


def _auprc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s))


RARE = "(rare classes)"


def class_groups(y: np.ndarray, classes: np.ndarray | None, min_flows: int = 5) -> np.ndarray:
    """Attack class of every malicious flow for the per-class score (``""`` elsewhere).

    Unnamed attacks are one class; classes with fewer than ``min_flows`` flows are pooled into one
    (a partial AUROC over two or three flows is noise).
    """
    out = np.full(len(y), "", dtype=object)
    att = y == 1
    if classes is None:
        out[att] = "malicious"
        return out
    names = np.array(["malicious" if c is None else str(c) for c in classes[att]], dtype=object)
    uniq, counts = np.unique(names, return_counts=True)
    rare = set(uniq[counts < min_flows])
    out[att] = [RARE if n in rare else n for n in names]
    return out


def val_score(y: np.ndarray, s: np.ndarray, groups: np.ndarray, max_fpr: float) -> tuple[float, dict[str, float]]:
    """Macro average over attack classes of the standardised partial AUROC (benign FPR <= ``max_fpr``).

    Why not AUPRC: the training inputs' attacks often outnumber the held-back benign flows (IoT-23:
    21k vs 1.8k), where AUPRC saturates near 1 for every candidate and one easy, huge class (a port
    scan) decides. A partial AUROC does not depend on the attack share, looks only at the low-FPR
    end where alerts are raised, and the macro average gives each attack class one vote.
    """
    from sklearn.metrics import roc_auc_score

    ben = y == 0
    per = {}
    for g in sorted(set(groups[y == 1])):
        m = ben | ((y == 1) & (groups == g))
        per[g] = float(roc_auc_score(y[m] == 1, s[m], max_fpr=max_fpr))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def _val_max_fpr(cfg: "TrainConfig", n_benign: int) -> float:
    base = cfg.val_max_fpr if cfg.val_max_fpr > 0 else cfg.target_fpr
    return float(min(1.0, max(base, 10.0 / max(n_benign, 1))))


# Noise floor of the validation rule's comparisons: scores and drifts are rounded to this many decimals
# before they are compared, and the tie band is at least TIE_REL x the best score. Float noise (summation
# order, a BLAS path) is ~1e-7 and below; a flow crossing a threshold moves a score by ~1/n_flows >> 1e-9.
ROUND_DIGITS = 9
TIE_REL = 1e-3


def _comparable(x) -> float:
    """``x`` rounded to :data:`ROUND_DIGITS` decimals; None/NaN as -inf (never the best, never tied)."""
    if x is None:
        return float("-inf")
    x = float(x)
    return float("-inf") if math.isnan(x) else round(x, ROUND_DIGITS)


def pick_best(scores: dict[str, float], drift: dict[str, float], tol: float) -> str:
    """The candidate the validation rule keeps, independent of float noise and of dict order:

    1. every score is rounded to :data:`ROUND_DIGITS` decimals (None/NaN count as -inf);
    2. candidates within ``max(tol, TIE_REL * |best|)`` of the best rounded score are tied;
    3. among the tied, the smallest benign threshold drift wins (drift rounded the same way, so two
       drifts equal up to float noise are equal);
    4. remaining ties go to the fixed preference order: the order of ``scores``' keys, which callers
       build from :data:`OBJECTIVE_CANDIDATES`, :data:`FLOW_CANDIDATES` x :data:`DETECTOR_CANDIDATES`.

    So the choice can only change when a score or drift moves by more than the rounding, i.e. when the
    models really differ; two candidates that score the same up to noise always resolve the same way.
    """
    keys = list(scores)
    if not keys:
        raise ValueError("no candidate to pick from")
    sc = {k: _comparable(scores[k]) for k in keys}
    top = max(sc.values())
    if top == float("-inf"):
        tied = keys
    else:
        band = round(max(tol, TIE_REL * abs(top)), ROUND_DIGITS)
        tied = [k for k in keys if sc[k] >= round(top - band, ROUND_DIGITS)]
    dr = {k: (-_comparable(-drift[k]) if k in drift and drift[k] is not None else float("inf")) for k in tied}
    return min(tied, key=lambda k: (dr[k], keys.index(k)))


def select_flow_detector(tr_blocks: dict, va_blocks: dict, y_val: np.ndarray, cfg: TrainConfig,
                         groups: np.ndarray | None = None) -> dict:
    """Choose the detector input (flow parts) and detector on the held-back training period.

    * ``validation="labels"`` and at least ``min_val_attacks`` flows labelled malicious (label 1): every
      candidate (``FLOW_CANDIDATES`` x detectors, or the configured ones) is fitted on the benign training
      flows and scored on the validation flows; the highest :func:`val_score` (per attack class partial
      AUROC at low benign FPR, macro) wins; candidates within ``val_tol`` of it are tied and the one
      whose benign threshold transfers best (smallest drift, :func:`detector.detectors.select_detector`)
      wins the tie. ``groups``: attack class per validation flow (:func:`class_groups`).
    * otherwise the benign-only rule of :func:`detector.detectors.select_detector` picks the detector on
      ``src,dst,edge`` (or the configured parts): the one whose training quantile transfers best to the
      later benign flows.

    Returns ``{"rule", "chosen": {flow_parts, detector}, "candidates", "drift", "fitted": (det, val scores),
    "score"}``.
    """
    names = list(DETECTOR_CANDIDATES) if cfg.detector == "auto" else [cfg.detector]
    n_att = int((y_val == 1).sum())
    n_ben = int((y_val == 0).sum())
    by_labels = cfg.validation == "labels" and n_att >= cfg.min_val_attacks and n_ben >= 2
    if cfg.flow_parts != "auto":
        cands = [cfg.flow_parts]
    elif by_labels:
        cands = list(FLOW_CANDIDATES)
    else:  # the benign rule compares detectors on one input: the issue's, or the fusion's with raw features
        cands = ["src,dst,edge,raw" if cfg.detector == "fusion" else FLOW_CANDIDATES[0]]
    if groups is None:
        groups = class_groups(y_val, None)
    max_fpr = _val_max_fpr(cfg, n_ben)
    contamination = cfg.target_fpr if cfg.target_fpr < 0.5 else 0.01
    ev = (y_val == 0) | (y_val == 1)
    results, fitted, tr_s, va_s = {}, {}, {}, {}
    for parts in cands:
        pt = parse_flow_parts(parts)
        Xtr = np.concatenate([tr_blocks[p] for p in pt], axis=1)
        Xva = np.concatenate([va_blocks[p] for p in pt], axis=1)
        for n in names:
            if n == "fusion" and pt[-1] != "raw":
                continue  # the fusion's forest reads the raw block, the input's last part
            kw = dict(bank=cfg.knn_bank, max_bank=cfg.knn_bank_size) if n in ("knn", "fusion") else {}
            if n == "fusion":
                kw["raw_dim"] = tr_blocks["raw"].shape[1]
            det = make_detector(n, contamination=contamination, random_state=cfg.seed, **kw).fit(Xtr)
            key = f"{parts}|{n}"
            s = det.decision_function(Xva)
            fitted[key] = (det, s)
            tr_s[key], va_s[key] = det.decision_scores_, s[y_val != 1]
            if by_labels:
                score, per = val_score(y_val[ev], s[ev], groups[ev], max_fpr)
                results[key] = {"val_score": score, "val_per_class": per, "val_auprc": _auprc(y_val[ev] == 1, s[ev])}
            else:
                results[key] = {"val_score": None, "val_auprc": None}
    _, drift = select_detector(tr_s, va_s, cfg.target_fpr)
    for k in results:
        results[k]["drift"] = drift[k]
    keys = list(results)
    if by_labels:
        n_cls = len(set(groups[y_val == 1]))
        rule = (f"max per-class partial AUROC (benign FPR <= {max_fpr:.3g}, macro over {n_cls} attack classes) on "
                f"the training inputs' labelled flows ({n_att} malicious, {n_ben} held-back benign); within "
                f"{cfg.val_tol} of the best, the smallest benign threshold drift")
        best = pick_best({k: results[k]["val_score"] for k in keys}, drift, cfg.val_tol)
    else:
        rule = "min |FPR on later benign val at train 1-target quantile - target| (no labelled attacks held back)"
        best = min(keys, key=lambda k: (round(drift[k], ROUND_DIGITS), k.split("|")[1], keys.index(k)))
    parts, det_name = best.split("|")
    return {"rule": rule, "chosen": {"flow_parts": parts, "detector": det_name}, "candidates": results,
            "drift": drift, "fitted": fitted[best], "score": results[best]["val_score"]}


def stratified_keep(groups: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded subsample of at most ``budget`` items spread evenly over ``groups`` (water-filling).

    Every class keeps ``min(size, cap)`` items, ``cap`` as large as the budget allows; leftover slots go
    to the largest classes. Returns a boolean mask over ``groups``.
    """
    keep = np.zeros(len(groups), dtype=bool)
    if budget <= 0 or len(groups) == 0:
        return keep
    uniq, inv, sizes = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    take = np.zeros(len(uniq), dtype=np.int64)
    left = budget
    order = np.argsort(sizes, kind="stable")             # smallest classes first: they keep everything
    for i, c in enumerate(order):
        take[c] = min(int(sizes[c]), left // (len(order) - i))
        left -= take[c]
    for c in order[::-1]:                                  # the floor's remainder, to the largest with room
        extra = min(left, int(sizes[c] - take[c]))
        take[c] += extra
        left -= extra
    for c in range(len(uniq)):
        idx = np.flatnonzero(inv == c)
        keep[rng.choice(idx, min(int(take[c]), len(idx)), replace=False)] = True
    return keep


def train_bundle(tables, cfg: TrainConfig, out_dir: str | Path | None = None, progress: bool = True,
                 resume: bool = False, extra_meta: dict | None = None,
                 prepared: "Prepared | None" = None, init_state: dict | None = None) -> ModelBundle:
    """Train encoder + detectors + threshold on ``tables`` (canonical flow records); save when ``out_dir``.

    ``init_state``: a model ``state_dict`` to start pretraining from (warm start, e.g. the deployed
    champion's weights in a retraining job): every tensor whose name and shape match is loaded, the rest
    keep their fresh initialisation; ``metrics["warm_start"]`` says how many were loaded."""
    from detector.runtime import torch_threads

    with torch_threads(), deterministic_torch():
        return _train_bundle(tables, cfg, out_dir, progress, resume, extra_meta, prepared, init_state)


@dataclass
class Prepared:
    """Windows, fitted preprocessing and window graphs of one training set (shareable between runs
    that use the same window size, graph settings and knowledge flag)."""

    table: pa.Table
    records_in: int
    removed: int
    train_w: list
    val_w: list
    pipeline: FeaturePipeline
    graphs: list
    val_graphs: list                   # held-back windows, benign-only records (as trained)
    val_labels: np.ndarray | None = None  # [flows of val_graphs] label per flow (-1 unknown)
    # The whole training period again with every record (attacks included), from a fresh stream; None when
    # nothing was removed (then val_graphs already are the held-back period as scored).
    ctx_graphs: list | None = None
    ctx_labels: np.ndarray | None = None
    ctx_heldback: np.ndarray | None = None  # [flows of ctx_graphs] True inside the held-back period
    ctx_classes: np.ndarray | None = None   # [flows of ctx_graphs] attack class string (None when unnamed)

    def validation(self, context: bool) -> tuple[list, np.ndarray, np.ndarray, bool, np.ndarray | None]:
        """``(graphs, labels, held_back, continue_state, classes)`` for validation and calibration.

        ``context``: the training period with its attacks in the graph (fresh temporal state);
        otherwise the benign-only held-back windows (state continuing from the training windows).
        """
        if context and self.ctx_graphs is not None:
            return self.ctx_graphs, self.ctx_labels, self.ctx_heldback, False, self.ctx_classes
        lab = self.val_labels if self.val_labels is not None else np.full(
            sum(g.edge_index.size(1) for g in self.val_graphs), -1)
        return self.val_graphs, lab, np.ones(len(lab), bool), True, None


def prepare(tables, cfg: TrainConfig) -> Prepared:
    """Filter (``benign_only``), window, split in time, fit the preprocessor, build the graphs."""
    table = as_table(tables)
    full = table
    n_in = table.num_rows
    removed = 0
    if cfg.benign_only and "label" in table.column_names:
        keep = pc.fill_null(pc.not_equal(table.column("label"), 1), True)
        removed = n_in - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    if table.num_rows < 10:
        raise ValueError(f"only {table.num_rows} training records after filtering; need at least 10")
    windows = make_windows(table, cfg.window)
    train_w, val_w = split_windows(windows, cfg.val_frac)
    train_tab = pa.concat_tables([w.table for w in train_w])
    pre = preprocessor_class(cfg.impl)().fit([train_tab])  # label-free, training windows only
    kf = load_featurizer(cfg.knowledge)
    pcfg = PipelineConfig(impl=cfg.impl, node_mode=cfg.node_mode, knowledge=kf is not None)
    pipeline = FeaturePipeline(pre, pcfg, kf)
    stream = pipeline.stream()
    # batched builds (same graphs as window by window); the same stream continues into validation (dt_prev)
    graphs = [d for d, _ in stream.build_all(train_w)]
    ctx_graphs = ctx_labels = ctx_heldback = ctx_classes = None
    if removed and cfg.val_context:
        # the training period as it would be scored: every record, attacks included, in the graph
        ctx_stream = pipeline.stream()
        ctx_graphs = [d for d, _ in ctx_stream.build_all(make_windows(full, cfg.window))]
        ctx_labels = _labels(ctx_graphs)
        ctx_heldback = np.concatenate([np.full(g.edge_index.size(1), float(g.window_start) >= val_w[0].start)
                                       for g in ctx_graphs])
        ctx_classes = _classes(ctx_graphs, full)
    val_graphs = [d for d, _ in stream.build_all(val_w)]
    return Prepared(table, n_in, removed, train_w, val_w, pipeline, graphs, val_graphs, _labels(val_graphs),
                    ctx_graphs, ctx_labels, ctx_heldback, ctx_classes)


def _classes(graphs: list, table: pa.Table) -> np.ndarray:
    """The ``attack`` string of every flow of ``graphs`` (object array; None where the input names none)."""
    n = sum(g.edge_index.size(1) for g in graphs)
    if "attack" not in table.column_names or n == 0:
        return np.full(n, None, dtype=object)
    rows = table.column("row").to_numpy().astype(np.int64)
    order = np.argsort(rows, kind="stable")
    attack = np.asarray(table.column("attack").to_pylist(), dtype=object)[order]
    edge_rows = np.concatenate([g.edge_row.numpy().astype(np.int64) for g in graphs])
    return attack[np.searchsorted(rows[order], edge_rows)]


def _labels(graphs: list) -> np.ndarray:
    out = [g.edge_label.numpy() if getattr(g, "edge_label", None) is not None
           else np.full(g.edge_index.size(1), -1) for g in graphs]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def _plain(x):
    """``x`` with every container, number and string as plain Python (tensors kept): what
    ``torch.load(weights_only=True)`` reads back; anything else (a NumPy scalar) as a float."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return float(x)


def save_checkpoint(trainer: "Pretrainer", path: Path) -> None:
    """``trainer.state_dict()`` to ``path`` (via a temporary file): tensors and plain containers of numbers
    and strings only, so :func:`load_checkpoint` reads it with ``weights_only=True``."""
    tmp = path.with_suffix(".tmp")
    torch.save(_plain(trainer.state_dict()), tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of :func:`save_checkpoint` (``weights_only=True``: nothing in it is executed);
    ValueError naming the file and the fix when it is not one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, a refused object: all "unusable"
        raise ValueError(f"{path} is not a readable training checkpoint ({type(exc).__name__}): delete it and "
                         f"train without --resume") from None


def warm_start(model: STGNN, init_state: dict) -> dict:
    """Load the tensors of ``init_state`` whose name and shape match ``model``'s; ``{"loaded", "of"}``."""
    own = model.state_dict()
    use = {k: v for k, v in init_state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    model.load_state_dict(use, strict=False)
    return {"loaded": len(use), "of": len(own)}


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

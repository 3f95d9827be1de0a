"""The pretraining run's configuration: :class:`TrainConfig` (validated on construction) and the candidate
lists the validation rule chooses from.
"""
from __future__ import annotations

from dataclasses import dataclass

from detector.detectors import KNNDetector
from detector.models import parse_flow_parts

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
    impl: str = "ingest"              # feature implementation recorded in the model (ingest.features/graph)

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

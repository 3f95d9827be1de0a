"""What the training commands share: their inputs, the ``train`` options and the training run.

``graphsentry train|calibrate|evaluate`` (:mod:`training.cli`), ``fraud``, ``retrain`` and every rank of a
``train --nproc N`` job (:mod:`training.distributed`) read their inputs the same way: positional ``INPUT...``
(``--data`` a hidden alias), one canonical table, the stream kind sniffed from the first file.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ingest.cli_ingest import require_parent


def train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``graphsentry train`` (also parsed by each rank of ``--nproc``, training.distributed)."""
    from training.pretrain import TrainConfig

    DEFAULTS = TrainConfig()
    inputs_argument(p, "training inputs")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--format", default="auto", help="input format (default: auto-detect)")
    p.add_argument("--mapping", default=None, help="column mapping file for generic CSV/JSON inputs")
    p.add_argument("--benign-only", action="store_true", help="drop records labelled malicious before training")
    p.add_argument("--epochs", type=int, default=3, help="pretraining epochs (default: 3)")
    p.add_argument("--window", default=None,
                   help="tumbling window size, e.g. 60s, 5m (default: 60s for flows, 1d for transactions)")
    p.add_argument("--kind", choices=["auto", "flows", "transactions"], default="auto",
                   help="flows (spatio-temporal GNN) or transactions (fraud model on heterogeneous graphs); "
                        "default: sniffed from the input")
    p.add_argument("--objective", choices=["auto", "contrastive", "dgi", "none"], default=DEFAULTS.objective,
                   help=f"pretraining objective (default: {DEFAULTS.objective}, chosen on the leave-one-network-out "
                        "benchmark, docs/evaluation-generalise.md; auto = contrastive/GradNorm, contrastive/fixed or "
                        "DGI picked on the training inputs' labelled attacks; dgi = Anomal-E; none = random encoder)")
    p.add_argument("--weighting", choices=["gradnorm", "fixed"], default=DEFAULTS.weighting,
                   help=f"weights of the three contrastive views (default: {DEFAULTS.weighting})")
    p.add_argument("--detector", choices=["auto", "knn", "iforest", "fusion"], default=DEFAULTS.detector,
                   help=f"detector on embeddings (default: {DEFAULTS.detector}; auto = picked on the held-back "
                        "validation flows); fusion = kNN on the embedding + IsolationForest on the raw flow "
                        "features, scores added (detector inputs ending in raw)")
    p.add_argument("--flow-parts", default=DEFAULTS.flow_parts,
                   help=f"detector input, comma-separated from src,dst,edge,raw (default: {DEFAULTS.flow_parts}; "
                        "auto = picked on the training inputs' labelled attacks)")
    p.add_argument("--validation", choices=["labels", "benign"], default="labels",
                   help="labels: the training inputs' labelled attacks pick objective/input/detector (default); "
                        "benign: benign-only threshold-transfer rule")
    p.add_argument("--target-fpr", type=float, default=0.01, help="alert false-positive rate target (default 0.01)")
    p.add_argument("--knn-bank", choices=["coreset", "random"], default="coreset",
                   help="kNN memory bank: coreset = greedy k-center rows covering the benign embeddings "
                        "(default), random = uniform subsample")
    p.add_argument("--knn-bank-size", type=int, default=512,
                   help="kNN bank rows (default 512; a flow's scoring cost grows with it)")
    p.add_argument("--no-temporal", action="store_true", help="ablation: no GRU memory and no time encoding")
    p.add_argument("--no-knowledge", action="store_true", help="ablation: no knowledge-graph features")
    p.add_argument("--no-technique", action="store_true",
                   help="no technique channel (per-technique benign bounds fused into the scores; "
                        "docs/technique-score.md): embedding score only")
    p.add_argument("--node-mode", choices=["ip", "ipport", "as"], default="ip", help="graph nodes (default: ip)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint.pt if present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=0, metavar="N",
                   help="pretrain with N processes on this host (torchrun, gloo, one torch thread each; "
                        "docs/distributed-training.md); default: one process")


def inputs_argument(p: argparse.ArgumentParser, what: str) -> None:
    """Inputs are positional, as in every command; ``--data INPUT...`` stays as a hidden alias."""
    p.add_argument("inputs", nargs="*", metavar="INPUT", help=what)
    p.add_argument("--data", nargs="+", dest="data_alias", default=[], help=argparse.SUPPRESS)


def input_paths(args: argparse.Namespace) -> list[str]:
    """The positional inputs and those given with the ``--data`` alias; at least one."""
    paths = [*args.inputs, *args.data_alias]
    if not paths:
        what = " ".join(x for x in (args.command, getattr(args, "fraud_command", None)) if x)
        raise ValueError(f"no inputs: give the files to read, e.g. graphsentry {what} FILE... --out DIR")
    return paths


def read_table(paths: list[str], fmt: str = "auto"):
    """All records of ``paths`` as one canonical table (malformed lines are counted by the reader)."""
    import pyarrow as pa

    from ingest.readers import open_inputs

    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"input not found: {path}")
    reader = open_inputs(paths, format=fmt)
    batches = list(reader)
    if not batches:
        raise ValueError(f"no records could be read from {paths}")
    return pa.Table.from_batches(batches), reader


def input_kind(paths: list[str], fmt: str = "auto", kind: str = "auto") -> str:
    """``flows`` or ``transactions``: as asked, or sniffed from the first input."""
    if kind != "auto":
        return kind
    from ingest.readers import open_inputs

    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"input not found: {path}")
    return getattr(open_inputs(paths[:1], format=fmt), "kind", "flows")


def window_seconds(args: argparse.Namespace, kind: str) -> float:
    """``--window`` in seconds (default: 60 s for flows, 1 day for transactions)."""
    from ingest.windows import parse_duration

    return parse_duration(args.window or ("1d" if kind == "transactions" else "60s"))


def run_train(args: argparse.Namespace, launch: Callable[[argparse.Namespace], int] | None = None) -> int:
    """``graphsentry train``: flows pretrain the STGNN, transactions train the fraud model. ``launch``
    runs ``--nproc N`` > 1 as N processes (``training.distributed.launch``; rank 0 calls this again without it)."""
    from training.pretrain import TrainConfig, train_bundle

    args.data = input_paths(args)
    require_parent(args.out, "--out")
    kind = input_kind(args.data, args.format, args.kind)
    if kind == "transactions":
        from training.fraud import train

        res = train(args.data, args.out, epochs=args.epochs, window_s=window_seconds(args, kind), seed=args.seed,
                    hidden=args.hidden, progress=not args.no_progress)
        print(json.dumps(res, default=float))
        return 0
    if launch is not None and getattr(args, "nproc", 0) > 1:  # N ranks under torchrun; each rank runs this
        return launch(args)
    cfg = TrainConfig(window=window_seconds(args, kind), epochs=args.epochs, objective=args.objective,
                      weighting=args.weighting, detector=args.detector, target_fpr=args.target_fpr,
                      flow_parts=args.flow_parts, validation=args.validation,
                      temporal=not args.no_temporal, use_time=not args.no_temporal,
                      knowledge=not args.no_knowledge, technique=not args.no_technique,
                      node_mode=args.node_mode, hidden=args.hidden,
                      benign_only=args.benign_only, seed=args.seed, knn_bank=args.knn_bank,
                      knn_bank_size=args.knn_bank_size)
    table, reader = read_table(args.data, args.format)
    if getattr(reader, "kind", "flows") != "flows":
        raise ValueError("these inputs hold transactions: use --kind transactions (or --kind auto)")
    meta = {"inputs": [{"path": str(p), "bytes": Path(p).stat().st_size} for p in args.data],
            "malformed": dict(getattr(getattr(reader, "stats", None), "malformed", {}) or {})}
    bundle = train_bundle([table], cfg, out_dir=args.out, progress=not args.no_progress, resume=args.resume,
                          extra_meta={"training_inputs": meta})
    m = bundle.metrics
    print(json.dumps({"model": str(args.out), "detector": bundle.detector_name, "threshold": bundle.threshold,
                      "flow_parts": bundle.model.config.flow_parts, "objective": m["objective"]["chosen"],
                      "validation_rule": m["detector_selection"]["rule"], "val_attacks": m["val_attacks"],
                      "train_flows": m["train_flows"], "val_flows": m["val_flows"],
                      "removed_malicious": m["removed_malicious"], "seconds": m["total_seconds"]}))
    return 0


def one_line(exc: BaseException) -> str:
    """An exception as the one line a command prints for it (with the missing file's name)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())  # one line, whatever the message held

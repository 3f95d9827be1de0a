"""Subcommands contributed by the `training` package (train, calibrate, evaluate)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ingest.cli_ingest import require_parent


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the `graphsentry` parser."""
    from training.pretrain import TrainConfig

    DEFAULTS = TrainConfig()
    p = subparsers.add_parser(
        "train", help="pretrain the spatio-temporal GNN on flows and write a model directory",
        description="Self-supervised (contrastive) pretraining on earlier windows, detectors fitted on the "
                    "training embeddings, alert threshold calibrated on the latest held-back windows.")
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
    p.set_defaults(func=run_train)

    c = subparsers.add_parser(
        "calibrate", help="refit a model's alert threshold on recent traffic (no retraining), to a new model dir",
        description="Score INPUT... with MODEL_DIR exactly as `graphsentry score` does and write a copy of the "
                    "model whose threshold is the conformal (1 - target FPR) quantile of those scores. For benign "
                    "drift (new devices): the answer to a GraphsentryThresholdDrift alert that is not an attack. "
                    "Records labelled malicious are left out (unless --all-records); unlabelled attacks in the "
                    "inputs raise the threshold.")
    c.add_argument("--model", required=True, metavar="MODEL_DIR", help="the model to recalibrate (left unchanged)")
    inputs_argument(c, "recent traffic to calibrate on")
    c.add_argument("--out", required=True, metavar="NEW_MODEL_DIR", help="model directory to write")
    c.add_argument("--format", default="auto", help="input format (default: auto-detect)")
    c.add_argument("--target-fpr", type=float, default=None, help="default: the model's own target")
    c.add_argument("--all-records", dest="benign_only", action="store_false",
                   help="keep records labelled malicious in the calibration scores")
    c.set_defaults(func=run_calibrate)

    e = subparsers.add_parser(
        "evaluate", help="time-ordered evaluation of the model against baselines and ablations",
        description="Train on --train (earlier), score --test (later / other captures), compare with "
                    "IsolationForest on raw features, Anomal-E (DGI + IsolationForest) and ablations; "
                    "write report.json, report.md and PR/ROC curves.")
    e.add_argument("--train", nargs="+", required=True, metavar="INPUT")
    e.add_argument("--test", nargs="+", required=True, metavar="INPUT")
    e.add_argument("--report", required=True, metavar="DIR")
    e.add_argument("--format", default="auto")
    e.add_argument("--kind", choices=["auto", "flows", "transactions"], default="auto",
                   help="transactions: the Fraud Detection Handbook protocol (rolling folds over --train and "
                        "--test taken together, in time order); default: sniffed from the input")
    e.add_argument("--window", default=None, help="window size (default: 60s for flows, 1d for transactions)")
    e.add_argument("--epochs", type=int, default=3)
    e.add_argument("--benign-only", action="store_true", default=True,
                   help="drop malicious-labelled training records (default: on)")
    e.add_argument("--with-malicious", dest="benign_only", action="store_false",
                   help="keep malicious-labelled records in training (unsupervised contaminated setting)")
    e.add_argument("--max-train", type=int, default=0, help="subsample training records to this many (0: all)")
    e.add_argument("--max-test", type=int, default=0, help="subsample test records to this many (0: all)")
    e.add_argument("--variants", default="all",
                   help="comma list of: ours,no_temporal,no_knowledge,no_pretrain,fixed_weights,dgi_ours,"
                        "anomal_e,iforest_raw (default: all)")
    e.add_argument("--name", default=None, help="split name for the report title")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_evaluate)


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


def _window_s(args: argparse.Namespace, kind: str) -> float:
    from ingest.windows import parse_duration

    return parse_duration(args.window or ("1d" if kind == "transactions" else "60s"))


def run_train(args: argparse.Namespace) -> int:
    from training.pretrain import TrainConfig, train_bundle

    args.data = input_paths(args)
    require_parent(args.out, "--out")
    kind = input_kind(args.data, args.format, args.kind)
    if kind == "transactions":
        from training.fraud import train

        res = train(args.data, args.out, epochs=args.epochs, window_s=_window_s(args, kind), seed=args.seed,
                    hidden=args.hidden, progress=not args.no_progress)
        print(json.dumps(res, default=float))
        return 0
    if getattr(args, "nproc", 0) > 1:  # N ranks under torchrun; rank 0 runs this function (training/distributed.py)
        from training.distributed import launch

        return launch(args)
    cfg = TrainConfig(window=_window_s(args, kind), epochs=args.epochs, objective=args.objective,
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


def run_calibrate(args: argparse.Namespace) -> int:
    from detector.bundle import model_kind
    from training.recalibrate import recalibrate

    args.data = input_paths(args)
    require_parent(args.out, "--out")
    if model_kind(args.model) != "flows":
        raise ValueError("calibrate recalibrates flow models; transaction models are retrained (graphsentry train)")
    table, reader = read_table(args.data, args.format)
    if getattr(reader, "kind", "flows") != "flows":
        raise ValueError("these inputs hold transactions; a flow model scores flows")
    res = recalibrate(args.model, table, args.out, target_fpr=args.target_fpr, benign_only=args.benign_only)
    print(f"{args.out}: threshold {res['previous_threshold']:.6g} -> {res['threshold']:.6g} on {res['used']} records "
          f"(the old threshold flagged {res['flagged_share_before']:.2%} of them, the new one "
          f"{res['flagged_share_after']:.2%}; target {res['target_fpr']:.2%})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    require_parent(args.report, "--report")
    kind = input_kind(args.train, args.format, args.kind)
    if kind == "transactions":
        from training.fraud import evaluate

        rep = evaluate(list(args.train) + list(args.test), args.report, window_s=_window_s(args, kind),
                       epochs=args.epochs, seed=args.seed)
        print((Path(args.report) / "report.md").read_text())
        return 0 if rep.get("summary") else 1
    if args.window is None:
        args.window = "60s"
    from training.evaluate import evaluate_cli

    return evaluate_cli(args)

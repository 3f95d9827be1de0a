"""``graphsentry calibrate``: refit a flow model's alert threshold on recent traffic, into a new model directory."""
from __future__ import annotations

import argparse

from ingest.cli_ingest import require_parent
from training.commands import input_paths, inputs_argument, read_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``calibrate``."""
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
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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

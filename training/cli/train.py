"""``graphsentry train``: pretrain the spatio-temporal GNN (flows) or the fraud model (transactions).

The options are :func:`training.commands.train_arguments` (each rank of ``--nproc N`` parses the same ones);
the run is :func:`training.commands.run_train`, given the launcher of ``--nproc`` jobs.
"""
from __future__ import annotations

import argparse

from training.commands import run_train, train_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    p = subparsers.add_parser(
        "train", help="pretrain the spatio-temporal GNN on flows and write a model directory",
        description="Self-supervised (contrastive) pretraining on earlier windows, detectors fitted on the "
                    "training embeddings, alert threshold calibrated on the latest held-back windows.")
    train_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.distributed import launch

    return run_train(args, launch=launch)

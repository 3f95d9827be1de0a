"""``graphsentry retrain --nproc N``: one rank's process under torchrun.

Rank 0 runs the whole retraining job (:func:`training.retrain.cmd_retrain`: reading the archive, the gate,
the registry); the pretraining of the challenger is sharded over the ranks exactly as for
``graphsentry train --nproc N`` (:mod:`training.distributed`: contiguous runs of windows balanced by edge
count, gradients all-reduced, rank 0 writes the model). The other ranks only pretrain; they read nothing
and write nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.distributed import Leader, lead, main


def rank0(leader: Leader, args_json: Path | None, argv: list[str]) -> int:
    """Rank 0: the retraining job of the launcher's options (``--args-json``) or of ``argv`` (``retrain --archive
    ...``), its pretraining led by ``leader``."""
    from training.retrain import cmd_retrain, register

    if args_json is not None:      # graphsentry retrain --nproc N wrote the options
        ns = argparse.Namespace(**json.loads(args_json.read_text()))
    else:                          # several hosts: torchrun ... -m training.retrain_worker retrain --archive ...
        if not argv or argv[0] != "retrain":
            raise ValueError("give the retraining command after the module: python -m training.retrain_worker "
                             "retrain --archive DIR --registry DIR [options]")
        ap = argparse.ArgumentParser(prog="graphsentry")
        register(ap.add_subparsers())
        ns = ap.parse_args(argv)
    ns.nproc = 0
    return lead(leader, lambda: cmd_retrain(ns), what="retrain")


if __name__ == "__main__":
    main(rank0, prog="python -m training.retrain_worker")

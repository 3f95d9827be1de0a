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
    """Rank 0: the retraining job of the launcher's options (``--args-json``), its pretraining led by ``leader``."""
    from training.retrain import cmd_retrain

    if args_json is None:
        raise ValueError("python -m training.retrain_worker is started by graphsentry retrain --nproc N "
                         "(it passes --args-json)")
    ns = argparse.Namespace(**json.loads(args_json.read_text()))
    ns.nproc = 0
    return lead(leader, lambda: cmd_retrain(ns), what="retrain")


if __name__ == "__main__":
    main(rank0, prog="python -m training.retrain_worker")

"""Training checkpoints (tensors and plain containers only, read back with ``weights_only=True``) and the
warm start of a model from another model's weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from detector.models import STGNN
from training.pretrain.trainer import Pretrainer


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


def save_checkpoint(trainer: Pretrainer, path: Path) -> None:
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

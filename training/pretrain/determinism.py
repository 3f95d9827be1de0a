"""Bit-for-bit reproducible training: seeding, deterministic torch settings and the run's library versions
(docs/reproducibility.md).
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


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

"""Runtime settings: thread counts for torch, and numba-compiled kernels.

Window graphs are small (tens to thousands of edges): there torch's intra-op
parallelism costs more than it gives, and on a shared 2-core machine it is
up to 10x slower (measured: E-GraphSAGE layer forward+backward on 60 edges,
24 ms with 2 threads vs 2.2 ms with 1 under load). Training, offline scoring and
evaluation therefore run single-threaded unless ``GRAPHSENTRY_TORCH_THREADS``
says otherwise.

The thread count is part of what defines a trained model: MKL picks other GEMM
kernels for another count on small odd-sized matrices, so training with 1 and
with 2 threads gives weights that differ at float level (~1e-6 after one epoch).
The same count gives the same model bit for bit; training records it in
``metrics["reproducibility"]`` (docs/reproducibility.md).
"""
from __future__ import annotations

import contextlib
import os

import torch


def default_threads() -> int:
    try:
        return max(1, int(os.environ.get("GRAPHSENTRY_TORCH_THREADS", "1")))
    except ValueError:
        return 1


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    """Run the block with ``n`` torch threads (default: ``default_threads()``), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(old)


def compiled(fn):
    """``fn`` compiled by numba with the GIL released (the scorer calls kernels from two threads),
    cached on disk where numba finds a writable place (:func:`ingest.jit.jit`); None where numba is not
    installed (callers keep a NumPy/torch path)."""
    from ingest.jit import jit

    out = jit(fn)
    return None if out is fn else out

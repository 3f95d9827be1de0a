"""numba compilation of the behaviour kernels, with the plain-Python function as the fallback.

numba is a pinned dependency, so the compiled path is the one that runs; the fallback keeps the package
importable (and correct, ~100x slower) on a platform without a numba wheel.
"""
from __future__ import annotations

__all__ = ["jit"]


def jit(fn):
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - no numba wheel: the Python loop
        return fn
    try:
        return njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # pragma: no cover - no writable cache location
        return njit(nogil=True)(fn)

"""numba compilation of a kernel, with the plain-Python function as the fallback: the one place the
packages compile (``detector.runtime.compiled`` uses it too).

numba is a pinned dependency, so the compiled path is the one that runs; the fallback keeps the package
importable (and correct, ~100x slower) on a platform without a numba wheel. Compiled with the GIL released
(kernels run on several threads), cached on disk where numba finds a writable place.
"""
from __future__ import annotations

__all__ = ["jit"]


def jit(fn):
    """``fn`` compiled by numba, or ``fn`` itself where numba is not installed."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - no numba wheel: the Python loop
        return fn
    try:
        return njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # pragma: no cover - no writable cache location
        return njit(nogil=True)(fn)

"""64-bit keyed hashes of entity keys, computed over Arrow string buffers (no Python string per key).

A source host is the hash of its address text; a pair mixes the hashes of its two addresses; a service
mixes the destination's hash with its port and protocol text. The hash is FNV-1a over the UTF-8 bytes,
started from a seed (``BehaviourParams.seed``, kept in checkpoints) and finished with the splitmix64
mixer. It is not cryptographic: two keys with the same 64-bit hash would share state (about one chance
in 10^9 for 200,000 keys held at once); the seed keeps outsiders from aiming at collisions.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.jit import jit

__all__ = ["hash_strings", "mix", "hash_text"]


def _splitmix(h):  # pragma: no cover - numba
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


_splitmix_c = jit(_splitmix)


def _hash_strings(offsets, data, seed, out):  # pragma: no cover - numba
    for i in range(len(out)):
        h = np.uint64(0xCBF29CE484222325) ^ seed
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = _splitmix_c(h)


def _mix(a, b, out):  # pragma: no cover - numba
    for i in range(len(out)):
        out[i] = _splitmix_c(a[i] ^ _splitmix_c(b[i] + np.uint64(0x9E3779B97F4A7C15)))


_hash_kernel = jit(_hash_strings)
_mix_kernel = jit(_mix)


def hash_strings(arr: pa.Array, seed: int) -> np.ndarray:
    """uint64 hash per value of a string array (a null hashes as the empty string)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    if arr.null_count:  # a null's offsets may span arbitrary bytes in Arrow: hash it as ""
        arr = pc.fill_null(arr, "")
    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    _hash_kernel(offsets, data, np.uint64(seed), out)
    return out


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Order-sensitive combination of two uint64 hash arrays."""
    out = np.empty(len(a), dtype=np.uint64)
    _mix_kernel(np.ascontiguousarray(a, dtype=np.uint64), np.ascontiguousarray(b, dtype=np.uint64), out)
    return out


def hash_text(values, seed: int) -> np.ndarray:
    """Hashes of Python strings (tests, look-ups by key): the same as :func:`hash_strings`."""
    return hash_strings(pa.array(list(values), pa.string()), seed)

"""Small tensor helpers shared by the feature pipeline and the model."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def cat_rows(parts: Sequence[Tensor]) -> Tensor:
    """``torch.cat(parts)`` along dim 0, without a copy when the parts already lie back to back.

    Graphs of one ``build_many`` call are row slices of one tensor per group: stitching them back
    together is then a view of the rows they span (same values, no copy). Otherwise a plain ``cat``.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("cat_rows needs at least one tensor")
    first = parts[0]
    if len(parts) == 1:
        return first
    if first.dim() >= 1 and all(p.is_contiguous() and p.dtype == first.dtype and p.device == first.device
                                and p.shape[1:] == first.shape[1:] for p in parts):
        row = first.stride(0)  # elements per row of a contiguous tensor (1 for 1-D)
        storage = first.untyped_storage().data_ptr()
        offset = first.storage_offset()
        adjacent = True
        for p in parts:
            if p.untyped_storage().data_ptr() != storage or p.storage_offset() != offset:
                adjacent = False
                break
            offset += p.shape[0] * row
        if adjacent:
            rows = sum(p.shape[0] for p in parts)
            return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())
    return torch.cat(parts)


class FactoredRows:
    """A float32 matrix kept as its column blocks ``[A_1[i_1] ‖ A_2[i_2] ‖ ...]``, without building it.

    Each block is ``(A, index)``: ``index`` None = one row of ``A`` per row (a flow's own features);
    otherwise row ``r`` takes ``A[index[r]]`` (an endpoint's embedding, shared by all its flows). The
    flow embeddings ``[z_u ‖ z_v ‖ e_uv]`` of a window group are such a matrix: on LUFlow a 5-minute
    window holds ~33 flows per endpoint, so a detector that works per block (the kNN search) computes
    the endpoint parts once per endpoint. ``np.asarray`` gives the plain matrix (any other detector).
    """

    def __init__(self, blocks: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> None:
        self.blocks = [(np.ascontiguousarray(a, dtype=np.float32), None if i is None else np.asarray(i, np.int64))
                       for a, i in blocks]
        lens = {len(a) if i is None else len(i) for a, i in self.blocks}
        if len(lens) != 1:
            raise ValueError(f"blocks of different row counts: {sorted(lens)}")
        self.n_rows = lens.pop()

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, sum(a.shape[1] for a, _ in self.blocks)

    def __len__(self) -> int:
        return self.n_rows

    def rows(self, lo: int, hi: int) -> FactoredRows:
        """Rows ``lo:hi`` (views of the blocks)."""
        return FactoredRows([(a[lo:hi], None) if i is None else (a, i[lo:hi]) for a, i in self.blocks])

    def dense(self) -> np.ndarray:
        """The plain ``[n_rows, width]`` matrix."""
        return np.concatenate([a if i is None else a[i] for a, i in self.blocks], axis=1)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.dense()
        return out if dtype is None else out.astype(dtype, copy=False)

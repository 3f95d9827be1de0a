"""Small tensor helpers shared by the feature pipeline and the model."""
from __future__ import annotations

from collections.abc import Sequence

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

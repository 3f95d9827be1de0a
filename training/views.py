"""Augmented views of one window graph for contrastive pretraining (STG-NIDS)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import dropout_edge, mask_feature


def structural_view(edge_index: Tensor, p: float = 0.2, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Drop each edge with probability ``p``; returns ``(edge_index_kept, kept_edge_ids)``.

    At least one edge is always kept so that the view stays a graph.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    E = edge_index.size(1)
    if generator is not None:  # seeded path (dropout_edge uses the global RNG)
        keep = torch.rand(E, generator=generator) >= p
        if E and not keep.any():
            keep[0] = True
        ids = keep.nonzero().view(-1)
        return edge_index[:, ids], ids
    ei, mask = dropout_edge(edge_index, p=p, training=True)
    if E and mask.sum() == 0:
        mask[0] = True
        ei = edge_index[:, mask]
    return ei, mask.nonzero().view(-1)


def feature_view(edge_attr: Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> Tensor:
    """Zero whole feature columns with probability ``p`` (same columns for every edge)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    if edge_attr.size(-1) == 0:
        return edge_attr
    if generator is not None:
        keep = (torch.rand(edge_attr.size(-1), generator=generator) >= p).to(edge_attr.dtype)
        return edge_attr * keep
    out, _ = mask_feature(edge_attr, p=p, mode="col", training=True)
    return out


def temporal_pairs(prev_gid: Tensor, cur_gid: Tensor) -> tuple[Tensor, Tensor]:
    """Indices ``(i_prev, i_cur)`` of endpoints present in both adjacent windows (the temporal positives)."""
    if prev_gid.numel() == 0 or cur_gid.numel() == 0:
        e = torch.zeros(0, dtype=torch.long)
        return e, e
    order = torch.argsort(prev_gid)
    sorted_prev = prev_gid[order]
    pos = torch.searchsorted(sorted_prev, cur_gid).clamp_max(sorted_prev.numel() - 1)
    hit = sorted_prev[pos] == cur_gid
    return order[pos[hit]], hit.nonzero().view(-1)

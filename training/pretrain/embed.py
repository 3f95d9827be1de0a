"""Embeddings of window graphs by a trained encoder, in stream order (the memory carried from window to
window), as flow blocks per part.
"""
from __future__ import annotations

import numpy as np
import torch

from detector.models import STGNN


@torch.no_grad()
def embed_graphs(model: STGNN, graphs: list, reset: bool = True) -> list[np.ndarray]:
    """Flow embeddings per graph, running the temporal state through the sequence in order."""
    model.eval()
    if reset:
        model.reset_state()
    out = []
    for d in graphs:
        _, _, flow = model(d.x, d.edge_index, d.edge_attr, d.edge_dt_window, d.edge_dt_prev, d.node_gid,
                           t=float(d.window_end), update_state=True)
        out.append(flow.numpy())
    return out


@torch.no_grad()
def embed_blocks(model: STGNN, graphs: list, reset: bool = True) -> dict[str, np.ndarray]:
    """Every flow block (``src``, ``dst``, ``edge``, ``raw``) over ``graphs``, stacked, temporal state in order."""
    model.eval()
    if reset:
        model.reset_state()
    out: dict[str, list] = {p: [] for p in ("src", "dst", "edge", "raw")}
    for d in graphs:
        z, _, e = model.encode(d.x, d.edge_index, d.edge_attr, d.edge_dt_window, d.edge_dt_prev, d.node_gid,
                               t=float(d.window_end), update_state=True)
        for p in out:
            out[p].append(STGNN.compose(z, e, d.edge_index, d.edge_attr, (p,)).numpy())
    return {p: _stack(v, model.part_dim(p)) for p, v in out.items()}


def _stack(arrs: list[np.ndarray], dim: int) -> np.ndarray:
    arrs = [a for a in arrs if len(a)]
    return np.concatenate(arrs) if arrs else np.zeros((0, dim), np.float32)

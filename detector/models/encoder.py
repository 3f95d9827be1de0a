"""Spatial encoder: input projections + a stack of E-GraphSAGE layers."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detector.layers import EGraphSAGEConv
from detector.models.time_encoder import TimeEncoder


class EdgeGraphEncoder(nn.Module):
    r"""Encode one window graph.

    Edge input = flow features :math:`\Vert` knowledge block :math:`\Vert`
    time encodings of (time inside the window, time since the source's previous
    flow); node input = GraphBuilder ``x`` :math:`\Vert` knowledge node block.
    Both are projected to ``hidden`` and fed to ``layers`` E-GraphSAGE layers.

    Shapes:
        - x :math:`(N, node\_in)`, edge_index :math:`(2, E)`, edge_attr :math:`(E, edge\_in)`,
          dt_window, dt_prev :math:`(E,)`
        - optional ``edge_kb = (rows, index)``: rows :math:`(R, K)`, index :math:`(E,)`; then edge_attr
          is :math:`(E, edge\_in - K)` and its last K columns are ``rows[index]`` (see :meth:`forward`)
        - output: node states :math:`(N, hidden)`, edge states :math:`(E, hidden)`
    """

    def __init__(self, node_in: int, edge_in: int, hidden: int = 64, layers: int = 2,
                 time_dim: int = 8, use_time: bool = True) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.node_in, self.edge_in, self.hidden, self.use_time = node_in, edge_in, hidden, use_time
        self.time_win = TimeEncoder(time_dim, max_period=3600.0)
        self.time_prev = TimeEncoder(time_dim, max_period=1e5)
        e_total = edge_in + (self.time_win.out_dim + self.time_prev.out_dim if use_time else 0)
        self.node_proj = nn.Linear(max(node_in, 1), hidden)
        self.edge_proj = nn.Linear(max(e_total, 1), hidden)
        self.convs = nn.ModuleList(
            EGraphSAGEConv(hidden, hidden, edge_dim=hidden, act=(i < layers - 1)) for i in range(layers)
        )

    def reset_parameters(self) -> None:
        for m in (self.time_win, self.time_prev, self.node_proj, self.edge_proj, *self.convs):
            m.reset_parameters()

    def edge_input(self, edge_attr: Tensor, dt_window: Tensor, dt_prev: Tensor) -> Tensor:
        parts = [edge_attr]
        if self.use_time:
            parts += [self.time_win(dt_window), self.time_prev(dt_prev)]
        e = torch.cat(parts, dim=-1)
        if e.size(-1) == 0:  # no edge features at all: a constant column keeps shapes valid
            e = torch.ones(edge_attr.size(0), 1)
        return e

    def _project_edges(self, edge_attr: Tensor, dt_window: Tensor, dt_prev: Tensor,
                       edge_kb: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``edge_proj(edge_input(...))`` without building the [E, edge_in + time] input: the flow
        features, the time encodings (and a factored knowledge block) are multiplied by their own
        column blocks of the weight and summed (same parameters and maths, float rounding differs).
        Saves a copy of the widest matrix of the model (edge_in is ~320 with the knowledge block).
        With ``edge_kb = (rows, index)`` the block's columns are projected once per distinct row
        (``rows @ W_kb^T``, R is ~1/4 of E on LUFlow) and gathered per edge."""
        if edge_kb is None and (not self.use_time or self.edge_in == 0):
            return self.edge_proj(self.edge_input(edge_attr, dt_window, dt_prev))
        w, f = self.edge_proj.weight, edge_attr.size(-1)
        k = f if edge_kb is None else f + edge_kb[0].size(-1)  # == edge_in (checked in forward)
        if self.use_time:
            t = torch.cat([self.time_win(dt_window), self.time_prev(dt_prev)], dim=-1)  # [E, 2 * (time_dim + 1)]
            base = nn.functional.linear(t, w[:, k:], self.edge_proj.bias)  # [E, H]
        else:
            base = self.edge_proj.bias.expand(edge_attr.size(0), -1)
        out = torch.addmm(base, edge_attr.float(), w[:, :f].t()) if f else base.clone()  # [E, H]
        if edge_kb is not None:
            rows, index = edge_kb
            out += nn.functional.embedding(index, nn.functional.linear(rows.float(), w[:, f:k]))  # [E, H]
        return out

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, dt_window: Tensor,
                dt_prev: Tensor, edge_kb: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``edge_kb = (rows, index)``: the knowledge block of the edges in factored form, the same as
        passing ``torch.cat([edge_attr, rows[index]], 1)`` (up to float rounding) without building it:
        consecutive windows share most block rows (batch scoring, :meth:`STGNN.spatial_many`)."""
        if x.size(-1) == 0:
            x = torch.ones(x.size(0), 1)
        width = edge_attr.size(-1) + (edge_kb[0].size(-1) if edge_kb is not None else 0)
        if width != self.edge_in:
            raise ValueError(f"edge_attr has {width} features, the model expects edge_in={self.edge_in}")
        if edge_kb is not None and edge_kb[1].size(0) != edge_attr.size(0):
            raise ValueError(f"edge_kb index has {edge_kb[1].size(0)} rows for {edge_attr.size(0)} edges")
        if x.size(-1) != max(self.node_in, 1):
            raise ValueError(f"x has {x.size(-1)} features, the model expects node_in={self.node_in}")
        e = torch.relu(self._project_edges(edge_attr, dt_window, dt_prev, edge_kb))  # [E, H]
        h = torch.relu(self.node_proj(x))  # [N, H]
        for conv in self.convs:
            h = conv(h, edge_index, e)  # [N, H]
        return h, e

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

    def _project_edges(self, edge_attr: Tensor, dt_window: Tensor, dt_prev: Tensor) -> Tensor:
        """``edge_proj(edge_input(...))`` without building the [E, edge_in + time] input: the flow
        features and the time encodings are multiplied by their own column blocks of the weight and
        summed (same parameters and maths, float rounding differs). Saves a copy of the widest
        matrix of the model (edge_in is ~320 with the knowledge block)."""
        if not self.use_time or self.edge_in == 0:
            return self.edge_proj(self.edge_input(edge_attr, dt_window, dt_prev))
        w, k = self.edge_proj.weight, self.edge_in
        t = torch.cat([self.time_win(dt_window), self.time_prev(dt_prev)], dim=-1)  # [E, 2 * (time_dim + 1)]
        return torch.addmm(nn.functional.linear(t, w[:, k:], self.edge_proj.bias), edge_attr.float(), w[:, :k].t())

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, dt_window: Tensor,
                dt_prev: Tensor) -> tuple[Tensor, Tensor]:
        if x.size(-1) == 0:
            x = torch.ones(x.size(0), 1)
        if edge_attr.size(-1) != self.edge_in:
            raise ValueError(f"edge_attr has {edge_attr.size(-1)} features, the model expects edge_in={self.edge_in}")
        if x.size(-1) != max(self.node_in, 1):
            raise ValueError(f"x has {x.size(-1)} features, the model expects node_in={self.node_in}")
        e = torch.relu(self._project_edges(edge_attr, dt_window, dt_prev))  # [E, H]
        h = torch.relu(self.node_proj(x))  # [N, H]
        for conv in self.convs:
            h = conv(h, edge_index, e)  # [N, H]
        return h, e

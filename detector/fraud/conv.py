"""Time-aware relational attention, one relation of a heterogeneous transaction graph."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


class TimeRelAttnConv(MessagePassing):
    r"""Relation-specific attention whose weights decay with the time gap (TMR-GGNN style).

    For one relation :math:`r` (e.g. ``customer -pays-> terminal``), with edge
    features :math:`e_{ji}` and time gap :math:`\Delta t_{ji}` (seconds between the
    transaction and the moment the window is read):

    .. math::
        m_{ji} = W_r h_j + W^e_r e_{ji}

        s_{ji} = \mathrm{LeakyReLU}\big(a_r^\top [W^d_r h_i \,\|\, m_{ji}]\big)
                 - \mathrm{softplus}(\beta_r)\, \log(1 + \Delta t_{ji} / \tau)

        \alpha_{ji} = \mathrm{softmax}_{j \in \mathcal{N}(i)}(s_{ji})

        h_i' = \mathrm{ReLU}\big(W^s_r h_i + \textstyle\sum_j \alpha_{ji} m_{ji}\big)

    The learned decay :math:`\beta_r` (one per head) lets each relation decide how
    much recent transactions should dominate older ones in the same window.

    Args:
        in_src (int): source node channels.
        in_dst (int): destination node channels.
        out_channels (int): output channels (split across heads).
        edge_dim (int): edge feature size.
        heads (int, optional): attention heads (default: ``2``).
        tau (float, optional): time scale in seconds (default: ``3600.0``).

    Shapes:
        - **input:** x_src ``(N_src, in_src)``, x_dst ``(N_dst, in_dst)``,
          edge_index ``(2, E)`` (row 0 = source), edge_attr ``(E, edge_dim)``, dt ``(E,)``
        - **output:** ``(N_dst, out_channels)``
    """

    def __init__(self, in_src: int, in_dst: int, out_channels: int, edge_dim: int,
                 heads: int = 2, tau: float = 3600.0) -> None:
        super().__init__(aggr="add", node_dim=0)
        if out_channels % heads:
            raise ValueError(f"out_channels={out_channels} must be divisible by heads={heads}")
        self.in_src, self.in_dst, self.out_channels = in_src, in_dst, out_channels
        self.edge_dim, self.heads, self.tau = edge_dim, heads, float(tau)
        self.dh = out_channels // heads
        self.lin_src = nn.Linear(in_src, out_channels, bias=False)
        self.lin_edge = nn.Linear(edge_dim, out_channels, bias=False)
        self.lin_dst = nn.Linear(in_dst, out_channels, bias=False)
        self.lin_self = nn.Linear(in_dst, out_channels)
        self.att = nn.Parameter(torch.empty(1, heads, 2 * self.dh))
        self.beta = nn.Parameter(torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_src, self.lin_edge, self.lin_dst, self.lin_self):
            lin.reset_parameters()
        nn.init.xavier_uniform_(self.att)
        nn.init.constant_(self.beta, -1.0)  # softplus(-1) ~ 0.31: mild recency preference at start

    def forward(self, x_src: Tensor, x_dst: Tensor, edge_index: Tensor, edge_attr: Tensor, dt: Tensor) -> Tensor:
        if edge_attr.size(-1) != self.edge_dim:
            raise ValueError(f"edge_attr has {edge_attr.size(-1)} features but edge_dim={self.edge_dim}; set edge_dim")
        H, D = self.heads, self.dh
        m = (self.lin_src(x_src)[edge_index[0]] + self.lin_edge(edge_attr)).view(-1, H, D)   # [E, H, D]
        q = self.lin_dst(x_dst).view(-1, H, D)                                               # [N_dst, H, D]
        decay = F.softplus(self.beta).view(1, H) * torch.log1p(dt.clamp_min(0) / self.tau).view(-1, 1)  # [E, H]
        agg = self.propagate(edge_index, m=m, q=q, decay=decay, size=(x_src.size(0), x_dst.size(0)))
        return F.relu(self.lin_self(x_dst) + agg.reshape(-1, H * D))

    def message(self, m: Tensor, q_i: Tensor, decay: Tensor, index: Tensor, ptr: Tensor | None,
                size_i: int | None) -> Tensor:
        s = F.leaky_relu((torch.cat([q_i, m], dim=-1) * self.att).sum(-1), 0.2) - decay    # [E, H]
        alpha = softmax(s, index, ptr, size_i)
        return m * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_src}, {self.in_dst}, {self.out_channels}, "
                f"edge_dim={self.edge_dim}, heads={self.heads}, tau={self.tau})")

"""Edge-feature GraphSAGE convolution (E-GraphSAGE, Lo et al., NOMS 2022)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter


class EGraphSAGEConv(MessagePassing):
    r"""The edge-feature GraphSAGE operator from `"E-GraphSAGE: A Graph Neural
    Network based Intrusion Detection System for IoT" <https://arxiv.org/abs/2103.16329>`_.

    Every flow is an edge ``u -> v`` carrying its features :math:`e_{uv}`; the
    message is built from the source state and the edge, mean-aggregated at the
    destination, and combined with the destination's own state:

    .. math::
        m_{uv} &= \mathbf{W}_1 [\, h_u \,\Vert\, e_{uv} \,]

        h_{\mathcal{N}(v)} &= \operatorname{mean}_{u \in \mathcal{N}(v)} m_{uv}

        h_v' &= \operatorname{ReLU}\big(\mathbf{W}_2 [\, h_v \,\Vert\, h_{\mathcal{N}(v)} \,]\big)

    Nodes without incoming edges get :math:`h_{\mathcal{N}(v)} = 0`.

    Args:
        in_channels (int): size of each node state :math:`h`.
        out_channels (int): size of each output node state.
        edge_dim (int): size of each edge feature vector :math:`e_{uv}`
            (0 means no edge features). (default: :obj:`0`)
        aggr (str): neighbourhood aggregation. (default: :obj:`"mean"`)
        act (bool): apply the ReLU of the update rule; the last layer of an
            encoder may switch it off. (default: :obj:`True`)
        bias (bool): learn additive biases. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`,
          edge indices :math:`(2, |\mathcal{E}|)`,
          edge features :math:`(|\mathcal{E}|, D)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})`
    """

    # Without autograd (scoring), mean/sum aggregate the raw pairs and apply W_1 per node
    # (:meth:`_aggregate_linear`, ~3-6% less scoring CPU on LUFlow); False: per edge always. Training keeps
    # the per-edge order: the evaluation reports were trained with it, and another rounding order moves a
    # training run enough to flip which detector validation picks (measured on Stratosphere 008: kNN -> forest).
    LINEAR_AGGR = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        edge_dim: int = 0,
        aggr: str = "mean",
        act: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(aggr=aggr)
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"in_channels and out_channels must be > 0, got {in_channels}, {out_channels}")
        if edge_dim < 0:
            raise ValueError(f"edge_dim must be >= 0, got {edge_dim}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.edge_dim = edge_dim
        self.act = act
        self.lin_msg = nn.Linear(in_channels + edge_dim, out_channels, bias=bias)
        self.lin_upd = nn.Linear(in_channels + out_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_msg.reset_parameters()
        self.lin_upd.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but the layer expects (num_nodes, {self.in_channels}); "
                f"set in_channels={x.size(-1) if x.dim() == 2 else '?'}"
            )
        if self.edge_dim > 0:
            if edge_attr is None:
                raise ValueError(f"edge_attr is required because edge_dim={self.edge_dim}")
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            if edge_attr.size(-1) != self.edge_dim:
                raise ValueError(
                    f"edge_attr has {edge_attr.size(-1)} features but the layer was built with "
                    f"edge_dim={self.edge_dim}; set edge_dim={edge_attr.size(-1)}"
                )
            if edge_attr.size(0) != edge_index.size(1):
                raise ValueError(
                    f"edge_attr has {edge_attr.size(0)} rows but edge_index has {edge_index.size(1)} edges"
                )
        elif edge_attr is not None and edge_attr.numel() > 0:
            raise ValueError(
                f"edge_attr given with {edge_attr.size(-1)} features but the layer was built with "
                f"edge_dim=0; set edge_dim={edge_attr.size(-1)}"
            )
        if self.LINEAR_AGGR and self.aggr in ("mean", "sum", "add") and not torch.is_grad_enabled():
            h_neigh = self._aggregate_linear(x, edge_index, edge_attr)  # [N, out_channels]
        else:
            # W_1 [h_u || e_uv] = W_1x h_u + W_1e e_uv: the node part is projected once per node and gathered
            x_msg = nn.functional.linear(x, self.lin_msg.weight[:, :self.in_channels])  # [N, out_channels]
            h_neigh = self.propagate(edge_index, x=x_msg, edge_attr=edge_attr, size=(x.size(0), x.size(0)))
        out = self.lin_upd(torch.cat([x, h_neigh], dim=-1))  # [N, out_channels]
        return out.relu() if self.act else out

    def _aggregate_linear(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        r""":math:`h_{\mathcal{N}(v)}` for a mean (or sum) aggregation, which commutes with
        :math:`\mathbf{W}_1`: :math:`\operatorname{mean}_u \mathbf{W}_1 [h_u \Vert e_{uv}] + b =
        \mathbf{W}_1 \operatorname{mean}_u [h_u \Vert e_{uv}] + b`. The raw pairs are summed per
        destination and projected once per node instead of once per edge (flows outnumber endpoints
        several times in a window); the same parameters and maths as :meth:`message` + the aggregation,
        float rounding aside."""
        n = x.size(0)
        src, dst = edge_index
        deg = torch.bincount(dst, minlength=n).to(x.dtype)  # [N] in-degree
        parts = [scatter(x.index_select(0, src), dst, 0, dim_size=n, reduce="sum")]  # [N, in_channels]
        if self.edge_dim > 0:
            parts.append(scatter(edge_attr, dst, 0, dim_size=n, reduce="sum"))  # [N, edge_dim]
        agg = torch.cat(parts, dim=-1)  # [N, in_channels + edge_dim]
        if self.aggr == "mean":
            agg = agg / deg.clamp(min=1).unsqueeze(-1)
            deg = (deg > 0).to(x.dtype)  # the bias counts once per node with an incoming edge
        out = nn.functional.linear(agg, self.lin_msg.weight)  # [N, out_channels]
        b = self.lin_msg.bias
        return out if b is None else torch.addcmul(out, deg.unsqueeze(-1), b)

    def message(self, x_j: Tensor, edge_attr: Tensor | None) -> Tensor:
        # other aggregations than mean/sum: m_uv per edge.
        # x_j: [E, out_channels] (already W_1x h_u), edge_attr: [E, edge_dim] -> [E, out_channels]
        b = self.lin_msg.bias
        if self.edge_dim > 0:
            return torch.addmm(x_j if b is None else x_j + b, edge_attr, self.lin_msg.weight[:, self.in_channels:].t())
        return x_j if b is None else x_j + b

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"edge_dim={self.edge_dim}, aggr={self.aggr!r})"
        )

"""The spatio-temporal GNN: E-GraphSAGE per window + GRU memory across windows (STG-NIDS style)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detector.models.encoder import EdgeGraphEncoder
from detector.models.memory import NodeMemory
from detector.tensors import FactoredRows, cat_rows


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`STGNN` (stored in the bundle's config.json)."""

    node_in: int
    edge_in: int
    hidden: int = 64
    layers: int = 2
    time_dim: int = 8
    temporal: bool = True          # GRU memory across windows (ablation: False)
    use_time: bool = True          # learned time encodings on edges
    memory_capacity: int = 65536
    # Blocks of the flow embedding handed to the detector, in this order (comma-separated):
    # src = z_u, dst = z_v, edge = e_uv (projected edge input), raw = the model's edge input features
    # (flow features || knowledge block). The default is the issue's [z_u || z_v || e_uv].
    flow_parts: str = "src,dst,edge"

    def __post_init__(self) -> None:
        if self.hidden <= 0 or self.layers <= 0:
            raise ValueError(f"hidden and layers must be > 0, got hidden={self.hidden}, layers={self.layers}")
        if self.node_in < 0 or self.edge_in < 0:
            raise ValueError(f"node_in/edge_in must be >= 0, got {self.node_in}/{self.edge_in}")
        _ = self.parts  # validates flow_parts

    @property
    def parts(self) -> tuple[str, ...]:
        """``flow_parts`` as a tuple (validated: known names, no repeats, at least one)."""
        return parse_flow_parts(self.flow_parts)

    def to_dict(self) -> dict:
        return asdict(self)


FLOW_PARTS = ("src", "dst", "edge", "raw")


def parse_flow_parts(spec: str) -> tuple[str, ...]:
    """``"dst,edge,raw"`` -> ``("dst", "edge", "raw")``; ``ValueError`` on unknown or repeated names."""
    parts = tuple(p.strip() for p in str(spec).split(",") if p.strip())
    bad = [p for p in parts if p not in FLOW_PARTS]
    if not parts or bad or len(set(parts)) != len(parts):
        raise ValueError(f"flow_parts must be distinct names from {FLOW_PARTS}, comma-separated, got {spec!r}")
    return parts


def full_edge_attr(data) -> Tensor:
    """``data.edge_attr`` with the knowledge block, also when the pipeline gave the block factored
    (``data.edge_kb = (rows [R, K], index [E])``, see :meth:`GraphStream.build_many`)."""
    kb = getattr(data, "edge_kb", None)
    if kb is None:
        return data.edge_attr
    rows, index = kb
    return torch.cat([data.edge_attr.float(), rows[index].float()], dim=1)


class SpatialBatch(NamedTuple):
    """Encoder output for the union of consecutive windows (:meth:`STGNN.spatial_many`)."""

    datas: list                 # the windows' Data, in order
    h: Tensor | None            # [sum N_k, H] spatial node states
    e: Tensor | None            # [sum E_k, H] edge states
    edge_index: Tensor | None   # [2, sum E_k], node ids offset per window
    edge_attr: Tensor | None    # [sum E_k, edge_in], or without the knowledge columns when factored


class STGNN(nn.Module):
    r"""Spatio-temporal graph encoder.

    .. math::
        h^{(t)} &= \text{E-GraphSAGE}^{L}(x^{(t)}, e^{(t)}) \\
        z_v^{(t)} &= \operatorname{GRU}(h_v^{(t)}, z_v^{(t')}) \\
        \text{flow}_{uv} &= [\, z_u \Vert z_v \Vert e_{uv} \,]

    ``forward`` returns node embeddings ``z`` :math:`(N, H)`, the spatial node
    states ``h`` :math:`(N, H)` and flow embeddings :math:`(E, D)`. With
    ``temporal=False`` the GRU is skipped (``z = h``). The flow embedding is the
    concatenation of ``config.flow_parts`` (default ``src,dst,edge``, :math:`D = 3H`);
    ``raw`` adds the edge input features themselves (a hybrid detector input).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = EdgeGraphEncoder(config.node_in, config.edge_in, config.hidden, config.layers,
                                        config.time_dim, config.use_time)
        self.memory = NodeMemory(config.hidden, config.memory_capacity) if config.temporal else None

    def part_dim(self, part: str) -> int:
        return self.config.edge_in if part == "raw" else self.config.hidden

    @property
    def edge_emb_dim(self) -> int:
        return sum(self.part_dim(p) for p in self.config.parts)

    def reset_state(self) -> None:
        if self.memory is not None:
            self.memory.reset_state()

    def detach(self) -> None:
        if self.memory is not None:
            self.memory.detach()

    def encode(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, dt_window: Tensor, dt_prev: Tensor,
               node_gid: Tensor | None = None, t: float | None = None,
               update_state: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Node embeddings ``z`` (N,H), spatial states ``h`` (N,H), edge states ``e`` (E,H)."""
        h, e = self.encoder(x, edge_index, edge_attr, dt_window, dt_prev)  # [N,H], [E,H]
        if self.memory is not None:
            if node_gid is None:
                raise ValueError("node_gid is required when the model is temporal")
            z = self.memory(h, node_gid, t=t, update=update_state)
        else:
            z = h
        return z, h, e

    @staticmethod
    def compose(z: Tensor, e: Tensor, edge_index: Tensor, edge_attr: Tensor, parts) -> Tensor:
        """Concatenate the named flow blocks (``src``, ``dst``, ``edge``, ``raw``) in the given order."""
        src, dst = edge_index
        blocks = {"src": lambda: z[src], "dst": lambda: z[dst], "edge": lambda: e, "raw": lambda: edge_attr.float()}
        return torch.cat([blocks[p]() for p in parts], dim=-1)

    @staticmethod
    def compose_factored(z: Tensor, e: Tensor, edge_index: Tensor, edge_attr: Tensor, parts) -> FactoredRows:
        """:meth:`compose` without building the rows: ``src``/``dst`` stay the node embeddings ``z`` [N, H]
        with a per-flow node index, ``edge``/``raw`` are per flow (NumPy views of the tensors)."""
        src, dst = edge_index.numpy()
        blocks = {"src": lambda: (z.numpy(), src), "dst": lambda: (z.numpy(), dst), "edge": lambda: (e.numpy(), None),
                  "raw": lambda: (edge_attr.float().numpy(), None)}
        return FactoredRows([blocks[p]() for p in parts])

    @staticmethod
    def compose_rows(z: Tensor, e: Tensor, edge_index: Tensor, edge_attr: Tensor, parts) -> FactoredRows:
        """:meth:`compose` as a :class:`~detector.tensors.FactoredRows` of per-flow blocks (``z[src]``,
        ``z[dst]``, ``e``, ``edge_attr``): the same rows and values, without copying the blocks side by side
        (the widest, ``raw``, is handed over as it is)."""
        src, dst = edge_index
        blocks = {"src": lambda: z[src], "dst": lambda: z[dst], "edge": lambda: e, "raw": lambda: edge_attr.float()}
        return FactoredRows([(blocks[p]().numpy(), None) for p in parts])

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, dt_window: Tensor, dt_prev: Tensor,
                node_gid: Tensor | None = None, t: float | None = None,
                update_state: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        z, h, e = self.encode(x, edge_index, edge_attr, dt_window, dt_prev, node_gid, t, update_state)
        return z, h, self.compose(z, e, edge_index, edge_attr, self.config.parts)  # [E, edge_emb_dim]

    def embed(self, data, kb_edge: Tensor | None = None, kb_node: Tensor | None = None,
              update_state: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Run on a GraphBuilder ``Data`` (+ optional knowledge blocks, concatenated to the inputs)."""
        x, ea = data.x, full_edge_attr(data)
        if kb_edge is not None and kb_edge.numel() > 0:
            ea = torch.cat([ea, kb_edge], dim=-1)
        if kb_node is not None and kb_node.numel() > 0:
            x = torch.cat([x, kb_node], dim=-1)
        return self(x, data.edge_index, ea, data.edge_dt_window, data.edge_dt_prev,
                    getattr(data, "node_gid", None), t=float(getattr(data, "window_end", 0.0)),
                    update_state=update_state)

    def embed_rows(self, data, update_state: bool = True) -> tuple[Tensor, FactoredRows]:
        """``(z, flows)``: :meth:`embed` on a GraphBuilder ``Data`` with the flow embeddings as
        :meth:`compose_rows` blocks (the same values as ``embed``'s, which a detector reading
        :class:`~detector.tensors.FactoredRows` takes without the ``[E, D]`` copy)."""
        ea = full_edge_attr(data)
        z, _h, e = self.encode(data.x, data.edge_index, ea, data.edge_dt_window, data.edge_dt_prev,
                               getattr(data, "node_gid", None), t=float(getattr(data, "window_end", 0.0)),
                               update_state=update_state)
        return z, self.compose_rows(z, e, data.edge_index, ea, self.config.parts)

    def embed_many(self, datas: list, update_state: bool = True, factored: bool = False) -> Tensor | FactoredRows:
        """Flow embeddings of consecutive windows, concatenated in window order ``[sum E_k, D]``
        (``factored=True``: the same rows as a :class:`~detector.tensors.FactoredRows`, the endpoint
        blocks kept once per node: :meth:`compose_factored`).

        Same as :meth:`embed` on each ``Data`` in turn, up to float rounding (the matrix products run
        on other shapes). The encoder does not read the temporal state, so it runs once on the
        disjoint union of the graphs (:meth:`spatial_many`); only the memory step, which reads and
        writes the state, runs window by window, in order (:meth:`temporal_many`). Knowledge blocks
        must already be part of ``x``/``edge_attr`` (as :class:`~detector.pipeline.GraphStream` gives
        them), or factored in ``data.edge_kb`` (``build_many(..., factored_kb=True)``). Bad inputs raise before the temporal state changes.
        """
        return self.temporal_many(self.spatial_many(datas), update_state, factored)

    def spatial_many(self, datas: list) -> SpatialBatch:
        """The stateless half of :meth:`embed_many`: the encoder on the union of the windows' graphs.
        Reads no temporal state, so it may run ahead of (or beside) :meth:`temporal_many` calls."""
        n_nodes = [int(d.num_nodes) for d in datas]
        if self.memory is not None:  # checked here, before any state changes
            for d, n in zip(datas, n_nodes):
                gid = getattr(d, "node_gid", None)
                if gid is None or gid.numel() != n:
                    raise ValueError(f"every window needs node_gid with one id per node ({n} nodes)")
        if not datas:
            return SpatialBatch([], None, None, None, None)
        offsets = list(accumulate(n_nodes[:-1], initial=0))  # first node of each window in the union
        x = cat_rows([d.x for d in datas])  # the windows of one build_many call: views, no copy
        eis = [d.edge_index for d in datas]
        edge_index = torch.cat(eis, dim=1)  # [2, sum E_k], window-local node ids
        if len(datas) > 1:  # shift each window's ids by its first node in the union (one add, not one per window)
            edge_index += torch.repeat_interleave(torch.tensor(offsets), torch.tensor([e.size(1) for e in eis]))
        kbs = [getattr(d, "edge_kb", None) for d in datas]
        if kbs[0] is not None and "raw" not in self.config.parts and \
                all(k is not None and k[0] is kbs[0][0] for k in kbs):
            # knowledge rows shared by the group: projected once per distinct row in the encoder
            edge_attr, edge_kb = cat_rows([d.edge_attr for d in datas]), (kbs[0][0], cat_rows([k[1] for k in kbs]))
        else:
            edge_attr, edge_kb = cat_rows([full_edge_attr(d) for d in datas]), None
        h, e = self.encoder(x, edge_index, edge_attr, cat_rows([d.edge_dt_window for d in datas]),
                            cat_rows([d.edge_dt_prev for d in datas]), edge_kb=edge_kb)
        return SpatialBatch(datas, h, e, edge_index, edge_attr)

    def temporal_many(self, sb: SpatialBatch, update_state: bool = True,
                      factored: bool = False) -> Tensor | FactoredRows:
        """The stateful half of :meth:`embed_many`: memory steps window by window, then the flow blocks."""
        if not sb.datas:
            empty = torch.zeros(0, self.edge_emb_dim)
            return FactoredRows([(empty.numpy(), None)]) if factored else empty
        if self.memory is not None:
            z = self.memory.forward_many(sb.h, [d.node_gid for d in sb.datas],
                                         [float(getattr(d, "window_end", 0.0)) for d in sb.datas], update=update_state)
        else:
            z = sb.h
        compose = self.compose_factored if factored else self.compose
        return compose(z, sb.e, sb.edge_index, sb.edge_attr, self.config.parts)

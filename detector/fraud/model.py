"""TMR-GGNN-style transaction model: relational time-aware encoder, contrastive and supervised heads."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from detector.fraud.conv import TimeRelAttnConv
from ingest.fraud.graph import CUSTOMER_NODE_FEATURES, EDGE_FEATURES, FEATURE_GROUPS, TERMINAL_NODE_FEATURES

PAYS = ("customer", "pays", "terminal")
REV = ("terminal", "rev_pays", "customer")
SYNTH_KINDS = ("amount", "terminal", "time")


@dataclass
class FraudModelConfig:
    """Hyper-parameters (stored in config.json)."""

    hidden: int = 64
    layers: int = 1
    heads: int = 2
    use_graph: bool = True
    tau: float = 3600.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden < 2 or self.layers < 1:
            raise ValueError(f"hidden={self.hidden}, layers={self.layers}: need hidden >= 2 and layers >= 1")


class FraudModel(nn.Module):
    """Encoder + heads. ``use_graph=False`` is the "without the graph part" ablation:
    the same edge MLP and heads on the transaction's own features only."""

    def __init__(self, cfg: FraudModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FraudModelConfig()
        E, C, T, H = len(EDGE_FEATURES), len(CUSTOMER_NODE_FEATURES), len(TERMINAL_NODE_FEATURES), cfg.hidden
        # Feature standardisation, fitted label-free on training data (see `fit_normalizer`).
        for name, d in (("edge", E), ("cust", C), ("term", T)):
            self.register_buffer(f"{name}_mean", torch.zeros(d))
            self.register_buffer(f"{name}_std", torch.ones(d))
        self.edge_in = nn.Linear(E, H)
        if cfg.use_graph:
            self.cust_in = nn.Linear(C, H)
            self.term_in = nn.Linear(T, H)
            self.to_term = nn.ModuleList([TimeRelAttnConv(H, H, H, E, cfg.heads, cfg.tau) for _ in range(cfg.layers)])
            self.to_cust = nn.ModuleList([TimeRelAttnConv(H, H, H, E, cfg.heads, cfg.tau) for _ in range(cfg.layers)])
            z_in = 3 * H
        else:
            z_in = H
        self.edge_mlp = nn.Sequential(nn.Linear(z_in, H), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(H, H), nn.ReLU())
        self.sup_head = nn.Linear(H, 1)    # fraud logit
        self.real_head = nn.Linear(H, 1)   # "is a real transaction" score for the contrastive objective

    # ------------------------------------------------------------ normaliser
    def fit_normalizer(self, edge: np.ndarray, cust: np.ndarray, term: np.ndarray) -> None:
        """Mean/std of the features on training data (no labels involved)."""
        for name, a in (("edge", edge), ("cust", cust), ("term", term)):
            a = np.asarray(a, dtype=np.float64)
            getattr(self, f"{name}_mean").copy_(torch.from_numpy(a.mean(0)).float())
            getattr(self, f"{name}_std").copy_(torch.from_numpy(np.maximum(a.std(0), 1e-3)).float())

    def _norm(self, name: str, x: Tensor) -> Tensor:
        return (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    # ---------------------------------------------------------------- encode
    def encode_nodes(self, data: HeteroData) -> tuple[Tensor | None, Tensor | None]:
        """Node embeddings after message passing (None, None without the graph part)."""
        if not self.cfg.use_graph:
            return None, None
        st = data[PAYS]
        ei = st.edge_index
        ea = self._norm("edge", st.edge_attr)
        dt = (data.window_end - st.edge_ts).float()                      # [E] s before the window is read
        hc = F.relu(self.cust_in(self._norm("cust", data["customer"].x)))  # [Nc, H]
        ht = F.relu(self.term_in(self._norm("term", data["terminal"].x)))  # [Nt, H]
        rev = ei.flip(0)
        for to_t, to_c in zip(self.to_term, self.to_cust):
            ht, hc = to_t(hc, ht, ei, ea, dt), to_c(ht, hc, rev, ea, dt)
        return hc, ht

    def edge_embed(self, hc: Tensor | None, ht: Tensor | None, src: Tensor, dst: Tensor, edge_attr: Tensor) -> Tensor:
        """Transaction embedding from [h_customer || h_terminal || e] (or e alone)."""
        e = F.relu(self.edge_in(self._norm("edge", edge_attr)))
        if self.cfg.use_graph:
            e = torch.cat([hc[src], ht[dst], e], dim=-1)
        return self.edge_mlp(e)

    def forward(self, data: HeteroData) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Returns (fraud logits [E], edge embeddings [E, H], h_customer, h_terminal)."""
        hc, ht = self.encode_nodes(data)
        st = data[PAYS]
        z = self.edge_embed(hc, ht, st.edge_index[0], st.edge_index[1], st.edge_attr)
        return self.sup_head(z).squeeze(-1), z, hc, ht


# ------------------------------------------------------------------ losses
def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    r"""Binary focal loss (Lin et al.): :math:`-\alpha_t (1-p_t)^\gamma \log p_t`.

    Summed and divided by the number of positives (at least 1), as in RetinaNet: with
    ~0.8% frauds a plain mean is ~1e-3 and would be drowned by the contrastive loss.
    """
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t).pow(gamma) * ce).sum() / target.sum().clamp_min(1.0)


def synthesize(edge_attr: Tensor, src: Tensor, dst: Tensor, kind: str,
               gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Synthesised (fake) versions of real transactions, on the raw (un-normalised) features.

    * ``amount``: the amount is multiplied by U(2, 6) (the handbook's compromised-card
      pattern); log amount, amount ratios and the customer averages (which include
      the current amount) are recomputed consistently; nothing else changes.
    * ``terminal``: the transaction is moved to another terminal of the window; the
      terminal feature group is taken from that terminal's donor transaction.
    * ``time``: the time of day is redrawn uniformly (night flag and sin/cos follow).

    Returns (edge_attr', src', dst').
    """
    if kind not in SYNTH_KINDS:
        raise ValueError(f"kind={kind!r}: must be one of {SYNTH_KINDS}")
    e = edge_attr.clone()
    n = e.size(0)
    dst2 = dst.clone()
    if kind == "amount":
        a = torch.expm1(e[:, 0])
        m = 2.0 + 4.0 * torch.rand(n, generator=gen)
        a2 = a * m
        nb = torch.expm1(e[:, 7:10]).clamp_min(1.0)
        avg = torch.expm1(e[:, 10:13])
        avg2 = avg + (a2 - a).unsqueeze(-1) / nb
        e[:, 0] = torch.log1p(a2)
        e[:, 1] = torch.log1p(a2) - torch.log1p(avg2[:, 1])
        e[:, 2] = torch.log1p(a2) - torch.log1p(avg2[:, 2])
        e[:, 10:13] = torch.log1p(avg2)
    elif kind == "terminal":
        donor = torch.randint(0, n, (n,), generator=gen)
        same = dst[donor] == dst
        donor = torch.where(same, (donor + 1) % n, donor)  # avoid keeping the same terminal when possible
        g = FEATURE_GROUPS["terminal"]
        e[:, g] = edge_attr[donor][:, g]
        dst2 = dst[donor]
    else:
        tod = torch.rand(n, generator=gen)
        e[:, 3] = torch.sin(2 * math.pi * tod)
        e[:, 4] = torch.cos(2 * math.pi * tod)
        e[:, 6] = (tod * 24.0 < 7.0).float()
    return e, src, dst2


def contrastive_loss(model: FraudModel, data: HeteroData, hc: Tensor | None, ht: Tensor | None, z: Tensor,
                     gen: torch.Generator, max_edges: int = 4096, temperature: float = 0.5,
                     idx: Tensor | None = None) -> Tensor:
    """InfoNCE: each real transaction against its synthesised versions (one per kind).

    logits = [g(z_real), g(z_amount), g(z_terminal), g(z_time)] / T with target 0, where
    g is the realness head. Fakes are embedded in the real window context (node
    embeddings of the real graph), so they never contaminate message passing.
    """
    st = data[PAYS]
    E = st.edge_attr.size(0)
    if E < 2:
        return z.sum() * 0.0
    if idx is None:
        idx = torch.randperm(E, generator=gen)[:max_edges]
    src, dst, ea = st.edge_index[0], st.edge_index[1], st.edge_attr
    logits = [model.real_head(z[idx]).squeeze(-1)]
    for kind in SYNTH_KINDS:
        e2, s2, d2 = synthesize(ea, src, dst, kind, gen)
        z2 = model.edge_embed(hc, ht, s2[idx], d2[idx], e2[idx])
        logits.append(model.real_head(z2).squeeze(-1))
    L = torch.stack(logits, dim=1) / temperature
    return F.cross_entropy(L, torch.zeros(L.size(0), dtype=torch.long))


def edge_batch_subgraph(data: HeteroData, batch: Tensor) -> tuple[HeteroData, Tensor]:
    """The exact computation graph of a batch of transactions for the 1-hop encoder.

    With simultaneous updates, a transaction's embedding depends on its customer's
    and its terminal's edges in the window only, so keeping every edge incident to a
    batch customer or batch terminal gives the same embeddings as the full window.
    Returns (subgraph, positions of the batch edges in it).
    """
    st = data[PAYS]
    src, dst = st.edge_index
    keep = torch.isin(src, src[batch]) | torch.isin(dst, dst[batch])
    eids = keep.nonzero().flatten()
    cu, cinv = torch.unique(src[eids], return_inverse=True)
    tu, tinv = torch.unique(dst[eids], return_inverse=True)
    sub = HeteroData()
    sub["customer"].x = data["customer"].x[cu]
    sub["terminal"].x = data["terminal"].x[tu]
    s = sub[PAYS]
    s.edge_index = torch.stack([cinv, tinv])
    s.edge_attr = st.edge_attr[eids]
    s.edge_ts = st.edge_ts[eids]
    s.edge_label = st.edge_label[eids]
    sub.window_end = data.window_end
    pos = torch.full((src.size(0),), -1, dtype=torch.long)
    pos[eids] = torch.arange(eids.numel())
    return sub, pos[batch]


def config_dict(cfg: FraudModelConfig) -> dict:
    return asdict(cfg)

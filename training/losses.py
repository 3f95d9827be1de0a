"""Contrastive objectives: InfoNCE, Deep Graph Infomax (edge level, Anomal-E), GradNorm-style weighting."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.2) -> Tensor:
    r"""Symmetric InfoNCE: row ``i`` of ``a`` and row ``i`` of ``b`` are positives, every other row
    of the same window is a negative (in-window negatives).

    .. math:: \mathcal{L} = -\frac{1}{2n}\sum_i \Big[\log\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
              + \log\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ji}/\tau}}\Big],\quad s = \cos(a, b)
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature  # [n, n]
    target = torch.arange(a.size(0), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class ProjectionHead(nn.Module):
    """Two-layer MLP projection used only by the contrastive losses (SimCLR/GRACE practice)."""

    def __init__(self, dim: int, out: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, out), nn.ELU(), nn.Linear(out, out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EdgeDGI(nn.Module):
    r"""Deep Graph Infomax on flow embeddings (Anomal-E): a bilinear discriminator tells real flow
    embeddings from those of a corrupted graph (edge features permuted across flows), both against
    the window summary :math:`s = \sigma(\mathrm{mean}(f))`.

    .. math:: \mathcal{L} = -\mathbb{E}[\log D(f, s)] - \mathbb{E}[\log(1 - D(\tilde f, s))],
              \quad D(f, s) = \sigma(f^\top W s)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, real: Tensor, corrupt: Tensor) -> Tensor:
        s = torch.sigmoid(real.mean(dim=0))  # [D]
        pos = real @ (self.weight @ s)  # [E]
        neg = corrupt @ (self.weight @ s)
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
            F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))


class GradNormWeighter(nn.Module):
    """GradNorm-style adaptive task weights (Chen et al., ICML 2018), as used by STG-NIDS.

    Weights are positive, sum to the number of tasks, and are moved so that each weighted task's
    gradient norm on a shared layer tracks ``mean_norm * (relative_inverse_rate) ** alpha``: tasks
    that are learning slower get more weight. ``mode="fixed"`` keeps the initial weights (ablation).
    """

    def __init__(self, names: list[str], mode: str = "gradnorm", alpha: float = 1.5, lr: float = 0.025,
                 init: dict[str, float] | None = None) -> None:
        super().__init__()
        if mode not in ("gradnorm", "fixed"):
            raise ValueError(f"mode must be 'gradnorm' or 'fixed', got {mode!r}")
        self.names, self.mode, self.alpha, self.lr = list(names), mode, alpha, lr
        w0 = torch.tensor([float((init or {}).get(n, 1.0)) for n in names])
        self.w = nn.Parameter(w0 * len(names) / w0.sum())
        self.initial: dict[str, float] = {}

    def weights(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.w.detach())}

    def combine(self, losses: dict[str, Tensor], shared: Tensor | None) -> Tensor:
        """Weighted total loss; in gradnorm mode also updates the weights (one small step)."""
        present = [i for i, n in enumerate(self.names) if n in losses]
        if not present:
            raise ValueError("no loss to combine")
        for i in present:
            n = self.names[i]
            self.initial.setdefault(n, max(float(losses[n].detach()), 1e-8))
        w_now = self.w.detach().clone()  # weights of this step (the update below is in place)
        total = sum(w_now[i] * losses[self.names[i]] for i in present)
        if self.mode == "fixed" or shared is None or len(present) < 2:
            return total
        norms = []
        for i in present:
            g = torch.autograd.grad(self.w[i] * losses[self.names[i]], shared, retain_graph=True,
                                    create_graph=True, allow_unused=True)[0]
            norms.append(g.norm() if g is not None else torch.zeros((), requires_grad=True))
        G = torch.stack(norms)
        with torch.no_grad():
            rate = torch.tensor([float(losses[self.names[i]].detach()) / self.initial[self.names[i]]
                                 for i in present])
            target = G.mean() * (rate / rate.mean()) ** self.alpha
        gn = (G - target).abs().sum()
        (gw,) = torch.autograd.grad(gn, self.w, retain_graph=True)
        with torch.no_grad():
            self.w -= self.lr * gw
            self.w.clamp_(min=0.05)
            self.w *= len(self.names) / self.w.sum()
        return total

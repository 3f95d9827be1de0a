"""TGN-style harmonic time encoding (Rossi et al., 2020; Xu et al., TGAT 2020)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TimeEncoder(nn.Module):
    r"""Encode a time difference :math:`\Delta t` (seconds) as
    :math:`\cos(\omega \log(1 + \Delta t) + \phi)` with learnable frequencies.

    TGN encodes raw :math:`\Delta t`; with gaps from microseconds to days that
    makes the high-frequency features pseudo-random noise per flow before
    training. On a log time axis the encoding is smooth: frequencies start
    geometrically spaced between 1 and ``1 / log(1 + max_period)`` so the slowest
    one spans the whole range up to ``max_period`` seconds.
    Negative inputs mean "unknown" (e.g. no previous flow): they are encoded as
    0 and flagged in one extra output column.

    Args:
        dim (int): number of harmonic features (output is ``dim + 1``).
        max_period (float): slowest initial period in seconds. (default: 1e5)

    Shapes:
        - **input:** :math:`(E,)` seconds
        - **output:** :math:`(E, dim + 1)`
    """

    def __init__(self, dim: int = 8, max_period: float = 1e5) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be > 0, got {dim}")
        self.dim = dim
        self.max_period = max_period
        self.lin = nn.Linear(1, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            freqs = torch.logspace(0.0, -math.log10(math.log1p(self.max_period)), self.dim)
            self.lin.weight.copy_(freqs.view(-1, 1))
            self.lin.bias.zero_()

    @property
    def out_dim(self) -> int:
        return self.dim + 1

    def forward(self, dt: Tensor) -> Tensor:
        dt = dt.to(torch.float32).view(-1, 1)
        unknown = (dt < 0).to(torch.float32)  # [E, 1]
        enc = torch.cos(self.lin(torch.log1p(dt.clamp_min(0.0))))  # [E, dim]
        return torch.cat([enc * (1.0 - unknown), unknown], dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim}, max_period={self.max_period:g})"

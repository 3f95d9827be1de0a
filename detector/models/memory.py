"""Per-endpoint temporal state carried across windows, keyed by stable node ids."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from detector.models import memory_kernel


class NodeMemory(nn.Module):
    r"""A GRU cell over the window sequence of every endpoint.

    .. math::
        s_v^{(t)} = \operatorname{GRU}\big(h_v^{(t)}, s_v^{(t')}\big)

    where :math:`t'` is the last window in which endpoint :math:`v` appeared
    (zero state for endpoints never seen). State lives in **non-persistent
    registered buffers** (``state``, ``owner``, ``last_seen``): it follows
    ``.to(device)`` but is not part of ``state_dict()``, so a saved model always
    starts from an empty memory and scores are reproducible.

    Capacity and eviction: endpoint id ``gid`` (from ``ingest.graph.NodeIdMap``)
    lives in slot ``gid % capacity`` and the slot remembers its owner. When a
    different id takes the slot (NodeIdMap reused the id after an LRU eviction,
    or two ids collide) the newcomer starts from a zero state -- exactly what an
    evicted endpoint gets from NodeIdMap, so the two stay consistent.

    Args:
        dim (int): state size (= input size).
        capacity (int): number of slots. (default: 65536)

    Shapes:
        - **input:** h :math:`(N, dim)`, gid :math:`(N,)` long, window time (float)
        - **output:** :math:`(N, dim)`
    """

    def __init__(self, dim: int, capacity: int = 65536) -> None:
        super().__init__()
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.dim = dim
        self.capacity = capacity
        self.cell = nn.GRUCell(dim, dim)
        self.register_buffer("state", torch.zeros(capacity, dim), persistent=False)
        self.register_buffer("owner", torch.full((capacity,), -1, dtype=torch.long), persistent=False)
        self.register_buffer("last_seen", torch.full((capacity,), float("nan"), dtype=torch.float64), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.cell.reset_parameters()

    def reset_state(self) -> None:
        """Forget every endpoint (weights untouched)."""
        self.state.zero_()
        self.owner.fill_(-1)
        self.last_seen.fill_(float("nan"))

    def detach(self) -> None:
        """Cut the autograd history of the stored state (truncated BPTT)."""
        self.state = self.state.detach()

    def read(self, gid: Tensor) -> Tensor:
        """Previous state of each endpoint; zeros for unknown or evicted ones. [N, dim]"""
        slot = gid.remainder(self.capacity)
        return self._read_slots(slot, gid)

    def _read_slots(self, slot: Tensor, gid: Tensor) -> Tensor:
        # index_select + masked_fill_: the values of state[slot] / where(known, ., 0), with a fraction
        # of advanced indexing's per-call overhead (paid once per window)
        prev = self.state.index_select(0, slot)
        return prev.masked_fill_(self.owner.index_select(0, slot).ne(gid).unsqueeze_(-1), 0.0)

    def forward(self, h: Tensor, gid: Tensor, t: float | None = None, update: bool = True) -> Tensor:
        if h.size(-1) != self.dim:
            raise ValueError(f"h has {h.size(-1)} features but the memory was built with dim={self.dim}")
        if gid.numel() != h.size(0):
            raise ValueError(f"gid has {gid.numel()} entries for {h.size(0)} nodes")
        prev = self.read(gid)  # [N, dim]
        new = self.cell(h, prev)  # [N, dim]
        if update:
            self.write(gid, new.detach(), t)
        return new

    def forward_many(self, h: Tensor, gids: list[Tensor], times: list[float | None], update: bool = True) -> Tensor:
        """:meth:`forward` on consecutive windows in order; ``h`` [sum N_k, dim] holds their rows
        back to back, ``gids[k]`` the ids of window ``k``. Same arithmetic, bit for bit, as one call
        per window: only the per-call checks and module dispatch are paid once.
        """
        sizes = [int(g.numel()) for g in gids]
        if h.size(-1) != self.dim:
            raise ValueError(f"h has {h.size(-1)} features but the memory was built with dim={self.dim}")
        if sum(sizes) != h.size(0) or len(times) != len(gids):
            raise ValueError(f"{len(gids)} windows with {sum(sizes)} ids and {len(times)} times for {h.size(0)} nodes")
        if not gids:
            return h.new_zeros((0, self.dim))
        slots = torch.cat(gids).remainder(self.capacity)
        if self.COMPILED and not torch.is_grad_enabled() and self._compilable(h):
            return self._forward_compiled(h, slots, gids, sizes, times, update)
        out = torch.empty_like(h)
        c = self.cell
        a = 0
        for gid, n, t in zip(gids, sizes, times):
            slot, b = slots[a:a + n], a + n
            prev = self._read_slots(slot, gid)  # read()
            new = torch._VF.gru_cell(h[a:b], prev, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)  # as GRUCell
            out[a:b] = new
            if update:
                self._write_slots(slot, gid, new, t)  # write()
            a = b
        return out

    # Without autograd (scoring), forward_many runs the compiled step of detector/models/memory_kernel.py:
    # equal to the torch path up to float rounding, ~5x less CPU on LUFlow's windows. False: torch always.
    COMPILED = memory_kernel.available()

    def _compilable(self, h: Tensor) -> bool:
        c = self.cell
        return (h.device.type == "cpu" and h.dtype == torch.float32 and self.state.dtype == torch.float32
                and c.bias_ih is not None and c.weight_hh.dtype == torch.float32)

    def _forward_compiled(self, h: Tensor, slots: Tensor, gids: list[Tensor], sizes: list[int],
                          times: list[float | None], update: bool) -> Tensor:
        """:meth:`forward_many` through :func:`memory_kernel.gru_windows` (no autograd)."""
        c = self.cell
        gi = torch.addmm(c.bias_ih, h, c.weight_ih.t())  # [N, 3 * dim]: the input half, for all windows at once
        out = torch.empty_like(h)
        bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=bounds[1:])
        has_time = np.array([t is not None for t in times])
        t_arr = np.array([0.0 if t is None else float(t) for t in times])
        for buf in ("state", "owner", "last_seen"):  # the kernel writes through numpy views
            if not getattr(self, buf).is_contiguous():
                setattr(self, buf, getattr(self, buf).contiguous())
        memory_kernel.gru_windows(
            gi.numpy(), bounds, slots.numpy(), torch.cat(gids).numpy(), t_arr, has_time,
            c.weight_hh.detach().t().contiguous().numpy(), c.bias_hh.detach().numpy(),
            self.state.numpy(), self.owner.numpy(), self.last_seen.numpy(), out.numpy(), bool(update))
        return out

    def write(self, gid: Tensor, s: Tensor, t: float | None = None) -> None:
        self._write_slots(gid.remainder(self.capacity), gid, s, t)

    @torch.no_grad()
    def _write_slots(self, slot: Tensor, gid: Tensor, s: Tensor, t: float | None) -> None:
        # index_copy_ / index_fill_: state[slot] = s etc. (CPU: in index order, the last duplicate wins)
        self.state.index_copy_(0, slot, s.detach().to(self.state.dtype))
        self.owner.index_copy_(0, slot, gid)
        if t is not None:
            self.last_seen.index_fill_(0, slot, float(t))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim}, capacity={self.capacity})"

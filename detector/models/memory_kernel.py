r"""The GRU memory step of consecutive windows as one compiled loop (numba), for scoring.

:meth:`NodeMemory.forward_many` advances the memory window by window: window ``k`` reads what
window ``k - 1`` wrote, so the steps cannot be batched. Through torch each step is ~10 small calls
(read the slots, mask unknown owners, ``gru_cell``, write back): ~0.3 ms per window, of which the
arithmetic is a small part on LUFlow's 5-minute windows (~50 endpoints each). Here the input half of
the gates, :math:`W_{ih} h + b_{ih}`, which does not depend on the state, is one matrix product for
the whole group (done by the caller), and :func:`gru_windows` runs the state-dependent half endpoint
by endpoint: :math:`W_{hh} s + b_{hh}` as 64 row updates of a 192-vector (vectorised by LLVM), then
the gates:

.. math::
    r &= \sigma(g^i_r + g^h_r), \quad u = \sigma(g^i_u + g^h_u), \\
    n &= \tanh(g^i_n + r \odot g^h_n), \quad s' = (1 - u) \odot n + u \odot s

(PyTorch's ``GRUCell``, gate order r, u (PyTorch's z), n in the stacked weights). Same maths in
float32 as ``torch.nn.GRUCell``; the sums run in another order, so results agree to float rounding
(``np.allclose``), not bit for bit. The state semantics are :class:`NodeMemory`'s: an endpoint whose
slot has another owner starts from zeros, a window's states are all read before any is written, and
when two endpoints of a window share a slot the later one's write wins (as ``index_copy_``).
"""
from __future__ import annotations

import numpy as np

from detector.runtime import compiled


def available() -> bool:
    """Whether the compiled step can run here (numba imported)."""
    return gru_windows is not None


def _gru_windows(gi, bounds, slots, gids, times, has_time, w_hh_t, b_hh,
                 state, owner, last_seen, out, update):  # pragma: no cover - compiled by numba
    """Advance the memory over windows ``k`` = rows ``bounds[k]:bounds[k + 1]`` of ``gi``, in order.

    gi [N, 3H] float32: input half of the gates; slots, gids [N] int64; times [K] float64 (used where
    has_time); w_hh_t [H, 3H] float32 (W_hh transposed); b_hh [3H]; state [C, H] float32, owner [C]
    int64, last_seen [C] float64: the memory, updated in place when ``update``; out [N, H] float32.
    """
    H = state.shape[1]
    gh = np.empty(3 * H, dtype=np.float32)
    one = np.float32(1.0)
    for k in range(bounds.shape[0] - 1):
        a, b = bounds[k], bounds[k + 1]
        for i in range(a, b):
            s = slots[i]
            known = owner[s] == gids[i]
            for j in range(3 * H):
                gh[j] = b_hh[j]
            if known:
                for c in range(H):
                    p = state[s, c]
                    for j in range(3 * H):
                        gh[j] += p * w_hh_t[c, j]
            for j in range(H):
                r = one / (one + np.exp(-(gi[i, j] + gh[j])))
                u = one / (one + np.exp(-(gi[i, H + j] + gh[H + j])))
                n = np.tanh(gi[i, 2 * H + j] + r * gh[2 * H + j])
                prev = state[s, j] if known else np.float32(0.0)
                out[i, j] = (one - u) * n + u * prev
        if update:  # after the whole window was read: a write never feeds a read of its own window
            for i in range(a, b):
                s = slots[i]
                for j in range(H):
                    state[s, j] = out[i, j]
                owner[s] = gids[i]
                if has_time[k]:
                    last_seen[s] = times[k]


gru_windows = compiled(_gru_windows)

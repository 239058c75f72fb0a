"""GRU (Cho et al. arXiv:1406.1078) as a sequence mixer.

    r, z = σ(W x_t + U h_{t-1} + b);   n = tanh(W_n x_t + b_n + r ⊙ (U_n h_{t-1} + b'_n))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1};   y_t = W_out h_t

Parallel face: torch's fused GRU kernel. Recurrent face: the cell above with
the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.mixers.rnn_base import FusedRNNMixin, RNNConfig
from seqlab.state import State


@dataclass(frozen=True)
class GRUState(State):
    h: Tensor  # (B, hidden)


@dataclass(frozen=True)
class GRUConfig(RNNConfig):
    pass


@register("gru")
class GRU(FusedRNNMixin, Mixer):
    Config = GRUConfig
    State = GRUState
    example_options = {"hidden": 24}
    cost = "parallel O(L) time (sequential fused kernel), O(L) memory; step O(1); state hidden"

    def __init__(self, dim: int, cfg: GRUConfig):
        super().__init__(dim, cfg)
        self._build(dim, cfg, nn.GRU)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> GRUState:
        return GRUState(torch.zeros(batch_size, self.hidden, device=self._state_device(device),
                                    dtype=self._state_dtype(dtype)))

    def state_size(self, seq_len: int) -> int:
        return self.hidden

    def mix(self, x: Tensor, state: GRUState | None) -> tuple[Tensor, GRUState]:
        h0 = None if state is None else state.h[None].to(x.dtype)
        y, h = self.rnn(x, h0)
        return self.out(y), GRUState(h[0])

    def step_unchecked(self, x_t: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
        h_prev = state.h.to(x_t.dtype)
        gi, gh = self._gates(x_t, h_prev)
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h = (1 - z) * n + z * h_prev
        return self.out(h), GRUState(h)

"""LSTM (Hochreiter & Schmidhuber 1997) as a sequence mixer.

    i, f, g, o = σ, σ, tanh, σ (W x_t + U h_{t-1} + b)
    c_t = f ⊙ c_{t-1} + i ⊙ g;   h_t = o ⊙ tanh(c_t);   y_t = W_out h_t

Parallel face: torch's fused LSTM kernel (sequential inside, but one call).
Recurrent face: the cell above, written out with the same weights.
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
class LSTMState(State):
    h: Tensor  # (B, hidden)
    c: Tensor  # (B, hidden)


@dataclass(frozen=True)
class LSTMConfig(RNNConfig):
    pass


@register("lstm")
class LSTM(FusedRNNMixin, Mixer):
    Config = LSTMConfig
    State = LSTMState
    example_options = {"hidden": 24}
    cost = "parallel O(L) time (sequential fused kernel), O(L) memory; step O(1); state 2*hidden"

    def __init__(self, dim: int, cfg: LSTMConfig):
        super().__init__(dim, cfg)
        self._build(dim, cfg, nn.LSTM)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LSTMState:
        z = torch.zeros(batch_size, self.hidden, device=self._state_device(device),
                        dtype=self._state_dtype(dtype))
        return LSTMState(z, z.clone())

    def state_size(self, seq_len: int) -> int:
        return 2 * self.hidden

    def mix(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        hc = None if state is None else (state.h[None].to(x.dtype), state.c[None].to(x.dtype))
        y, (h, c) = self.rnn(x, hc)
        return self.out(y), LSTMState(h[0], c[0])

    def step_unchecked(self, x_t: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        gi, gh = self._gates(x_t, state.h.to(x_t.dtype))
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * state.c.to(x_t.dtype) + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.out(h), LSTMState(h, c)

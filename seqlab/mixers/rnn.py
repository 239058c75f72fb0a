"""Elman RNN (Elman 1990, "Finding structure in time", https://doi.org/10.1207/s15516709cog1402_1)
as a sequence mixer.

    h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   φ = tanh or relu
    y_t = W_out h_t

Parallel face: torch's fused ``nn.RNN`` kernel. Recurrent face: the cell above
with the same weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.mixers.rnn_base import FusedRNNMixin, RNNConfig
from seqlab.state import State


@dataclass(frozen=True)
class ElmanState(State):
    h: Tensor  # (B, hidden)


@dataclass(frozen=True)
class ElmanConfig(RNNConfig):
    """Options of the Elman RNN mixer.

    Attributes:
        hidden: hidden size; None means dim.
        out_proj: a linear map hidden -> dim after the RNN.
        nonlinearity: φ, ``"tanh"`` (bounded) or ``"relu"`` (as in ``nn.RNN``).
    """

    nonlinearity: Literal["tanh", "relu"] = "tanh"


@register("rnn")
class Elman(FusedRNNMixin, Mixer):
    """Elman RNN mixer (tanh or relu).

    Example:
        >>> m = seqlab.mixers.build("rnn", dim=64, hidden=128, nonlinearity="relu")
        >>> y, state = m(torch.randn(2, 100, 64))          # (2, 100, 64)
        >>> y2, state = m(torch.randn(2, 10, 64), state)  # continue
    """

    Config = ElmanConfig
    State = ElmanState
    example_options = {"hidden": 24}
    cost = "parallel O(L) time (sequential fused kernel), O(L) memory; step O(1); state hidden"

    def __init__(self, dim: int, cfg: ElmanConfig):
        super().__init__(dim, cfg)
        self._build(dim, cfg, functools.partial(nn.RNN, nonlinearity=cfg.nonlinearity))
        self._act = torch.tanh if cfg.nonlinearity == "tanh" else torch.relu

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> ElmanState:
        return ElmanState(torch.zeros(batch_size, self.hidden, device=self._state_device(device),
                                      dtype=self._state_dtype(dtype)))

    def state_size(self, seq_len: int) -> int:
        return self.hidden

    def mix(self, x: Tensor, state: ElmanState | None) -> tuple[Tensor, ElmanState]:
        h0 = None if state is None else state.h[None].to(x.dtype)
        y, h = self.rnn(x, h0)
        return self.out(y), ElmanState(h[0])

    def step_unchecked(self, x_t: Tensor, state: ElmanState) -> tuple[Tensor, ElmanState]:
        gi, gh = self._gates(x_t, state.h.to(x_t.dtype))
        h = self._act(gi + gh)
        return self.out(h), ElmanState(h)

"""Token ids for the mixers that read them (``Mixer.needs_tokens``) in the shared mixer tests.

The shared tests slice x into chunks and steps, gather its rows, perturb its tail and cast
it; ids drawn beside x would have to follow every one of those. Here each position's id is
a function of x at that position instead -- the signs of its first two features, a
vocabulary of 4 -- so every slice, step, gathered row or perturbed tail of x carries its
own ids, and random x gives random ids with many repeated n-grams. Mixers that do not read
ids are returned as they are: their tests are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import seqlab

BITS = 2  # ids in [0, 2 ** BITS)


def token_ids(x: Tensor) -> Tensor:
    """``(...)`` int64 ids of ``x (..., D)``: the signs of its first ``BITS`` features."""
    signs = (x[..., :BITS] > 0).long()
    return (signs << torch.arange(BITS, device=x.device)).sum(-1)


class WithTokens(nn.Module):
    """A mixer that reads ids, called as the shared tests call every mixer: ``m(x, state)``
    and ``m.step(x_t, state)`` pass ``tokens=token_ids(x)``."""

    def __init__(self, mixer: seqlab.mixers.Mixer):
        super().__init__()
        self.mixer = mixer

    def forward(self, x: Tensor, state=None):
        return self.mixer(x, state, tokens=token_ids(x))

    def step(self, x_t: Tensor, state):
        return self.mixer.step(x_t, state, tokens=token_ids(x_t))

    def init_state(self, batch_size: int, **kw):
        return self.mixer.init_state(batch_size, **kw)

    def state_size(self, seq_len: int) -> int:
        return self.mixer.state_size(seq_len)


def with_tokens(m: seqlab.mixers.Mixer) -> nn.Module:
    """``m`` itself, or ``m`` wrapped in ``WithTokens`` if it declares ``needs_tokens``."""
    return WithTokens(m) if m.needs_tokens else m

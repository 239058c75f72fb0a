"""A stack of LM blocks on embeddings: ``blocks -> norm``, without a vocabulary.

The hierarchical models run their inner models (a global model over block embeddings, a
local model inside a block) as stacks of the same blocks the decoder LM uses
(:class:`seqlab.models.lm.Block`), built from a layer pattern of registered mixers, with
both faces: ``stack(x, state)`` on ``(B, T, D)`` and ``stack.step(x_t, state)`` on ``(B, D)``.

Example:
    >>> stack = Stack(LMConfig(vocab_size=1, dim=64, layers="attention*2"))
    >>> h, state = stack(torch.randn(2, 8, 64))
    >>> h_t, state = stack.step(torch.randn(2, 64), state)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.state import StateError

from seqlab.models.lm import Block, LMConfig, LMState, _build_mixer
from seqlab.nn import RMSNorm


class Stack(nn.Module):
    """The blocks of ``cfg.layers`` and a final RMSNorm (``cfg.vocab_size`` is not used)."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg, _build_mixer(cfg, i)) for i in range(len(cfg.layers)))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        for block in self.blocks:  # as the LM initialises its MLPs
            if block.mlp is not None:
                block.mlp.init_weights(cfg.init_std, len(self.blocks))

    def forward(self, x: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        layer_states = [None] * len(self.blocks) if state is None else state.layers
        new = []
        for block, s in zip(self.blocks, layer_states):
            x, s = block(x, s)
            new.append(s)
        return self.norm(x), LMState(tuple(new))

    def step(self, x: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        new = []
        for block, s in zip(self.blocks, state.layers):
            x, s = block.step(x, s)
            new.append(s)
        return self.norm(x), LMState(tuple(new))

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LMState:
        return LMState(tuple(b.mixer.init_state(batch_size, device=device, dtype=dtype)
                             for b in self.blocks))


def per_row(take_new: list[bool], old: LMState, new: LMState,
            lengths: list[int] | None = None) -> LMState:
    """Per row, ``new`` where ``take_new`` else ``old`` (the hierarchical models' inner states
    when some rows finish a block or word). When ``new`` continues ``old`` and rewinds (KV
    caches), rewinding its rows to ``lengths`` is enough and copies nothing; otherwise the
    rows are gathered from both (a reset to a fresh state is always gathered, so that no
    snapshot's entries are overwritten in place)."""
    if all(take_new):
        return new
    if not any(take_new):
        return old
    if lengths is not None and new.can_truncate:
        return new.truncate(lengths)
    B = old.batch_size
    index = torch.tensor([B + b if t else b for b, t in enumerate(take_new)])
    return type(old).cat([old, new]).select(index)


def check_state(state, state_cls: type, batch_size: int, model: str, needs: str) -> None:
    """The decoding protocol's state checks, shared by the hierarchical families: ``state`` is
    a ``state_cls`` of ``batch_size`` rows, else a StateError naming ``model`` and ``needs``
    (e.g. "a BlockLMState")."""
    if not isinstance(state, state_cls):
        raise StateError(f"the {model} was given a {type(state).__name__}; it needs {needs} "
                         "(from model.init_state or an earlier call)")
    if state.batch_size != batch_size:
        raise StateError(f"the state holds {state.batch_size} rows but the tokens have "
                         f"{batch_size}; use state.select(index) to pick or repeat rows")


def step_through(step, tokens: Tensor, state, last_only: bool):
    """A chunk ``tokens (B, T)`` after ``state``, one ``step(token, state)`` at a time (exact
    for models whose state cannot take a chunk in parallel): logits ``(B, T, V)``, or the
    last ``(B, V)`` with ``last_only``, and the state after them."""
    outs = []
    for t in range(tokens.shape[1]):
        logits, state = step(tokens[:, t], state)
        outs.append(logits)
    if not outs:
        raise ValueError("the model was given an empty chunk of tokens")
    return (outs[-1] if last_only else torch.stack(outs, 1)), state

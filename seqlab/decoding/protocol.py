"""What a model provides to be decoded by seqlab: the whole interface between the two.

The decoding engine talks to models only through the members below; it imports no
model or mixer class. A decoder LM, a hierarchical model, an encoder-decoder (its
encoder output held in the state), a pointer network and a wrapped Hugging Face
model all enter the same way.

A decodable model has

* ``vocab_size: int`` and ``max_length: int | None`` (prompt plus generation; None: no limit);
* ``device: torch.device``, where its inputs go;
* ``capabilities: Capabilities``, the optional members it offers, declared (never probed);
* ``init_state(batch_size, *, device=None, dtype=None) -> State``: the empty state;
* ``model(tokens, state=None, *, last_only=False) -> (logits, state)``: the parallel face
  on ``tokens (B, T)`` int64 continuing ``state`` (None: the empty state); logits
  ``(B, T, V)``, or ``(B, V)`` for the last position only when ``last_only`` (a prompt
  needs no others);
* ``step(token, state) -> (logits, state)``: one token ``(B,)`` -> logits ``(B, V)``.

Its states are ``seqlab.state.State`` values: ``select(index)`` gathers rows (copies),
``type(state).cat(states)`` joins batches, ``batch_size``; ``can_truncate`` and
``truncate(lengths)`` where the state can rewind (per row). A state is a value: calling
the model twice on one state gives two independent continuations. States that cannot
rewind are rolled back by keeping the earlier state (a snapshot) and recomputing.

Optional members, each behind a ``Capabilities`` flag:

* ``tree``: ``forward_tree(tokens, state, depth, visible) -> (logits, state)`` scores a
  token tree per row in one call (each node sees the cache, its ancestors and itself), and
  the returned state offers ``keep(start, index)`` to keep one path
  (see ``seqlab.models.lm.LM.forward_tree``);
* ``features``: ``features(tokens, state) -> (hidden (B, T, H), state)`` and
  ``logits(hidden) -> (..., V)``, the hidden states that drafters read
  (``logits(features(...)[0])`` equals the call's logits);
* ``tree`` and ``features`` together: also ``features_tree(tokens, state, depth, visible)
  -> (hidden, state)``, ``forward_tree`` without the head;
* ``source``: a prompt is a *source* that an encoder reads, not text to continue (an
  encoder-decoder): ``source_prompts(sources) -> (rows, states)`` turns sources into the
  decoder's start rows and their cached states, and ``end_id`` ends a target. The CLI and
  the server decode such a model through it, and refuse to continue a conversation on it.

Example (a model that is not a seqlab LM; see README, "Decoding any model"):
    >>> class Bigram(torch.nn.Module):
    ...     vocab_size, max_length, capabilities = 16, None, Capabilities()
    ...     ...
    >>> seqlab.decoding.generate(Bigram(), [[1, 2, 3]], "greedy", 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from seqlab.state import State


@dataclass(frozen=True)
class Capabilities:
    """Optional protocol members a model declares it has.

    Attributes:
        tree: ``forward_tree`` (tree attention) and a state with ``keep``.
        features: ``features(tokens, state)`` and ``logits(hidden)`` (and, with ``tree``,
            ``features_tree``): trained drafters read these hidden states.
        source: ``source_prompts(sources)`` and ``end_id``: prompts are sources.
    """

    tree: bool = False
    features: bool = False
    source: bool = False


@runtime_checkable
class Decodable(Protocol):
    """The members every decodable model has (see the module docstring)."""

    vocab_size: int
    max_length: int | None
    capabilities: Capabilities

    @property
    def device(self) -> torch.device: ...

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State: ...

    def __call__(self, tokens: Tensor, state: State | None = None, *,
                 last_only: bool = False) -> tuple[Tensor, State]: ...

    def step(self, token: Tensor, state: State) -> tuple[Tensor, State]: ...


_REQUIRED = ("vocab_size", "max_length", "capabilities", "device", "init_state", "step")


def check_decodable(model, role: str = "model") -> None:
    """Raise TypeError naming what ``model`` lacks of the protocol (``role``: "model", "draft").

    Raises:
        TypeError: a required member is missing or ``capabilities`` is not a Capabilities.
    """
    missing = [name for name in _REQUIRED if not hasattr(model, name)]
    if not callable(model):
        missing.append("__call__")
    if missing:
        raise TypeError(
            f"the {role} ({type(model).__name__}) does not implement seqlab's decoding protocol: "
            f"it lacks {', '.join(missing)}. See seqlab/decoding/protocol.py (README: 'Decoding "
            "any model'); a transformers model is wrapped automatically")
    if not isinstance(model.capabilities, Capabilities):
        raise TypeError(f"the {role}'s capabilities is a {type(model.capabilities).__name__}; "
                        "declare seqlab.decoding.protocol.Capabilities(...)")


__all__ = ["Capabilities", "Decodable", "check_decodable"]

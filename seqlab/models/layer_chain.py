"""Chains of a pretrained LM's own layers: skip some, repeat others (CoLa, "Skip a Layer or
Loop it? Test-Time Depth Adaptation of Pretrained LLMs").

A chain is a sequence of layer indices of the target, e.g. ``[0, 1, 2, 2, 3, 5, ...]``:
layer 4 skipped, layer 2 run twice as a small recurrence. ``layer_chain`` builds the
chain as an LM of its own that shares the target's embedding, blocks, final norm and head,
so it costs no memory and no training. A block that appears twice is the same module twice
in ``blocks``; its decode state is not shared: ``LM.init_state`` makes one state per
position in ``blocks``, so the second occurrence keeps its own KV cache (its inputs, the
first occurrence's outputs, differ from the first's).

``PrefixCache`` keeps the hidden states after chain prefixes, so that a search over
chains (``seqlab.models.cola_search``) whose chains share a prefix runs only the new
layers of each.

Example:
    >>> chain = layer_chain(model, [0, 1, 1, 3])          # skip 2, loop 1
    >>> logits, state = chain(tokens)                      # an LM: both faces, decoding
    >>> seqlab.decoding.generate(model, prompts, "speculative", draft=chain, gamma=4)
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from seqlab.config import ConfigError
from seqlab.models.lm import LM


def check_chain(chain: Sequence[int], layers: int, name: str = "chain") -> tuple[int, ...]:
    """``chain`` as a tuple of ints, each a layer index in ``[0, layers)``.

    Raises:
        ConfigError: an empty chain, or an entry that is not such an index.
    """
    out = tuple(chain)
    if not out or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < layers
                      for i in out):
        raise ConfigError(f"{name} = {list(out)!r} is not allowed: expected a non-empty list of "
                          f"layer indices in [0, {layers})")
    return out


def layer_chain(model: LM, chain: Sequence[int], *, name: str = "chain") -> LM:
    """An LM that runs ``model``'s layers in the order ``chain`` (skips, repeats, any order),
    sharing all its weights.

    Args:
        model: a decoder LM (``seqlab.models.lm.LM``).
        chain: layer indices of ``model``, e.g. ``range(n)`` (the model itself), ``[0, 2, 4]``
            (a layer-skip draft) or ``[0, 1, 1, 2]`` (layer 1 looped).
        name: what error messages call ``chain``.

    Returns:
        An ``LM`` whose ``blocks[k]`` is ``model.blocks[chain[k]]`` and whose config lists
        the matching layer specs; ``init_state`` gives one state per chain position.

    Raises:
        ConfigError: see :func:`check_chain`.

    Example:
        >>> deep = layer_chain(model, [*range(12), *range(6, 12)])   # loop the top half once
    """
    chain = check_chain(chain, len(model.blocks), name)
    out = LM.__new__(LM)
    nn.Module.__init__(out)
    # Each layer spec carries its own options, so the chain's specs are its config.
    out.cfg = dataclasses.replace(model.cfg, layers=tuple(model.cfg.layers[i] for i in chain))
    out.embed, out.norm, out.head = model.embed, model.norm, model.head
    out.blocks = nn.ModuleList(model.blocks[i] for i in chain)
    return out


def chain_stats(chain: Sequence[int], layers: int) -> dict[str, int]:
    """How a chain differs from the model's ``layers`` layers in order.

    Returns:
        ``length`` (blocks run), ``skipped`` (layers never run) and ``repeated`` (runs
        beyond each layer's first), so ``length = layers - skipped + repeated``.
    """
    chain = check_chain(chain, layers)
    distinct = len(set(chain))
    return {"length": len(chain), "skipped": layers - distinct, "repeated": len(chain) - distinct}


class PrefixCache:
    """Values (e.g. hidden states) after running chain prefixes, least recently used dropped.

    ``run(chain)`` starts from the value of the longest cached prefix of ``chain`` and
    applies only the remaining layers, caching the value after each one. A search whose
    chains share their first layers (an MCTS path) then pays for the new layers only.

    Args:
        start: the value before any layer (e.g. the embeddings).
        apply: ``apply(layer, value) -> value``, one layer on a value; must be pure.
        max_entries: prefixes kept at most (a bound on memory: each holds one value).

    Example:
        >>> cache = PrefixCache(model.embed(tokens), lambda i, h: model.blocks[i](h, None)[0])
        >>> h = cache.run([0, 1, 1, 3])
        >>> h = cache.run([0, 1, 2])          # runs layer 2 only
    """

    def __init__(self, start: Any, apply: Callable[[int, Any], Any], max_entries: int = 256):
        if max_entries < 1:
            raise ConfigError(f"PrefixCache.max_entries = {max_entries!r} is not allowed: "
                              "expected an int >= 1")
        self.start, self.apply, self.max_entries = start, apply, max_entries
        self._values: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.layers_run = 0   # layers applied so far: the cost the cache did not save

    def run(self, chain: Sequence[int]) -> Any:
        chain = tuple(chain)
        k, value = 0, self.start
        for j in range(len(chain), 0, -1):
            if chain[:j] in self._values:
                k, value = j, self._values[chain[:j]]
                self._values.move_to_end(chain[:j])
                break
        for j in range(k, len(chain)):
            value = self.apply(chain[j], value)
            self.layers_run += 1
            self._values[chain[:j + 1]] = value
            if len(self._values) > self.max_entries:
                self._values.popitem(last=False)
        return value

"""Decoding strategies: one module each, registered by name with their typed options.

A strategy is a function ``fn(model, req: Request, cfg) -> GenerateOutput`` and a
frozen ``Config`` of its options (validated like every seqlab config; the command
line derives its flags from these fields). Add one by writing a module here that
calls ``register`` and listing it in ``_MODULES``.

``samples`` says how a strategy treats the sampling options (temperature, top_k,
top_p, min_p, seed): "always" (``sample``: no temperature means 1.0), "optional"
(drafting strategies: greedy unless a temperature is given) or "never" (greedy,
beam searches: a sampling option is an error).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from seqlab.config import Config


@dataclass(frozen=True)
class Strategy:
    name: str
    fn: Callable
    Config: type[Config]
    samples: Literal["always", "optional", "never"]
    needs_draft: bool = False
    streams: bool = True   # emits tokens as it goes (so on_token can end a row early)
    # A drafter's state the strategy may be handed as ``draft`` instead of a model (the
    # n-gram table that persists across calls); None: ``draft`` is a model or nothing.
    draft_state: type | None = None


STRATEGIES: dict[str, Strategy] = {}


def register(name: str, config: type[Config], *, samples: Literal["always", "optional", "never"],
             needs_draft: bool = False, streams: bool = True, draft_state: type | None = None):
    """Function decorator adding a strategy under ``name`` with its options class."""

    def deco(fn):
        if name in STRATEGIES:
            raise ValueError(f"strategy name {name!r} is already registered")
        STRATEGIES[name] = Strategy(name, fn, config, samples, needs_draft, streams, draft_state)
        return fn

    return deco


_MODULES = ["sample", "beam", "speculative", "tree", "lookup", "ngram_tree"]
for _m in _MODULES:
    importlib.import_module(f"seqlab.decoding.strategies.{_m}")

__all__ = ["STRATEGIES", "Strategy", "register"]

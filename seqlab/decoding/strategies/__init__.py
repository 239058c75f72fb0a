"""Decoding strategies: one small function each, registered by name.

A strategy has the signature
``fn(model, rows, *, max_new_tokens, sampling, stopper, on_token, generator, **options)
-> GenerateOutput``. Add one by writing a module here and listing it below.
"""

from __future__ import annotations

import importlib
from typing import Callable

STRATEGIES: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        STRATEGIES[name] = fn
        return fn
    return deco


for _m in ["sample", "beam", "speculative", "tree", "lookup"]:
    importlib.import_module(f"seqlab.decoding.strategies.{_m}")

"""Sequence mixers: one file each, registered by name.

Adding a mixer: write ``seqlab/mixers/<name>.py`` with a ``Mixer`` subclass
decorated by ``@register("<name>")``, then add its module to ``_MODULES``
below. The models, the CLI and the conformance tests pick it up from there.

Example:
    >>> import seqlab
    >>> seqlab.mixers.names()
    ['aaren', 'atlas', 'attention', 'fsmn', 'gru', 'linear_attention', 'lmu', 'lssl', ...]
    >>> m = seqlab.mixers.build("mamba", dim=64, d_state=16)
    >>> y, state = m(torch.randn(2, 10, 64))
"""

from __future__ import annotations

import importlib
from typing import Any

from seqlab.config import ConfigError
from seqlab.mixers.base import Mixer

MIXERS: dict[str, type[Mixer]] = {}


def register(name: str):
    """Class decorator that adds a Mixer subclass to the registry under ``name``."""

    def deco(cls: type[Mixer]) -> type[Mixer]:
        if name in MIXERS:
            raise ValueError(f"mixer name {name!r} is already registered by {MIXERS[name].__qualname__}")
        cls.name = name
        MIXERS[name] = cls
        return cls

    return deco


def names() -> list[str]:
    """Sorted names of all registered mixers."""
    return sorted(MIXERS)


def get(name: str) -> type[Mixer]:
    """The mixer class registered as ``name`` (ConfigError listing the known names if none)."""
    if name not in MIXERS:
        raise ConfigError(f"unknown mixer {name!r}; known mixers: {', '.join(names())}")
    return MIXERS[name]


def build(name: str, dim: int | None = None, **options: Any) -> Mixer:
    """Build mixer ``name`` of width ``dim``; ``options`` are its Config fields.

    Raises:
        ConfigError: unknown name (lists the known ones), unknown option (lists
            the mixer's options) or a value out of range (names field and value).
    """
    cls = get(name)
    if isinstance(dim, bool) or not isinstance(dim, int):   # ranges: the mixer's own check
        raise ConfigError(f"build({name!r}) needs dim, the model width (a positive int), e.g. "
                          f"seqlab.mixers.build({name!r}, dim=64); got dim = {dim!r}")
    cfg = cls.Config.from_dict(options)
    return cls(dim, cfg)


# One line per mixer module: importing it runs its @register.
_MODULES = ["attention", "linear_attention", "s4d", "mamba", "lstm", "gru", "aaren", "lmu", "rnn",
            "atlas", "fsmn", "prefix_linear_attention", "lssl", "s4", "ngram",
            "plstm"]
for _m in _MODULES:
    importlib.import_module(f"seqlab.mixers.{_m}")

__all__ = ["MIXERS", "Mixer", "build", "get", "names", "register"]

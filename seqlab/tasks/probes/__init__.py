"""Probes: synthetic tasks that show what a sequence layer can remember; one file each.

Adding a probe: write ``seqlab/tasks/probes/<name>.py`` with a :class:`Probe` subclass
decorated by ``@register("<name>")``, then add its module to ``_MODULES`` below.
"""

from __future__ import annotations

import importlib

from seqlab.config import ConfigError
from seqlab.tasks.probes.base import IGNORE, Probe, ProbeBatch, ProbeConfig

PROBES: dict[str, type[Probe]] = {}

_MODULES: list[str] = ["mqar", "selective_copy", "induction", "icll", "set_disjointness", "passkey",
                       "binary_successor", "tree_traversal", "listops", "digits", "file",
                       "arrow"]


def register(name: str):
    """Class decorator that adds a Probe subclass to the registry under ``name``."""

    def deco(cls: type[Probe]) -> type[Probe]:
        if name in PROBES:
            raise ValueError(f"probe name {name!r} is already registered by {PROBES[name].__qualname__}")
        cls.name = name
        PROBES[name] = cls
        return cls

    return deco


def _load() -> None:
    for m in _MODULES:
        importlib.import_module(f"seqlab.tasks.probes.{m}")


def names() -> list[str]:
    _load()
    return sorted(PROBES)


def get(name: str) -> type[Probe]:
    _load()
    if name not in PROBES:
        raise ConfigError(f"unknown probe {name!r}: expected one of {sorted(PROBES)}")
    return PROBES[name]


def build(name: str, **params) -> Probe:
    """A probe by name with its parameters (validated by its config)."""
    return get(name)(**params)


__all__ = ["IGNORE", "PROBES", "Probe", "ProbeBatch", "ProbeConfig", "build", "get", "names",
           "register"]

"""Model families by name: what ``seqlab train --model NAME``, a run config's ``model.kind``
and a checkpoint's ``"kind"`` name, and what ``seqlab.models.load`` builds. Adding a family:
its config and module classes here, one line.

Example:
    >>> cfg_cls, model_cls = MODELS["block"]
    >>> model = model_cls(cfg_cls(block_size=8))
    >>> config_from_dict({"kind": "block", "block_size": 8}) == cfg_cls(block_size=8)
    True
"""

from __future__ import annotations

from typing import Any

from seqlab.config import Config, ConfigError
from seqlab.models.block_lm import BlockLM, BlockLMConfig
from seqlab.models.encdec import EncDec, EncDecConfig
from seqlab.models.hmt import HMT, HMTConfig
from seqlab.models.hat import HAT, HATConfig
from seqlab.models.hnet import HNet, HNetConfig
from seqlab.models.pointer import PointerNet, PointerNetConfig
from seqlab.models.lm import LM, LMConfig

MODELS = {
    "lm": (LMConfig, LM),
    "block": (BlockLMConfig, BlockLM),
    "hmt": (HMTConfig, HMT),
    "hat": (HATConfig, HAT),
    "hnet": (HNetConfig, HNet),
    "encdec": (EncDecConfig, EncDec),
    "pointer": (PointerNetConfig, PointerNet),
}


def kind_of(model) -> str:
    """The family name of a model instance (``CheckpointError``-free: unknown is a bug)."""
    for name, (_, cls) in MODELS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered model family "
                    f"({', '.join(MODELS)}); add it to seqlab.models.kinds.MODELS")


def kind_of_config(cfg: Config) -> str:
    """The family name of a model config instance."""
    for name, (cfg_cls, _) in MODELS.items():
        if type(cfg) is cfg_cls:
            return name
    raise TypeError(f"{type(cfg).__name__} is not the config of a registered model family "
                    f"({', '.join(MODELS)}); add it to seqlab.models.kinds.MODELS")


def config_from_dict(data: dict[str, Any]) -> Config:
    """A model section of plain data, ``{"kind": NAME, ...options}`` (kind "lm" if absent),
    as the config of that family; unknown kinds and options name what is known."""
    if not isinstance(data, dict):
        raise ConfigError(f"the model section must be a mapping of options (with an optional "
                          f"kind: {' | '.join(MODELS)}), got {type(data).__name__}")
    options = dict(data)
    kind = options.pop("kind", "lm")
    if kind not in MODELS:
        raise ConfigError(f"model.kind = {kind!r} is not a model family: expected one of "
                          f"{', '.join(map(repr, MODELS))} (seqlab train --model NAME)")
    return MODELS[kind][0].from_dict(options)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """``cfg`` as plain data with its family first: the inverse of :func:`config_from_dict`."""
    return {"kind": kind_of_config(cfg), **cfg.to_dict()}


def with_vocab_size(cfg: Config, vocab_size: int) -> Config:
    """``cfg`` with another vocabulary (the data's tokenizer decides it): its own field, or
    the family's ``with_vocab_size`` where the vocabulary sits inside (a wrapped backbone)."""
    if hasattr(cfg, "with_vocab_size"):
        return cfg.with_vocab_size(vocab_size)
    return type(cfg).from_dict({**cfg.to_dict(), "vocab_size": vocab_size})


def build(cfg: Config):
    """A freshly initialised model of ``cfg``'s family."""
    return MODELS[kind_of_config(cfg)][1](cfg)


def describe_layers(cfg: Config) -> str:
    """One line naming every stack of a model config, e.g. ``global attention*4; local attention*2``."""
    from seqlab.models.pattern import format_pattern

    groups = cfg.layer_groups()
    if list(groups) == ["layers"]:
        return format_pattern(groups["layers"][1])
    return "; ".join(f"{name} {format_pattern(layers)}" for name, (_, layers) in groups.items())

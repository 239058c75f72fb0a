"""Model families by name: what a checkpoint's ``"kind"`` names and ``seqlab.models.load``
builds. Adding a family: its config and module classes here, one line.

Example:
    >>> cfg_cls, model_cls = MODELS["block"]
    >>> model = model_cls(cfg_cls(block_size=8))
"""

from __future__ import annotations

from seqlab.models.block_lm import BlockLM, BlockLMConfig
from seqlab.models.lm import LM, LMConfig

MODELS = {
    "lm": (LMConfig, LM),
    "block": (BlockLMConfig, BlockLM),
}


def kind_of(model) -> str:
    """The family name of a model instance (``CheckpointError``-free: unknown is a bug)."""
    for name, (_, cls) in MODELS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered model family "
                    f"({', '.join(MODELS)}); add it to seqlab.models.kinds.MODELS")

"""Self-speculation drafts: a model made of a target LM's own layers, sharing its weights."""

from __future__ import annotations

import dataclasses

from torch import nn

from seqlab.config import ConfigError
from seqlab.models.lm import LM


def layer_skip_draft(model, keep):
    """Self-speculation (Zhang et al. 2023, Draft & Verify; Elhoushi et al. 2024, LayerSkip):
    a draft made of the target's own layers ``keep`` (indices, in order), sharing its
    embedding, final norm, head and weights, so it costs no memory and no training.

    Example:
        >>> draft = layer_skip_draft(model, keep=range(0, model.cfg.layers.__len__(), 2))
        >>> seqlab.decoding.generate(model, prompts, "speculative", draft=draft, gamma=4)
    """
    keep = list(keep)
    n = len(model.blocks)
    if not keep or any(not isinstance(i, int) or not 0 <= i < n for i in keep):
        raise ConfigError(f"keep = {keep!r} is not allowed: expected a non-empty list of layer "
                          f"indices in [0, {n})")
    draft = LM.__new__(LM)
    nn.Module.__init__(draft)
    # Each layer spec carries its own options, so the kept layers' specs are the draft's config.
    draft.cfg = dataclasses.replace(model.cfg, layers=tuple(model.cfg.layers[i] for i in keep))
    draft.embed, draft.norm, draft.head = model.embed, model.norm, model.head
    draft.blocks = nn.ModuleList(model.blocks[i] for i in keep)
    return draft

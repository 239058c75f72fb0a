"""Self-speculation drafts: a model made of a target LM's own layers, sharing its weights."""

from __future__ import annotations

from seqlab.models.layer_chain import layer_chain


def layer_skip_draft(model, keep):
    """Self-speculation (Zhang et al. 2023, Draft & Verify; Elhoushi et al. 2024, LayerSkip):
    a draft made of the target's own layers ``keep`` (indices, in order), sharing its
    embedding, final norm, head and weights, so it costs no memory and no training. A
    special case of :func:`seqlab.models.layer_chain.layer_chain` (which also repeats layers).

    Example:
        >>> draft = layer_skip_draft(model, keep=range(0, model.cfg.layers.__len__(), 2))
        >>> seqlab.decoding.generate(model, prompts, "speculative", draft=draft, gamma=4)
    """
    return layer_chain(model, list(keep), name="keep")

"""What every model family shares: the decoding protocol's plain properties and the
parameter count, read from the family's config and its embedding tables.

A family subclasses :class:`SequenceModel`, sets ``self.cfg`` (a config with ``vocab_size``
and, optionally, ``max_length``), names its embedding tables in ``embedding_parameters`` and
overrides only what differs (the LM's capabilities, a wrapper's counts), so the protocol's
defaults live in one place.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.decoding.protocol import Capabilities


class SequenceModel(nn.Module):
    """Base of the model families of ``seqlab.models.kinds``; see the module docstring."""

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    @property
    def max_length(self) -> int | None:
        """The longest prompt plus generation accepted (None: no limit)."""
        return getattr(self.cfg, "max_length", None)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def capabilities(self) -> Capabilities:
        """No optional faces by default (see ``seqlab.decoding.protocol``)."""
        return Capabilities()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The tables ``num_parameters(exclude_embeddings=True)`` leaves out."""
        return []

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once), without the embedding tables if
        ``exclude_embeddings``."""
        n = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if exclude_embeddings:
            n -= sum(p.numel() for p in {id(p): p for p in self.embedding_parameters()}.values())
        return n


__all__ = ["SequenceModel"]

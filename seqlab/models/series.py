"""Sequences of real vectors (time series, image rows) in, one prediction per sequence out.

The decoder LM's blocks (:class:`~seqlab.models.lm.LM`: any layer pattern, any mixer)
read ``x: (B, T, C)`` through a linear input projection ``C -> dim`` in place of the token
embedding; the hidden state after the final norm is pooled to one vector per sequence and a
linear head maps it to ``outputs`` numbers: class logits, or regression targets.

Sequences of several lengths come padded at the end with their ``lengths``. The blocks are
causal (every mixer's conformance test checks it), so position ``length - 1`` has seen
exactly its own sequence: ``"last"`` pooling reads it there, and ``"mean"`` averages the
positions before it. Padding therefore changes no prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.models.lm import LM, LMConfig


@dataclass(frozen=True)
class SeriesConfig(Config):
    """Options of a model over real-valued sequences.

    Attributes:
        backbone: the LM whose blocks read the sequence (its vocab_size is not used: the
            input projection replaces the embedding).
        channels: numbers per step (C).
        outputs: class count (classification) or targets per sequence (regression).
        pooling: "last" (the last position of each sequence; right for causal blocks) or
            "mean" (the average over each sequence's positions).
    """

    backbone: LMConfig = field(default_factory=LMConfig)
    channels: int = 1
    outputs: int = 2
    pooling: Literal["last", "mean"] = "last"

    def validate(self) -> None:
        require(self.channels >= 1, self, "channels", "an int >= 1")
        require(self.outputs >= 1, self, "outputs", "an int >= 1")


class SeriesModel(nn.Module):
    """``x: (B, T, C)`` float -> ``(B, outputs)``.

    Example:
        >>> cfg = SeriesConfig(backbone=LMConfig(dim=32, layers=("lstm",)), channels=3, outputs=5)
        >>> model = SeriesModel(cfg)
        >>> model(torch.randn(4, 10, 3), lengths=torch.tensor([10, 7, 3, 10])).shape
        torch.Size([4, 5])
    """

    def __init__(self, cfg: SeriesConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.backbone.dim
        # The LM's own construction builds and initialises the blocks (each mixer as its paper
        # says, the MLPs scaled with depth); its embedding and vocabulary head are not kept.
        lm = LM(cfg.backbone)
        self.blocks, self.norm = lm.blocks, lm.norm
        self.input = nn.Linear(cfg.channels, dim)
        self.head = nn.Linear(dim, cfg.outputs)
        nn.init.normal_(self.head.weight, std=cfg.backbone.init_std)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor) -> Tensor:
        """Hidden states ``(B, T, dim)`` after the final norm."""
        if x.dim() != 3 or x.shape[-1] != self.cfg.channels:
            raise ValueError(f"the model expects inputs of shape (batch, length, {self.cfg.channels}), "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"the model expects real-valued inputs, got dtype {x.dtype}")
        h = self.input(x.to(self.input.weight.dtype))
        for block in self.blocks:
            h, _ = block(h, None)
        return self.norm(h)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, outputs)`` for ``x: (B, T, C)``; ``lengths: (B,)`` steps of each padded sequence."""
        return self.head(self.pool(self.features(x), lengths))

    def pool(self, hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, D)`` -> ``(B, D)`` as ``cfg.pooling`` says, over each sequence's positions."""
        B, T, _ = hidden.shape
        if lengths is None:
            return hidden[:, -1] if self.cfg.pooling == "last" else hidden.mean(dim=1)
        lengths = lengths.to(hidden.device)
        if bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must be in [1, {T}], got {lengths.tolist()[:8]}")
        if self.cfg.pooling == "last":
            return hidden[torch.arange(B, device=hidden.device), lengths - 1]
        mask = (torch.arange(T, device=hidden.device)[None, :] < lengths[:, None]).to(hidden.dtype)
        return (hidden * mask[..., None]).sum(dim=1) / lengths[:, None].to(hidden.dtype)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters; ``exclude_embeddings`` leaves out the input projection."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(p.numel() for p in self.input.parameters())
        return n

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the blocks' recurrent state per sequence after ``seq_len`` steps."""
        elem = torch.empty((), dtype=dtype).element_size()
        return sum(b.mixer.state_size(seq_len) for b in self.blocks) * elem

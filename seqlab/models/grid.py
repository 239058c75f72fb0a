"""Image classification with pLSTM over the 2-D grid: pixels (or patches) in, class logits out.

``tokens (B, size, size)`` (or ``(B, size * size)`` in raster order, as the ``arrow`` probe
gives them) -> embedding per pixel -> optional ``patch x patch`` patches, each a linear map
of its pixels' embeddings -> blocks -> norm -> mean over cells -> linear head.

A block is the LM's (:class:`seqlab.models.lm.Block`) laid out on a grid:
``x + plstm.grid(norm(x))`` then ``x + mlp(norm(x))``, with the mixer's 2-D path
(``seqlab.mixers.plstm``). ``modes`` names one block per entry, "P" (propagation) or "D"
(distribution); the paper's vision model alternates them. There is no position embedding:
the grid's direction of flow places every cell, and the mean over cells has no size built
in, so a model trained on 16 x 16 images runs unchanged on 32 x 32 ones.

Example:
    >>> model = GridClassifier(GridClassifierConfig(vocab_size=4, dim=32, modes=("P", "D")))
    >>> model(torch.randint(0, 4, (2, 16, 16))).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

import seqlab.mixers as mixers
from seqlab.config import Config, require
from seqlab.nn import GatedMLP, RMSNorm


@dataclass(frozen=True)
class GridClassifierConfig(Config):
    """Options of a pLSTM image classifier.

    Attributes:
        vocab_size: number of pixel values (token ids).
        dim: model width.
        modes: one block per entry: "P" or "D", the pLSTM mode of its mixer.
        heads, corners, block: the plstm mixer's options (``seqlab.mixers.plstm``).
        patch: side of the square patches the pixels are grouped into (1 = one cell per
            pixel); the image side must be a multiple of it.
        mlp_hidden: hidden width of each block's gated MLP (0: no MLP).
        num_classes: number of labels.
        embed_std: standard deviation of the pixel embedding. Pixels enter at unit scale, as
            a ViT's patch embedding of raw pixels does: at 0.02 (the LM's scale) the pLSTM
            classifier could not even fit 16 arrow images in 60 steps (loss 0.62, the
            label prior), at 1.0 it reached 0.43.
        init_std: standard deviation of the MLP and head weights.
    """

    vocab_size: int = 4
    dim: int = 32
    modes: tuple[Literal["P", "D"], ...] = ("P", "D")
    heads: int = 4
    corners: int = 4
    block: int = 8
    patch: int = 1
    mlp_hidden: int = 64
    num_classes: int = 2
    embed_std: float = 1.0
    init_std: float = 0.02

    def validate(self) -> None:
        require(self.vocab_size >= 1, self, "vocab_size", "a positive int")
        require(self.dim >= 1, self, "dim", "a positive int")
        require(len(self.modes) >= 1, self, "modes", 'one or more of "P" and "D"')
        require(self.patch >= 1, self, "patch", "a positive int")
        require(self.mlp_hidden >= 0, self, "mlp_hidden", "an int >= 0 (0: no MLP)")
        require(self.num_classes >= 2, self, "num_classes", "an int >= 2")
        require(self.embed_std > 0, self, "embed_std", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")


class GridBlock(nn.Module):
    """``x + plstm.grid(norm(x))`` then ``x + mlp(norm(x))`` on ``x: (B, rows, cols, dim)``."""

    def __init__(self, cfg: GridClassifierConfig, mode: str):
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.dim)
        self.mixer = mixers.build("plstm", dim=cfg.dim, mode=mode, heads=cfg.heads,
                                  corners=cfg.corners, block=cfg.block)
        self.mlp_norm = RMSNorm(cfg.dim) if cfg.mlp_hidden else None
        self.mlp = GatedMLP(cfg.dim, cfg.mlp_hidden) if cfg.mlp_hidden else None

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer.grid(self.mixer_norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class GridClassifier(nn.Module):
    """``tokens: (B, size, size)`` or ``(B, size * size)`` -> ``logits: (B, num_classes)``."""

    def __init__(self, cfg: GridClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        # No bias, and weights that keep the embedding's scale: with init_std on both
        # (cells of ~0.003) plus a bias, AdamW's first steps on the bias (lr per step, the
        # same for every cell) drowned the pixels, and the arrow task never left ln 2.
        self.patch = (nn.Linear(cfg.patch ** 2 * cfg.dim, cfg.dim, bias=False)
                      if cfg.patch > 1 else None)
        self.blocks = nn.ModuleList(GridBlock(cfg, mode) for mode in cfg.modes)
        self.norm = RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        std = cfg.init_std
        nn.init.normal_(self.embed.weight, std=cfg.embed_std)
        if self.patch is not None:
            nn.init.normal_(self.patch.weight, std=self.patch.in_features ** -0.5)
        for block in self.blocks:
            if block.mlp is not None:
                nn.init.normal_(block.mlp.gate_proj.weight, std=std)
                nn.init.normal_(block.mlp.up_proj.weight, std=std)
                nn.init.normal_(block.mlp.down_proj.weight, std=std / (2 * len(self.blocks)) ** 0.5)
        nn.init.normal_(self.head.weight, std=std)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``.

        Raises:
            ValueError: tokens that are not integer ids of a square image (raster order)
                or of shape (B, rows, cols) with sides a multiple of ``patch``.
        """
        x = self.features(tokens)                              # (B, rows, cols, dim)
        return self.head(x.mean(dim=(1, 2)))

    def features(self, tokens: Tensor) -> Tensor:
        """Hidden states ``(B, rows, cols, dim)`` after the final norm (one cell per patch)."""
        tokens = self._as_image(tokens)
        x = self.embed(tokens)                                 # (B, rows, cols, dim)
        p = self.cfg.patch
        if self.patch is not None:
            B, R, C, D = x.shape
            x = x.view(B, R // p, p, C // p, p, D).transpose(2, 3).flatten(3)   # (B, R/p, C/p, p*p*D)
            x = self.patch(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _as_image(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dim() not in (2, 3):
            raise ValueError("the grid classifier expects integer pixel ids of shape (batch, rows, "
                             "cols), or (batch, side * side) in raster order; got "
                             + (f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor)
                                else type(tokens).__name__))
        if tokens.dim() == 2:
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1]:
                raise ValueError(f"{tokens.shape[1]} pixels per row is not a square image; pass "
                                 "(batch, rows, cols) for other shapes")
            tokens = tokens.view(tokens.shape[0], side, side)
        p = self.cfg.patch
        if tokens.shape[1] % p or tokens.shape[2] % p:
            raise ValueError(f"an image of {tuple(tokens.shape[1:])} pixels does not split into "
                             f"patches of {p} x {p}; use image sides that are multiples of {p}")
        return tokens

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

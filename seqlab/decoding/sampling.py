"""Pure functions on logits: temperature, top-k, top-p, min-p, and drawing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import Config, require


@dataclass(frozen=True)
class SamplingConfig(Config):
    """How the next token is chosen. ``temperature = 0`` means greedy (argmax)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None

    def validate(self) -> None:
        require(self.temperature >= 0, self, "temperature", "a number >= 0 (0 = greedy)")
        require(self.top_k is None or self.top_k > 0, self, "top_k", "a positive int or None")
        require(self.top_p is None or 0 < self.top_p <= 1, self, "top_p", "a number in (0, 1]")
        require(self.min_p is None or 0 <= self.min_p < 1, self, "min_p", "a number in [0, 1)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Scaled, filtered logits (filtered entries set to -inf); ``logits: (B, V)``."""
    logits = logits.float() / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = logits.topk(cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens before it already cover top_p; the first always stays.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if cfg.min_p is not None and cfg.min_p > 0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < cfg.min_p * probs.max(-1, keepdim=True).values,
                                    float("-inf"))
    return logits


def probabilities(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """The distribution the sampler draws from; one-hot argmax when greedy."""
    if cfg.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return filter_logits(logits, cfg).softmax(-1)


def choose(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> Tensor:
    """Next token per row: argmax when greedy, else a draw from the filtered distribution."""
    if cfg.greedy:
        return logits.argmax(-1)
    probs = filter_logits(logits, cfg).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

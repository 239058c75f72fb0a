"""Passkey retrieval.

Source: Mohtashami & Jaggi 2023, "Landmark Attention: Random-access infinite context length
for Transformers", where a passkey hidden in long filler text must be repeated at the end;
it is widely used to test length extrapolation (train at one ``seq_len``, evaluate longer
with ``with_length``).

Layout (length ``seq_len``; ``K`` marks the key, ``Q`` asks for it)::

    f f f f f f K 3 1 4 1 5 f f f f f f f f ... f f Q 3 1 4 1
    targets:                                      3 1 4 1 5   (IGNORE elsewhere)

* filler: ``filler="fixed"`` repeats one fixed "sentence" of ``filler_period`` filler ids
  (the same for every row, split and seed, like the paper's repeated "The grass is green.
  The sky is blue. ..."); ``filler="random"`` draws i.i.d. filler ids;
* the key block ``K d1 .. dk`` sits at a depth uniform over the filler (``depth=None``) or
  at a fixed fraction ``depth`` in [0, 1] of it (0 = start, 1 = just before the query); the
  fixed filler text runs on unbroken around it;
* the query block is teacher-forced: after ``Q`` the inputs are the key's first k-1 digits
  and the outputs must be all k digits. Per-digit ``accuracy`` and whole-key
  ``exact_match`` (all k digits right under teacher forcing is the same event as a greedy
  decode reproducing the key).

Tokens: digits 0-9, key marker 10, query marker 11, filler ``12 .. 12 + num_filler_tokens - 1``.
Generation is a handful of (B, L) tensor ops, so lengths of 16k and more are cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import (IGNORE, Probe, ProbeBatch, ProbeConfig, randint_between,
                                      token_and_sequence_metrics, token_and_sequence_scores)

KEY = 10
QUERY = 11
FIRST_FILLER = 12
_FILLER_TEXT_SEED = 20230516  # the fixed filler text is one draw, the same everywhere


@dataclass(frozen=True)
class PasskeyConfig(ProbeConfig):
    """Passkey-retrieval parameters."""

    seq_len: int = 1024
    num_digits: int = 5
    filler: Literal["fixed", "random"] = "fixed"
    num_filler_tokens: int = 32
    filler_period: int = 24
    depth: float | None = None  # None: uniform over the filler; else a fraction in [0, 1]

    def validate(self) -> None:
        super().validate()
        require(self.num_digits >= 1, self, "num_digits", "an int >= 1")
        require(self.num_filler_tokens >= 1, self, "num_filler_tokens", "an int >= 1")
        require(self.filler_period >= 1, self, "filler_period", "an int >= 1")
        require(self.depth is None or (math.isfinite(self.depth) and 0.0 <= self.depth <= 1.0),
                self, "depth", "None (uniform) or a number in [0, 1]")
        require(self.seq_len >= 2 * self.num_digits + 1, self, "seq_len",
                f"an int >= 2 * num_digits + 1 = {2 * self.num_digits + 1} (key block and query)")


@register("passkey")
class Passkey(Probe):
    """Passkey retrieval; see the module docstring."""

    kind = "lm"
    Config = PasskeyConfig

    @property
    def vocab_size(self) -> int:
        return FIRST_FILLER + self.cfg.num_filler_tokens

    def filler_text(self) -> torch.Tensor:
        """The fixed filler sentence (filler_period ids), identical for every batch."""
        g = torch.Generator().manual_seed(_FILLER_TEXT_SEED)
        return FIRST_FILLER + torch.randint(self.cfg.num_filler_tokens, (self.cfg.filler_period,),
                                            generator=g)

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B, L, k = self.cfg, batch_size, self.cfg.seq_len, self.cfg.num_digits
        g = self.generator(split, step, seed)
        digits = torch.randint(10, (B, k), generator=g)
        filler_len = L - 2 * k - 1  # everything but the key block (k + 1) and the query (k)
        if cfg.depth is None:
            key_at = randint_between(g, 0, filler_len, (B, 1))
        else:
            key_at = torch.full((B, 1), round(cfg.depth * filler_len))

        body_len = L - k  # filler with the key block inside; the query block follows
        pos = torch.arange(body_len).expand(B, body_len)
        in_key = (pos >= key_at) & (pos < key_at + k + 1)
        filler_index = torch.where(pos < key_at, pos, pos - (k + 1))  # text runs on around the key
        if cfg.filler == "fixed":
            text = self.filler_text()
            filler = text[filler_index.clamp(min=0) % cfg.filler_period]
        else:
            filler = FIRST_FILLER + torch.randint(cfg.num_filler_tokens, (B, body_len), generator=g)
        key_block = torch.cat([torch.full((B, 1), KEY), digits], dim=1)  # (B, k + 1)
        key_tokens = key_block.gather(1, (pos - key_at).clamp(0, k))
        body = torch.where(in_key, key_tokens, filler)

        query = torch.cat([torch.full((B, 1), QUERY), digits[:, :-1]], dim=1)  # teacher forcing
        inputs = torch.cat([body, query], dim=1)
        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        targets[:, body_len:] = digits
        return ProbeBatch(inputs, targets)

    def score(self, logits, batch):
        return token_and_sequence_scores(logits, batch.targets)

    metrics = staticmethod(token_and_sequence_metrics)

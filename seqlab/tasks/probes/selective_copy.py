"""Selective copying.

Source: Gu & Dao 2023, "Mamba: Linear-time sequence modeling with selective state spaces"
(section 3.1), building on the copying task of the S4 line of work. A fixed-spacing copy
can be solved by a time-invariant convolution; scattering the data tokens at random
positions among blanks makes the model *select* what to keep based on content.

Layout::

    . . 7 . . . 3 . 9 . . . 4 . . | M M M M
    targets:                        7 3 9 4   (IGNORE elsewhere)

* the first ``seq_len - num_tokens`` positions hold ``num_tokens`` data tokens (i.i.d.
  uniform over ``num_symbols`` symbols) at random distinct positions, blanks elsewhere;
* the last ``num_tokens`` positions are copy markers, and the output at the i-th marker
  must be the i-th data token (in order of appearance). The answers are not fed back as
  inputs (the output region holds only markers, as copying tasks of the S4 line are
  usually posed), so every answer needs the memorised sequence.

Tokens: 0 = blank, 1 = copy marker, 2 .. 2 + num_symbols - 1 = data.
Metrics: per-token ``accuracy`` and whole-answer ``exact_match``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import (IGNORE, Probe, ProbeBatch, ProbeConfig, distinct_ints,
                                      token_and_sequence_metrics, token_and_sequence_scores)

BLANK = 0
MARKER = 1
FIRST_SYMBOL = 2


@dataclass(frozen=True)
class SelectiveCopyConfig(ProbeConfig):
    """Selective-copying parameters; the defaults (length 4096, 16 tokens to copy from 16
    symbols) are of the scale of the Mamba paper's experiment."""

    seq_len: int = 4096
    num_tokens: int = 16
    num_symbols: int = 16

    def validate(self) -> None:
        super().validate()
        require(self.num_tokens >= 1, self, "num_tokens", "an int >= 1")
        require(self.num_symbols >= 2, self, "num_symbols", "an int >= 2")
        require(self.seq_len >= 2 * self.num_tokens, self, "seq_len",
                f"an int >= 2 * num_tokens = {2 * self.num_tokens} (a context that holds the "
                f"tokens, then one marker per token)")


@register("selective_copy")
class SelectiveCopy(Probe):
    """Selective copying; see the module docstring."""

    kind = "lm"
    Config = SelectiveCopyConfig

    @property
    def vocab_size(self) -> int:
        return FIRST_SYMBOL + self.cfg.num_symbols

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B = self.cfg, batch_size
        n, L = cfg.num_tokens, cfg.seq_len
        context = L - n
        g = self.generator(split, step, seed)

        data = FIRST_SYMBOL + torch.randint(cfg.num_symbols, (B, n), generator=g)
        positions = distinct_ints(g, B, context, n).sort(dim=1).values  # in order of appearance

        inputs = torch.full((B, L), BLANK, dtype=torch.long)
        inputs.scatter_(1, positions, data)
        inputs[:, context:] = MARKER
        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        targets[:, context:] = data
        return ProbeBatch(inputs, targets)

    def score(self, logits, batch):
        return token_and_sequence_scores(logits, batch.targets)

    metrics = staticmethod(token_and_sequence_metrics)

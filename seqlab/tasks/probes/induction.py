"""Induction heads.

Sources: Olsson et al. 2022, "In-context learning and induction heads" (the mechanism:
"[A][B] ... [A] -> [B]"), and the synthetic task of Fu, Dao et al. 2023, "Hungry Hungry
Hippos" (H3), which tests it in isolation.

Layout::

    5 9 T 4 2 8 ... 7 1 T
    target at the last position: 4  (the token that followed the first trigger)

* tokens are i.i.d. uniform over the content ids ``1 .. vocab_size - 1``;
* the trigger (id 0) appears exactly twice: once at a uniformly random position
  ``p <= seq_len - 3`` and once at the last position;
* only the last position is scored; its target is ``inputs[p + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import IGNORE, Probe, ProbeBatch, ProbeConfig

TRIGGER = 0


@dataclass(frozen=True)
class InductionConfig(ProbeConfig):
    """Induction-head parameters; a small vocabulary as in H3's setting."""

    seq_len: int = 64
    vocab_size: int = 20

    def validate(self) -> None:
        super().validate()
        require(self.seq_len >= 3, self, "seq_len", "an int >= 3 (trigger, answer, trigger)")
        require(self.vocab_size >= 3, self, "vocab_size", "an int >= 3 (the trigger + 2 content ids)")


@register("induction")
class Induction(Probe):
    """Induction heads; see the module docstring."""

    kind = "lm"
    Config = InductionConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        B, L = batch_size, self.cfg.seq_len
        g = self.generator(split, step, seed)
        inputs = 1 + torch.randint(self.cfg.vocab_size - 1, (B, L), generator=g)
        first = torch.randint(L - 2, (B, 1), generator=g)  # the answer at first + 1 <= L - 2
        inputs.scatter_(1, first, TRIGGER)
        inputs[:, -1] = TRIGGER
        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        targets[:, -1] = inputs.gather(1, first + 1).squeeze(1)
        return ProbeBatch(inputs, targets)

"""Multi-query associative recall (MQAR).

Source: Arora, Eyuboglu et al. 2023, "Zoology: Measuring and improving recall in efficient
language models". MQAR separates attention from its efficient replacements: the model must
recall, at many points in the sequence, the value bound to a key it saw earlier.

Layout (the same data definition as Zoology's generator, written anew here)::

    k1 v1 k2 v2 ... kn vn | x x k3 x x x k1 x ... (remainder of the sequence)
    targets:                     v3        v1        (IGNORE everywhere else)

* keys: ``num_pairs`` distinct ids from the key half ``[1, vocab_size // 2)``; values:
  ``num_pairs`` distinct ids from the value half ``[vocab_size // 2, vocab_size)``.
* every key is queried exactly once, in random order, in the remainder after the pairs
  (Zoology does the same: one query per key, no repeats).
* query slots: the remainder has ``(seq_len - 2 * num_pairs) // 2`` even offsets; the n
  query slots are drawn without replacement with weight ``g ** (power_a - 1)`` for the
  g-th slot (g = 1, 2, ...), Zoology's power law: small ``power_a`` (0.01, the default)
  puts most queries close to the pairs, ``power_a = 1`` is uniform placement. We draw
  them with the Gumbel-top-k trick, which samples the same distribution as successive
  draws without replacement.
* the target at a query position is its key's value (next-token prediction: the input
  there is the key, the output must be the value); all other targets are IGNORE.
* other positions of the remainder: random ids from the whole vocabulary
  (``random_filler=True``, Zoology's ``random_non_queries``) or 0.

Zoology's figure-2 cell is ``vocab_size=8192, seq_len=256, num_pairs=16`` (the defaults).
A batch of 256 rows at these settings takes about 10-15 ms on one CPU core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import IGNORE, Probe, ProbeBatch, ProbeConfig, distinct_ints


@dataclass(frozen=True)
class MQARConfig(ProbeConfig):
    """MQAR parameters; the defaults are Zoology's figure-2 cell."""

    seq_len: int = 256
    vocab_size: int = 8192
    num_pairs: int = 16
    power_a: float = 0.01  # Zoology's power law on query gaps; 1.0 places queries uniformly
    random_filler: bool = True

    def validate(self) -> None:
        super().validate()
        require(self.vocab_size >= 4, self, "vocab_size", "an int >= 4")
        max_pairs = self.vocab_size // 2 - 1  # key 0 is never used, as in Zoology
        require(1 <= self.num_pairs <= max_pairs, self, "num_pairs",
                f"an int in [1, vocab_size // 2 - 1 = {max_pairs}]")
        require(self.seq_len >= 4 * self.num_pairs, self, "seq_len",
                f"an int >= 4 * num_pairs = {4 * self.num_pairs} (the pairs, then one query "
                f"slot of two tokens per key)")
        require(self.power_a > 0 and math.isfinite(self.power_a), self, "power_a",
                "a positive number (1.0 = uniform query placement)")


@register("mqar")
class MQAR(Probe):
    """Multi-query associative recall; see the module docstring."""

    kind = "lm"
    Config = MQARConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B = self.cfg, batch_size
        n, V, L = cfg.num_pairs, cfg.vocab_size, cfg.seq_len
        half = V // 2
        g = self.generator(split, step, seed)

        keys = 1 + distinct_ints(g, B, half - 1, n)  # (B, n) in [1, half)
        values = half + distinct_ints(g, B, V - half, n)  # (B, n) in [half, V)

        # Query slots: Gumbel-top-k over slot log-weights == weighted draws without replacement.
        context = 2 * n
        slots = (L - context) // 2
        log_w = (cfg.power_a - 1.0) * torch.arange(1, slots + 1, dtype=torch.float64).log()
        gumbel = -torch.empty(B, slots, dtype=torch.float64).exponential_(generator=g).log()
        gaps = (log_w + gumbel).topk(n, dim=1).indices  # (B, n) distinct slot numbers
        query_pos = context + 2 * gaps  # key i is queried at query_pos[:, i]

        if cfg.random_filler:
            inputs = torch.randint(V, (B, L), generator=g)
        else:
            inputs = torch.zeros(B, L, dtype=torch.long)
        inputs[:, 0:context:2] = keys
        inputs[:, 1:context:2] = values
        inputs.scatter_(1, query_pos, keys)
        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        targets.scatter_(1, query_pos, values)
        return ProbeBatch(inputs, targets)

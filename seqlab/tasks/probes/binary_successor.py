"""Binary successor: structural recursion on binary numbers.

Source: Zhang et al. 2024, "Transformer-based models are not yet perfect at learning to
emulate structural recursion", which studies the successor function on binary numbers
(and tree traversals, see ``tree_traversal``) as recursion over an inductive datatype;
models learn shortcuts that fail on rare cases such as long carry chains.

Layout: the bits of x, ``=``, the bits of x + 1, ``$`` (end), then padding::

    lsb_first=True, x = 11 = 1011b:   1 1 0 1 = 0 0 1 1 $ . . .
    targets (next token):                     0 0 1 1 $          (IGNORE elsewhere)

* ``lsb_first=True`` (default) writes the least-significant bit first. This is the order
  in which the recursion consumes a binary number built from its low bit up (as Coq's
  ``positive``: 11 = ``xI (xI (xO xH))``), and it lets a left-to-right model emit the answer
  while carrying; ``lsb_first=False`` writes the usual most-significant-bit-first order,
  where the model must look ahead to decide each output bit;
* x has ``n`` bits, n uniform in ``[min_bits, max_bits]``, with no leading zero (n = 1
  also allows x = 0); the other bits are uniform, so a carry chain of length c has
  probability about 2**-c, the rare case the paper singles out;
* x + 1 has n or n + 1 bits. Scored: every output bit and the end token (per-token
  ``accuracy``) and the whole answer (``exact_match``).

Tokens: 0, 1, ``=`` 2, ``$`` 3, pad 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import (IGNORE, Probe, ProbeBatch, ProbeConfig, randint_between,
                                      token_and_sequence_metrics, token_and_sequence_scores)

EQUALS = 2
END = 3
PAD = 4


@dataclass(frozen=True)
class BinarySuccessorConfig(ProbeConfig):
    """Binary-successor parameters."""

    seq_len: int = 40
    min_bits: int = 1
    max_bits: int = 16
    lsb_first: bool = True

    def validate(self) -> None:
        super().validate()
        require(self.min_bits >= 1, self, "min_bits", "an int >= 1")
        require(self.max_bits >= self.min_bits, self, "max_bits",
                f"an int >= min_bits = {self.min_bits}")
        require(self.seq_len >= 2 * self.max_bits + 2, self, "seq_len",
                f"an int >= 2 * max_bits + 2 = {2 * self.max_bits + 2} (x, '=', x + 1 and the "
                f"end token as next-token targets)")


def _ordered(bits: Tensor, length: Tensor, lsb_first: bool) -> Tensor:
    """Bits (B, W) stored least-significant first, in the written order (valid below length)."""
    if lsb_first:
        return bits
    index = (length.unsqueeze(1) - 1 - torch.arange(bits.shape[1])).clamp(min=0)
    return bits.gather(1, index)


def _place(seq: Tensor, values: Tensor, start: Tensor, length: Tensor) -> Tensor:
    """Write values[:, :length] at seq[:, start : start + length] per row (vectorized)."""
    offset = torch.arange(seq.shape[1]) - start.unsqueeze(1)
    inside = (offset >= 0) & (offset < length.unsqueeze(1))
    picked = values.gather(1, offset.clamp(0, values.shape[1] - 1))
    return torch.where(inside, picked, seq)


@register("binary_successor")
class BinarySuccessor(Probe):
    """Binary successor; see the module docstring."""

    kind = "lm"
    Config = BinarySuccessorConfig

    @property
    def vocab_size(self) -> int:
        return PAD + 1

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B, W, L = self.cfg, batch_size, self.cfg.max_bits, self.cfg.seq_len
        g = self.generator(split, step, seed)
        n = randint_between(g, cfg.min_bits, cfg.max_bits, (B,))
        bit_index = torch.arange(W)
        bits = torch.randint(2, (B, W), generator=g)  # least-significant first
        top = bit_index == (n - 1).unsqueeze(1)
        bits = torch.where(top & (n > 1).unsqueeze(1), 1, bits)  # no leading zero; n = 1: x in {0, 1}
        bits = bits * (bit_index < n.unsqueeze(1))

        # x + 1: the trailing ones (a run from the low bit) turn to 0, the next bit to 1.
        trailing = bits.cumprod(dim=1)  # 1 while the run of ones from the low end lasts
        run = trailing.sum(dim=1)  # (B,) <= n, since bits past n are 0
        succ = torch.cat([bits * (1 - trailing), torch.zeros(B, 1, dtype=torch.long)], dim=1)
        succ.scatter_(1, run.unsqueeze(1), 1)
        m = torch.maximum(n, run + 1)

        seq = torch.full((B, L + 1), PAD, dtype=torch.long)  # one extra token for the last target
        seq = _place(seq, _ordered(bits, n, cfg.lsb_first), torch.zeros_like(n), n)
        seq.scatter_(1, n.unsqueeze(1), EQUALS)
        seq = _place(seq, _ordered(succ, m, cfg.lsb_first), n + 1, m)
        seq.scatter_(1, (n + m + 1).unsqueeze(1), END)

        target_pos = torch.arange(1, L + 1)  # position of each target in seq
        scored = (target_pos > n.unsqueeze(1)) & (target_pos <= (n + m + 1).unsqueeze(1))
        targets = torch.where(scored, seq[:, 1:], IGNORE)
        return ProbeBatch(seq[:, :L], targets)

    def score(self, logits, batch):
        return token_and_sequence_scores(logits, batch.targets)

    metrics = staticmethod(token_and_sequence_metrics)

"""Training objectives: what a window of text becomes as inputs, targets and a mask.

One recipe, three objectives (Ettin trains its paired encoder and decoder this way; UniXcoder
one model under all three masks), each from a window of T + 1 tokens:

- ``clm``: causal language modelling; inputs ``w[:-1]``, targets ``w[1:]``, causal mask.
- ``mlm``: masked language modelling; ``mlm_probability`` of the T input positions (at least
  one per row) are chosen, 80% of them replaced by the mask id, 10% by a random token, 10%
  kept (BERT's recipe); the targets are the original tokens there, and the mask is
  bidirectional. The mask id is the first id past the data's vocabulary, so an MLM model has
  one embedding row more than the data's tokenizer.
- ``prefix``: prefix language modelling; each row draws a prefix length p in [1, T - 1]
  (uniformly), positions before p see each other, the loss covers the targets after the
  prefix (positions >= p - 1 predict tokens the prefix does not contain).

Randomness comes from a generator seeded by (seed, step, micro-batch), never from the global
RNG, so a resumed run draws the same masks; evaluation uses fixed seeds per window.

Example:
    >>> batch = make_batch("mlm", window, data_vocab=256, seed=0, step=3)
    >>> logits, _ = model(batch.inputs, prefix=batch.prefix)
    >>> loss = cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OBJECTIVES = ("clm", "mlm", "prefix")
IGNORE = -100    # a target position without loss (cross_entropy's ignore_index)


@dataclass(frozen=True)
class Batch:
    """inputs (B, T) ids; targets (B, T) ids or IGNORE; prefix (B,) mask lengths or None (causal)."""

    inputs: Tensor
    targets: Tensor
    prefix: Tensor | None


def extra_ids(objective: str) -> int:
    """Token ids the objective adds past the data's vocabulary (the MLM mask id)."""
    return 1 if objective == "mlm" else 0


def make_batch(objective: str, window: Tensor, data_vocab: int, seed: int, step: int,
               micro: int = 0, mlm_probability: float = 0.15) -> Batch:
    """The inputs, targets and mask of ``objective`` for ``window (B, T + 1)``.

    ``seed``, ``step`` and ``micro`` seed the draws (masked positions, prefix lengths), so the
    same call always gives the same batch.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    x, y = window[:, :-1], window[:, 1:]
    if objective == "clm":
        return Batch(x, y, None)
    B, T = x.shape
    gen = torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + micro) % 2 ** 62)
    if objective == "prefix":
        if T < 2:
            raise ValueError("the prefix objective needs seq_len >= 2 (a prefix and a target)")
        p = torch.randint(1, T, (B,), generator=gen)
        keep = torch.arange(T)[None] >= (p - 1)[:, None]
        return Batch(x, torch.where(keep.to(y.device), y, IGNORE), p.to(x.device))
    chosen = torch.rand(B, T, generator=gen) < mlm_probability
    chosen[torch.arange(B), torch.randint(0, T, (B,), generator=gen)] = True   # >= 1 per row
    how = torch.rand(B, T, generator=gen)
    random_ids = torch.randint(0, data_vocab, (B, T), generator=gen)
    chosen, how, random_ids = chosen.to(x.device), how.to(x.device), random_ids.to(x.device)
    inputs = torch.where(chosen & (how < 0.8), data_vocab, x)                  # the mask id
    inputs = torch.where(chosen & (how >= 0.8) & (how < 0.9), random_ids, inputs)
    return Batch(inputs, torch.where(chosen, x, IGNORE), torch.full((B,), T, device=x.device))


def cat_batches(batches: list[Batch]) -> Batch:
    """Batches of the same objective and length, stacked row-wise."""
    prefix = None if batches[0].prefix is None else torch.cat([b.prefix for b in batches])
    return Batch(torch.cat([b.inputs for b in batches]), torch.cat([b.targets for b in batches]),
                 prefix)

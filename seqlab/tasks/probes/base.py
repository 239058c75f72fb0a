"""The probe contract: a seeded, vectorized generator of batches plus its metric.

A probe is a synthetic task that shows what a sequence layer can or cannot do
(recall, copying, counting, recursion, in-context learning, ...). Every probe:

* is a :class:`Probe` subclass registered by name (``@register("mqar")``), with a
  typed :class:`ProbeConfig` subclass holding its parameters (vocabulary,
  length, ...), validated like every seqlab config;
* makes a batch as a pure function of ``(split, step, batch_size, seed)`` with
  tensor ops only (no Python loop per token), so training resumes exactly and
  the test split never overlaps the train split by construction (different
  generator streams);
* is either ``kind = "lm"`` (next-token targets at the scored positions, -100
  elsewhere) or ``kind = "classify"`` (one label per sequence, read by a
  classification head on the same backbone);
* scores model outputs with :meth:`Probe.score`, returning sums and counts so
  that scores over many batches add up exactly (``metrics`` divides).

Adding a probe: write ``seqlab/tasks/probes/<name>.py`` with a Probe subclass,
decorate it with ``@register("<name>")`` and add the module to ``_MODULES`` in
``seqlab/tasks/probes/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from seqlab.config import Config, require

IGNORE = -100  # target value at positions that are not scored (torch's cross_entropy default)

SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ProbeConfig(Config):
    """Parameters every probe has; subclasses add their own."""

    seq_len: int = 64

    def validate(self) -> None:
        require(self.seq_len >= 2, self, "seq_len", "an int >= 2")


@dataclass
class ProbeBatch:
    """One batch of a probe.

    inputs: (B, L) int64 token ids in [0, probe.vocab_size).
    targets: kind "lm": (B, L) int64, the token expected at each position's output, IGNORE where
        not scored; kind "classify": (B,) int64 class labels in [0, probe.num_classes).
    extra: probe-specific tensors the metric needs (e.g. the automaton's next-symbol
        distribution for in-context language learning), all with leading dim B.
    """

    inputs: Tensor
    targets: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device) -> "ProbeBatch":
        return ProbeBatch(self.inputs.to(device), self.targets.to(device),
                          {k: v.to(device) for k, v in self.extra.items()})


class Probe:
    """Base class; see the module docstring."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["lm", "classify"]] = "lm"
    Config: ClassVar[type[ProbeConfig]] = ProbeConfig

    def __init__(self, cfg: ProbeConfig | None = None, **params):
        if cfg is None:
            cfg = self.Config.from_dict(params) if params else self.Config()
        elif params:
            cfg = dataclasses.replace(cfg, **params)
        self.cfg = cfg

    # -- what the model must be built with ------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Input (and, for kind "lm", output) vocabulary size."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int | None:
        """Number of classes for kind "classify"; None for kind "lm"."""
        return None

    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len

    def with_length(self, seq_len: int) -> "Probe":
        """The same probe at another sequence length (length extrapolation)."""
        return type(self)(dataclasses.replace(self.cfg, seq_len=seq_len))

    # -- data -------------------------------------------------------------------------------
    def generator(self, split: str, step: int, seed: int) -> torch.Generator:
        """The CPU generator for one batch; train/val/test use disjoint streams."""
        if split not in SPLIT_STREAM:
            raise ValueError(f"split {split!r} is not allowed: expected one of {list(SPLIT_STREAM)}")
        g = torch.Generator()
        g.manual_seed(((seed * 3 + SPLIT_STREAM[split]) * 1_000_003 + step) % (2**63 - 1))
        return g

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        """A batch as a pure function of the arguments (on the CPU)."""
        raise NotImplementedError

    def num_examples(self, split: str) -> int | None:
        """How many examples ``batch(split, step, B)`` walks through in order, or None.

        None (the default) means an endless stream: every synthetic probe, and a finite
        dataset's train split that is sampled with replacement. An int ``n`` means steps
        ``0 .. ceil(n / B) - 1`` cover the split exactly once (the last batch may be shorter)
        and later steps wrap around; a caller evaluates the whole split with
        ``[probe.batch(split, s, B) for s in range(math.ceil(n / B))]``.
        """
        return None

    # -- metric -----------------------------------------------------------------------------
    def score(self, logits: Tensor, batch: ProbeBatch) -> dict[str, float]:
        """Sums and counts for this batch: ``{"correct": ..., "count": ...}`` at least.

        logits: kind "lm": (B, L, V) or, when the caller computed logits only at the scored
        positions, (N, V) in the order of ``batch.targets != IGNORE`` (row-major);
        kind "classify": (B, num_classes).
        The default is exact-match accuracy at the scored positions.
        """
        targets = batch.targets
        if self.kind == "lm":
            mask = targets != IGNORE
            pred = logits.argmax(-1)
            if pred.dim() == 2:
                pred = pred[mask]
            correct = (pred == targets[mask]).sum().item()
            return {"correct": float(correct), "count": float(mask.sum().item())}
        pred = logits.argmax(-1)
        return {"correct": float((pred == targets).sum().item()), "count": float(targets.numel())}

    @staticmethod
    def metrics(totals: dict[str, float]) -> dict[str, float]:
        """Turn summed scores into the reported metrics (``accuracy`` at least)."""
        return {"accuracy": totals["correct"] / max(totals["count"], 1.0)}


# -- helpers shared by the probes ---------------------------------------------------------------

def distinct_ints(g: torch.Generator, rows: int, population: int, k: int) -> Tensor:
    """(rows, k) int64: k distinct values from [0, population) per row, in random order.

    The indices of the k largest of ``population`` i.i.d. uniforms form a uniformly random
    k-subset in uniformly random order; one ``topk`` over the batch, no loop per row.
    """
    return torch.rand(rows, population, generator=g).topk(k, dim=1).indices


def randint_between(g: torch.Generator, low: int | Tensor, high: int | Tensor,
                    shape: tuple[int, ...]) -> Tensor:
    """int64 tensor of ``shape`` uniform in [low, high] (inclusive); bounds may be tensors
    broadcastable to ``shape`` (a different range per row)."""
    low_t = torch.as_tensor(low, dtype=torch.float64)
    span = torch.as_tensor(high, dtype=torch.float64) - low_t + 1
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    # float64 keeps floor(u * span) < span for any span a probe uses; clamp for safety anyway
    return (low_t + torch.minimum((u * span).floor(), span - 1)).long()


def predictions_like(logits: Tensor, targets: Tensor) -> Tensor:
    """Argmax predictions laid out like ``targets`` (B, L): IGNORE where not scored.

    Accepts logits of shape (B, L, V) or (N, V) at the scored positions (row-major order of
    ``targets != IGNORE``), as in :meth:`Probe.score`.
    """
    mask = targets != IGNORE
    pred = logits.argmax(-1)
    if pred.shape == targets.shape:
        return torch.where(mask, pred, torch.full_like(pred, IGNORE))
    out = torch.full_like(targets, IGNORE)
    out[mask] = pred.to(out.dtype)
    return out


def token_and_sequence_scores(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Per-token accuracy sums plus whole-sequence exact match, for kind "lm".

    Returns ``correct``/``count`` over scored tokens and ``seq_correct``/``seq_count`` over
    rows that have at least one scored token (a row counts as correct when all of them are).
    """
    mask = targets != IGNORE
    hit = (predictions_like(logits, targets) == targets) & mask
    scored_rows = mask.any(dim=1)
    rows_ok = (hit | ~mask).all(dim=1) & scored_rows
    return {"correct": float(hit.sum().item()), "count": float(mask.sum().item()),
            "seq_correct": float(rows_ok.sum().item()),
            "seq_count": float(scored_rows.sum().item())}


def token_and_sequence_metrics(totals: dict[str, float]) -> dict[str, float]:
    """``accuracy`` per token and ``exact_match`` per sequence from summed scores."""
    return {"accuracy": totals["correct"] / max(totals["count"], 1.0),
            "exact_match": totals["seq_correct"] / max(totals["seq_count"], 1.0)}

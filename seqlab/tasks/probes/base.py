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

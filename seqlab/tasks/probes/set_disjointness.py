"""Set disjointness, plain and "just read twice" (JRT).

Source: Arora et al. 2024, "Just read twice: closing the recall gap for recurrent language
models". Recall reduces to set disjointness: given sets A and B, find what they share. A
streaming (recurrent) model with a fixed state must store the first set it reads, so the
task is easy when the small set comes first and hard when the large one does; repeating
the context (JRT prompting) shows every set after the other and removes the order effect.

We use the recall form of the problem rather than a yes/no label: kind "lm", the two sets
always share exactly one element, and the output at the last position (the query token)
must be that element. A recurrent LM then shows the effect directly: its
accuracy depends on ``order`` (small set first or large set first) and recovers with
``jrt=True``; a yes/no classifier would give 1 bit per sequence and a 50 % floor.

Layout (``order="small_first"``; ``P`` pads on the left, ``|`` separates, ``?`` queries)::

    jrt=False:  P P  a1 a2 a3 | b1 b2 b3 b4 b5 b6 b7 ?       target at ?: the shared element
    jrt=True:   P    a1 a2 a3 | b1 .. b7 | a1 a2 a3 | b1 .. b7 ?

* elements are ids ``0 .. num_elements - 1``; within a row all elements are distinct
  except the shared one (drawn uniformly from the small set and placed at a random
  position of the large set); both sets are in random order;
* ``large_size=None`` makes the large set as big as ``seq_len`` allows, so
  ``with_length`` grows the set; with ``jrt=True`` the context appears twice, so at the
  same ``seq_len`` the sets are about half as large (compare JRT at twice the length);
* ``order="random"`` picks small-first or large-first per row with probability 1/2.

Registered twice: ``set_disjointness`` (``jrt=False`` by default) and
``set_disjointness_jrt`` (``jrt=True`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import IGNORE, Probe, ProbeBatch, ProbeConfig, distinct_ints


@dataclass(frozen=True)
class SetDisjointnessConfig(ProbeConfig):
    """Set-disjointness parameters. Special ids follow the elements: separator
    ``num_elements``, query ``num_elements + 1``, pad ``num_elements + 2``."""

    seq_len: int = 64
    num_elements: int = 256
    small_size: int = 4
    large_size: int | None = None  # None: as large as seq_len allows
    order: Literal["small_first", "large_first", "random"] = "random"
    jrt: bool = False

    def copies(self) -> int:
        return 2 if self.jrt else 1

    def resolved_large_size(self) -> int:
        if self.large_size is not None:
            return self.large_size
        # each copy of the context is: small, separator, large, separator-or-query
        return self.seq_len // self.copies() - 2 - self.small_size

    def validate(self) -> None:
        super().validate()
        require(self.small_size >= 1, self, "small_size", "an int >= 1")
        if self.large_size is not None:
            require(self.large_size >= self.small_size, self, "large_size",
                    f"None or an int >= small_size = {self.small_size}")
        large = self.resolved_large_size()
        need = self.copies() * (self.small_size + large + 2)
        require(self.seq_len >= need and large >= self.small_size, self, "seq_len",
                f"an int >= {max(need, self.copies() * (2 * self.small_size + 2))} (the sets "
                f"{'twice ' if self.jrt else ''}with separators and the query, the large set "
                f"at least as big as the small one)")
        require(self.num_elements >= self.small_size + large - 1, self, "num_elements",
                f"an int >= small_size + large set size - 1 = {self.small_size + large - 1}")


@dataclass(frozen=True)
class SetDisjointnessJRTConfig(SetDisjointnessConfig):
    """The same parameters with the context repeated ("just read twice") by default."""

    jrt: bool = True


@register("set_disjointness")
class SetDisjointness(Probe):
    """Set disjointness (find the shared element); see the module docstring."""

    kind = "lm"
    Config = SetDisjointnessConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.num_elements + 3

    @property
    def separator(self) -> int:
        return self.cfg.num_elements

    @property
    def query(self) -> int:
        return self.cfg.num_elements + 1

    @property
    def pad(self) -> int:
        return self.cfg.num_elements + 2

    def _layout(self, first: Tensor, second: Tensor) -> Tensor:
        """(B, L): left padding, then (first | second) once or twice, then the query."""
        B = first.shape[0]
        sep = torch.full((B, 1), self.separator, dtype=torch.long)
        once = torch.cat([first, sep, second], dim=1)
        context = torch.cat([once, sep, once], dim=1) if self.cfg.jrt else once
        pad = torch.full((B, self.cfg.seq_len - context.shape[1] - 1), self.pad, dtype=torch.long)
        query = torch.full((B, 1), self.query, dtype=torch.long)
        return torch.cat([pad, context, query], dim=1)

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B = self.cfg, batch_size
        s, l = cfg.small_size, cfg.resolved_large_size()
        g = self.generator(split, step, seed)

        elements = distinct_ints(g, B, cfg.num_elements, s + l - 1)
        small = elements[:, :s]
        shared = small.gather(1, torch.randint(s, (B, 1), generator=g))  # (B, 1)
        large = torch.cat([elements[:, s:], shared], dim=1)
        large = large.gather(1, torch.rand(B, l, generator=g).argsort(dim=1))  # shuffle rows

        if cfg.order == "random":
            small_first = torch.rand(B, 1, generator=g) < 0.5
        else:
            small_first = torch.full((B, 1), cfg.order == "small_first")
        inputs = torch.where(small_first, self._layout(small, large), self._layout(large, small))
        targets = torch.full((B, cfg.seq_len), IGNORE, dtype=torch.long)
        targets[:, -1] = shared.squeeze(1)
        return ProbeBatch(inputs, targets)


@register("set_disjointness_jrt")
class SetDisjointnessJRT(SetDisjointness):
    """Set disjointness with the context read twice (``jrt=True`` by default)."""

    Config = SetDisjointnessJRTConfig

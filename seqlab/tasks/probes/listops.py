"""ListOps: evaluate nested list operations.

Sources: Nangia & Bowman 2018, "ListOps: A diagnostic dataset for latent tree learning", and
its long version in Tay et al. 2021, "Long Range Arena" (LRA). A sequence such as
``[MAX 2 9 [MIN 4 7 ] 0 ]`` must be evaluated (here to 9); the model has to track the
hierarchy over long distances. Kind "classify", 10 classes (the digit).

Operators on digits 0-9: ``MAX``, ``MIN``, ``MED`` (median; for an even count the floor of
the mean of the two middle values, as LRA's ``int(np.median(...))``) and ``SM`` (sum mod 10).

Generation follows LRA's recursive sampler in distribution per node -- a node is an
operator with probability ``op_prob`` (LRA: 0.25) with ``min_args .. max_args`` arguments
(LRA: 2-10), else a digit -- with two differences:

* the root is always an operator, and operators nest at most ``max_depth`` levels deep
  (default 9: LRA's ``max_depth=10`` counts the digit level, so it allows 9);
* instead of rejecting sequences longer than ``seq_len`` (LRA keeps lengths 500-2000), a
  node whose expansion would overflow ``seq_len`` becomes a digit. Nodes are expanded
  level by level left to right, so a long tree is cut back on its right side.

Both run level by level on the whole batch: each level rewrites every pending node of every
row at once (a cumulative sum gives each token its new offset), so the Python loop is over
depth only. The label comes from :func:`evaluate`, a separate batched evaluator that reads
only the tokens (also a loop over depth: it reduces the innermost lists into their parents).

Cost: about 1-2 ms per sequence of length 2000 on one CPU core (generation plus labels).

Sequences are left-padded with the pad token, so the last position always holds the final
``]`` (a causal model reading its last position has seen everything).

Tokens: digits 0-9, ``[MAX`` 10, ``[MIN`` 11, ``[MED`` 12, ``[SM`` 13, ``]`` 14, pad 15.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import Probe, ProbeBatch, ProbeConfig, randint_between

MAX, MIN, MED, SM = 10, 11, 12, 13
CLOSE = 14
PAD = 15
OPERATORS = (MAX, MIN, MED, SM)
OPERATOR_NAMES = {MAX: "[MAX", MIN: "[MIN", MED: "[MED", SM: "[SM", CLOSE: "]"}
_PENDING = -1  # a node not decided yet, only during generation


@dataclass(frozen=True)
class ListOpsConfig(ProbeConfig):
    """ListOps parameters; the defaults are LRA's, with ``seq_len`` its maximum length."""

    seq_len: int = 2000
    max_depth: int = 9
    min_args: int = 2
    max_args: int = 10
    op_prob: float = 0.25

    def validate(self) -> None:
        super().validate()
        require(self.max_depth >= 1, self, "max_depth", "an int >= 1")
        require(self.min_args >= 1, self, "min_args", "an int >= 1")
        require(self.max_args >= self.min_args, self, "max_args",
                f"an int >= min_args = {self.min_args}")
        require(math.isfinite(self.op_prob) and 0.0 <= self.op_prob <= 1.0, self, "op_prob",
                "a probability in [0, 1]")
        require(self.seq_len >= self.max_args + 2, self, "seq_len",
                f"an int >= max_args + 2 = {self.max_args + 2} (the root operator, its "
                f"arguments and ']')")


def _expand_level(g: torch.Generator, tokens: Tensor, length: Tensor, cfg: ListOpsConfig,
                  is_root: bool) -> tuple[Tensor, Tensor]:
    """Decide every pending node of one level: an operator (with pending arguments) or a digit.

    tokens: (B, W) right-padded, ``length`` (B,) tokens used (W = the longest row). Returns the
    rewritten tokens, as wide as the longest new row, and the new lengths.
    """
    B, W = tokens.shape
    pending = tokens == _PENDING
    want_op = pending if is_root else pending & (torch.rand(B, W, generator=g) < cfg.op_prob)
    num_args = randint_between(g, cfg.min_args, cfg.max_args, (B, W))
    growth = torch.where(want_op, num_args + 1, 0)  # an operator node: op, args, ']'
    # Expand in left-to-right order while the row still fits in seq_len.
    fits = length.unsqueeze(1) + growth.cumsum(dim=1) <= cfg.seq_len
    expand = want_op & fits
    operator = torch.tensor(OPERATORS)[torch.randint(len(OPERATORS), (B, W), generator=g)]
    digits = torch.randint(10, (B, W), generator=g)
    tokens = torch.where(pending & ~expand, digits, tokens)  # leaves are decided now

    used = torch.arange(W) < length.unsqueeze(1)
    out_len = torch.where(expand, num_args + 2, used.long())
    ends = out_len.cumsum(dim=1)  # (B, W): exclusive end of each old token's new span
    new_length = ends[:, -1]
    width = int(new_length.max().item())
    new_pos = torch.arange(width).expand(B, width).contiguous()
    source = torch.searchsorted(ends, new_pos, right=True).clamp(max=W - 1)
    offset = new_pos - (ends - out_len).gather(1, source)
    src_args = num_args.gather(1, source)
    rewritten = torch.where(offset == 0, operator.gather(1, source),
                            torch.where(offset == src_args + 1, CLOSE, _PENDING))
    out = torch.where(expand.gather(1, source), rewritten, tokens.gather(1, source))
    out = torch.where(new_pos < new_length.unsqueeze(1), out, PAD)
    return out, new_length


def generate(g: torch.Generator, batch_size: int, cfg: ListOpsConfig) -> Tensor:
    """(B, seq_len) ListOps token sequences, right-padded; see the module docstring."""
    tokens = torch.full((batch_size, 1), _PENDING, dtype=torch.long)
    length = torch.ones(batch_size, dtype=torch.long)
    for level in range(cfg.max_depth):
        tokens, length = _expand_level(g, tokens, length, cfg, is_root=level == 0)
    leftover = tokens == _PENDING  # arguments of the deepest operators
    tokens = torch.where(leftover, torch.randint(10, tokens.shape, generator=g), tokens)
    padding = torch.full((batch_size, cfg.seq_len - tokens.shape[1]), PAD, dtype=torch.long)
    return torch.cat([tokens, padding], dim=1)


def evaluate(tokens: Tensor) -> Tensor:
    """(B,) the value of each ListOps sequence (any padding, left or right).

    Each element (digit or operator) belongs to the innermost operator opened before it at
    its nesting level; from the deepest level up, the values of each level's elements are
    reduced into their operator (scatter max/min/sum, and a sort for the median).
    """
    B, L = tokens.shape
    is_op = (tokens >= MAX) & (tokens <= SM)
    is_digit = tokens < 10
    depth = (is_op.long() - (tokens == CLOSE).long()).cumsum(dim=1)  # an operator: its own level
    level = torch.where(is_op, depth - 1, depth)  # the level of the list an element sits in
    pos = torch.arange(L).expand(B, L)
    value = torch.where(is_digit, tokens, 0)
    dump = L  # a spare column where non-members scatter harmlessly
    for d in range(int(depth.max().item()), 0, -1):
        opens = is_op & (depth == d)
        owner = torch.where(opens, pos, -1).cummax(dim=1).values  # last level-d operator so far
        member = (is_digit | is_op) & (level == d)
        index = torch.where(member, owner, dump)
        vmax = torch.full((B, L + 1), -1).scatter_reduce(1, index, value, "amax")[:, :L]
        vmin = torch.full((B, L + 1), 10).scatter_reduce(1, index, value, "amin")[:, :L]
        vsum = torch.zeros(B, L + 1, dtype=torch.long).scatter_add(1, index, value)[:, :L] % 10
        count = torch.zeros(B, L + 1, dtype=torch.long).scatter_add(
            1, index, member.long())[:, :L]
        # Median: sort members by (owner, value); an owner's members are then contiguous.
        # (shifts and masks instead of * 16, % 16, // 2: integer division is slow on CPU)
        sort_key = torch.where(member, (owner << 4) | value, (L + 1) << 4)
        sorted_values = sort_key.sort(dim=1).values & 15
        first = count.cumsum(dim=1) - count  # members of earlier owners come first
        low = sorted_values.gather(1, (first + ((count - 1) >> 1)).clamp(0, L - 1))
        high = sorted_values.gather(1, (first + (count >> 1)).clamp(0, L - 1))
        vmed = (low + high) >> 1
        result = torch.where(tokens == MAX, vmax, torch.where(tokens == MIN, vmin,
                             torch.where(tokens == MED, vmed, vsum)))
        value = torch.where(opens, result, value)
    first_token = (tokens != PAD).long().argmax(dim=1, keepdim=True)
    return value.gather(1, first_token).squeeze(1)


def to_text(row: Tensor) -> str:
    """One sequence as text, padding dropped: ``[MAX 2 9 [MIN 4 7 ] 0 ]``."""
    words = [OPERATOR_NAMES.get(t, str(t)) for t in row.tolist() if t != PAD]
    return " ".join(words)


@register("listops")
class ListOps(Probe):
    """ListOps; see the module docstring."""

    kind = "classify"
    Config = ListOpsConfig

    @property
    def vocab_size(self) -> int:
        return PAD + 1

    @property
    def num_classes(self) -> int:
        return 10

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        g = self.generator(split, step, seed)
        tokens = generate(g, batch_size, self.cfg)
        # Left-pad: move each row's tokens to the end of the sequence.
        L = self.cfg.seq_len
        length = (tokens != PAD).sum(dim=1, keepdim=True)
        source = (torch.arange(L) - (L - length)).clamp(min=0)
        inputs = torch.where(torch.arange(L) >= L - length, tokens.gather(1, source), PAD)
        return ProbeBatch(inputs, evaluate(inputs))

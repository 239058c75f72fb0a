"""Binary-tree traversal: structural recursion on trees.

Source: Zhang et al. 2024, "Transformer-based models are not yet perfect at learning to
emulate structural recursion" (tree traversals next to the binary successor, see
``binary_successor``). The output order follows the tree's recursive structure, not the
order of the input, so copying heuristics do not solve it.

Layout: the tree in preorder with null markers, the requested order, the traversal, end::

    tree  a(b, c(-, d)) :   a b - - c - d - - IN  b a c d $ . . .
    targets (next token):                         b a c d $        (IGNORE elsewhere)

(``-`` is the null marker; a node is written as its label, its left subtree, its right
subtree, so the serialization determines the tree.)

* the tree shape is uniform over binary trees with ``n`` nodes, n uniform in
  ``[min_nodes, max_nodes]``, drawn without a loop per node: shuffle n labels and n + 1
  nulls (+1 / -1) and rotate the word to start just after its first minimal prefix sum;
  by the cycle lemma that rotation is the one valid preorder word, and each tree is the
  image of exactly 2n + 1 of the equally likely shuffled words (its rotations);
* labels are i.i.d. uniform over ``num_labels`` ids (repeats allowed);
* ``order``: ``pre``, ``in`` or ``post``, or ``random`` (one of the three per row);
* the traversal is computed from subtree ends found by pairwise comparisons of prefix
  sums ((B, 2n+1, 2n+1) tensors, small for the tree sizes here) and one sort per row.

Scored: every output label and the end token (per-token ``accuracy``) and the whole
traversal (``exact_match``). Tokens: labels ``0 .. num_labels - 1``, then null, PRE, IN,
POST, end, pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import (IGNORE, Probe, ProbeBatch, ProbeConfig, randint_between,
                                      token_and_sequence_metrics, token_and_sequence_scores)

ORDERS = ("pre", "in", "post")


@dataclass(frozen=True)
class TreeTraversalConfig(ProbeConfig):
    """Tree-traversal parameters."""

    seq_len: int = 64
    min_nodes: int = 1
    max_nodes: int = 16
    num_labels: int = 10
    order: Literal["pre", "in", "post", "random"] = "random"

    def validate(self) -> None:
        super().validate()
        require(self.min_nodes >= 1, self, "min_nodes", "an int >= 1")
        require(self.max_nodes >= self.min_nodes, self, "max_nodes",
                f"an int >= min_nodes = {self.min_nodes}")
        require(self.num_labels >= 1, self, "num_labels", "an int >= 1")
        require(self.seq_len >= 3 * self.max_nodes + 2, self, "seq_len",
                f"an int >= 3 * max_nodes + 2 = {3 * self.max_nodes + 2} (tree, order token, "
                f"traversal and end token as next-token targets)")


def random_preorder_words(g: torch.Generator, num_nodes: Tensor, width: int) -> Tensor:
    """(B, width) bool: True = node, False = null, a uniform random binary tree per row in
    preorder with null markers (the first 2n + 1 entries; the rest False)."""
    B = num_nodes.shape[0]
    slot = torch.arange(width)
    size = (2 * num_nodes + 1).unsqueeze(1)
    valid = slot < size
    # A uniform shuffle of n nodes and n + 1 nulls over the valid slots.
    noise = torch.rand(B, width, generator=g).masked_fill(~valid, 2.0)
    rank = noise.argsort(dim=1).argsort(dim=1)
    is_node = rank < num_nodes.unsqueeze(1)
    step = torch.where(is_node, 1, -1)
    prefix = step.cumsum(dim=1).masked_fill(~valid, width + 1)
    start = prefix.argmin(dim=1, keepdim=True) + 1  # just after the first minimum
    rotated = (slot + start) % size
    return is_node.gather(1, rotated) & valid


def traversal_keys(is_node: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """Sort keys per preorder slot (B, W) for each order; nulls and padding sort last.

    With prefix sums h (before a slot) and c (after it) of +1 node / -1 null, a node at k
    has its left subtree end at the first j > k with c[j] = h[k] and its whole subtree end
    at the first j >= k with c[j] = h[k] - 1. In-order visits a node when its left subtree
    ends; post-order when its subtree ends, deeper nodes first on ties.
    """
    B, W = is_node.shape
    step = torch.where(is_node, 1, -1) * valid
    after = step.cumsum(dim=1)  # c
    before = after - step  # h
    slot = torch.arange(W)
    j, k = slot.view(1, W, 1), slot.view(1, 1, W)  # pairwise (B, j, k)
    big = 4 * W * W
    cj, hk = after.unsqueeze(2), before.unsqueeze(1)
    later = valid.unsqueeze(2)
    left_end = torch.where((j > k) & later & (cj == hk), j, big).amin(dim=1)  # (B, W)
    subtree_end = torch.where((j >= k) & later & (cj == hk - 1), j, big).amin(dim=1)
    keys = {"pre": slot.expand(B, W), "in": left_end, "post": subtree_end * W + (W - 1 - slot)}
    return {name: key.masked_fill(~is_node, big) for name, key in keys.items()}


@register("tree_traversal")
class TreeTraversal(Probe):
    """Binary-tree traversal; see the module docstring."""

    kind = "lm"
    Config = TreeTraversalConfig

    @property
    def null(self) -> int:
        return self.cfg.num_labels

    def order_token(self, order: str) -> int:
        return self.cfg.num_labels + 1 + ORDERS.index(order)

    @property
    def end(self) -> int:
        return self.cfg.num_labels + 4

    @property
    def pad(self) -> int:
        return self.cfg.num_labels + 5

    @property
    def vocab_size(self) -> int:
        return self.cfg.num_labels + 6

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B, L = self.cfg, batch_size, self.cfg.seq_len
        W = 2 * cfg.max_nodes + 1
        g = self.generator(split, step, seed)
        n = randint_between(g, cfg.min_nodes, cfg.max_nodes, (B,))
        is_node = random_preorder_words(g, n, W)
        valid = torch.arange(W) < (2 * n + 1).unsqueeze(1)
        labels = torch.randint(cfg.num_labels, (B, W), generator=g)
        tree = torch.where(is_node, labels, self.null)  # (B, W), valid part only

        if cfg.order == "random":
            order = torch.randint(3, (B,), generator=g)
        else:
            order = torch.full((B,), ORDERS.index(cfg.order))
        keys = traversal_keys(is_node, valid)
        key = torch.stack([keys[name] for name in ORDERS], dim=0)[order, torch.arange(B)]
        visit = key.argsort(dim=1)[:, : cfg.max_nodes]  # preorder slots in traversal order
        traversal = labels.gather(1, visit)  # first n entries valid

        pos = torch.arange(L + 1)  # one extra token so the last position has a target
        size = 2 * n + 1
        out_start = (size + 1).unsqueeze(1)
        seq = torch.full((B, L + 1), self.pad, dtype=torch.long)
        seq[:, :W] = torch.where(valid, tree, self.pad)
        seq.scatter_(1, size.unsqueeze(1), self.cfg.num_labels + 1 + order.unsqueeze(1))
        offset = pos - out_start
        in_out = (offset >= 0) & (offset < n.unsqueeze(1))
        seq = torch.where(in_out, traversal.gather(1, offset.clamp(0, cfg.max_nodes - 1)), seq)
        seq.scatter_(1, (size + 1 + n).unsqueeze(1), self.end)

        target_pos = pos[1:]
        scored = (target_pos >= out_start) & (target_pos <= (size + 1 + n).unsqueeze(1))
        targets = torch.where(scored, seq[:, 1:], IGNORE)
        return ProbeBatch(seq[:, :L], targets)

    def score(self, logits, batch):
        return token_and_sequence_scores(logits, batch.targets)

    metrics = staticmethod(token_and_sequence_metrics)

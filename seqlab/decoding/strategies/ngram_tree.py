"""Draft trees from the adaptive tri-gram table, in the spirit of ADED (Liu et al.,
arXiv:2406.08200).

Each round every row's ``NGramDrafter`` grows a tree below its last token
(``NGramDrafter.propose_tree``): the children of a node are the table's best
continuations of the node's last two tokens, with the prompt-lookup continuation put
first where the table is unsure, at most ``branching[d]`` of them per node at depth d
(and ``max_nodes`` in all); a node's own token extends the context down its branch.
The table is the row's own, or the caller's ``draft`` table shared by every row and
kept across calls (what the model produced for one request drafts the next).

The tree strategy's ``TreeVerifier`` scores every row's tree in one target call (tree
attention for an attention-only target, one batch row per leaf otherwise) and accepts
down it. The children are point masses, so at each node the target's own token (its
argmax, or a draw from its filtered distribution) picks the child equal to it, or ends
the round as the target's token: the output is exactly plain greedy decoding, or
exactly the target's sampling distribution.

Example:
    >>> table = NGramTable()
    >>> for prompt in prompts:   # the table learns from every request
    ...     generate(model, [prompt], "ngram-tree", 64, draft=table, branching=(3, 2, 1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import Config, option, require
from seqlab.decoding.drafters import NGramDrafter, NGramTable
from seqlab.decoding.engine import DecodeStats, GenerateOutput, Request
from seqlab.decoding.loop import Verdict, draft_and_verify
from seqlab.decoding.strategies import register
from seqlab.decoding.strategies.tree import Level, TreeDraft, TreeVerifier, tree_attention_for


@dataclass(frozen=True)
class NGramTreeConfig(Config):
    """The tree's largest shape and the table's rule (as the ``ngram`` strategy's)."""

    branching: tuple[int, ...] = option((3, 2, 1, 1, 1, 1),
                                        "ngram-tree: children per node at each depth, at most")
    max_nodes: int | None = option(None, "ngram-tree: nodes per tree at most (filled level by "
                                         "level; default: what branching allows)")
    max_ngram: int = option(3, "ngram-tree: longest suffix the exploration looks up")
    min_count: int = option(2, "ngram-tree: observations of a continuation before the table "
                               "is trusted")
    tree_attention: bool | None = option(None, "ngram-tree: verify as one row with tree "
                                               "attention (default: when the target can) or as "
                                               "one batch row per leaf")

    def validate(self) -> None:
        require(len(self.branching) > 0 and all(b >= 1 for b in self.branching), self,
                "branching", "a non-empty sequence of ints >= 1, children per node at each "
                "depth at most, e.g. (3, 2, 1, 1)")
        require(self.max_nodes is None or self.max_nodes >= 1, self, "max_nodes",
                "None (no limit but branching) or an int >= 1")
        require(self.max_ngram >= 1, self, "max_ngram", "an int >= 1 (longest suffix to look up)")
        require(self.min_count >= 1, self, "min_count",
                "an int >= 1 (observations before the table is trusted)")


def pack(trees: list[list[list[tuple[int, int]]]], device) -> list[Level]:
    """Per-row trees (``NGramDrafter.propose_tree``'s lists) as the verifier's ``Level``s:
    each level as wide as its widest row, the other rows padded with nodes that are not
    valid (never accepted)."""
    R, levels = len(trees), []
    for d in range(max((len(t) for t in trees), default=0)):
        rows = [t[d] if d < len(t) else [] for t in trees]
        n = max(len(nodes) for nodes in rows)
        tokens = [[tok for _, tok in nodes] + [0] * (n - len(nodes)) for nodes in rows]
        parent = [[par for par, _ in nodes] + [0] * (n - len(nodes)) for nodes in rows]
        valid = [[True] * len(nodes) + [False] * (n - len(nodes)) for nodes in rows]
        levels.append(Level(torch.tensor(tokens, dtype=torch.long, device=device).view(R, n),
                            torch.tensor(parent, dtype=torch.long, device=device).view(R, n),
                            torch.tensor(valid, dtype=torch.bool, device=device).view(R, n)))
    return levels


class NGramTreeProposer(TreeVerifier):
    """One ``NGramDrafter`` per row (over the shared table, if any) growing its tree."""

    def __init__(self, model, req: Request, cfg: NGramTreeConfig, tree_attention: bool,
                 stats: DecodeStats):
        super().__init__(model, req, tree_attention, stats)
        self.cfg, self.table = cfg, req.draft
        self.drafters: list[NGramDrafter] = []
        self.active: list[int] = []

    def start(self, rows: list[list[int]], first: list[int]) -> None:
        for r, t in zip(rows, first):
            d = NGramDrafter(self.cfg.max_ngram, self.cfg.min_count, self.table)
            d.extend(r + [t])
            self.drafters.append(d)
        self.active = list(range(len(rows)))

    def propose(self, last: Tensor, room: list[int]) -> TreeDraft:
        # A row's tree is no deeper than the tokens it may still emit.
        trees = [self.drafters[b].propose_tree(self.cfg.branching[:n], self.cfg.max_nodes)
                 for b, n in zip(self.active, room)]
        nodes = [sum(map(len, t)) for t in trees]
        self.stats.drafted += sum(nodes)
        self.stats.draft_hits += sum(n > 0 for n in nodes)
        levels = pack(trees, last.device)
        return TreeDraft(self, last, levels, None, [], len(levels))

    def advance(self, tree: TreeDraft, verdict: Verdict) -> None:
        for b, toks in zip(self.active, verdict.tokens):
            self.drafters[b].extend(toks)  # the table learns the model's own verified outputs

    def select(self, keep: list[int]) -> None:
        self.active = [self.active[i] for i in keep]

    def finish(self, stats: DecodeStats) -> None:
        stats.explored = sum(d.explored for d in self.drafters)


@register("ngram-tree", NGramTreeConfig, samples="optional", draft_state=NGramTable)
def ngram_tree(model, req: Request, cfg: NGramTreeConfig) -> GenerateOutput:
    """Draft trees from the adaptive tri-gram table (a table per row, or the caller's
    ``draft`` table shared by every row and kept across calls), verified by the tree
    strategy in one call per round (see the module docstring)."""
    tree_attention = tree_attention_for(model, cfg.tree_attention)
    stats = DecodeStats(strategy="ngram-tree",
                        options={**cfg.to_dict(), "tree_attention": tree_attention}, trees=[])
    return draft_and_verify(model, req, NGramTreeProposer(model, req, cfg, tree_attention, stats),
                            stats)

"""Proposers for drafters trained on the target's hidden states (``seqlab.decoding.drafters``).

The ``speculative`` strategy uses ``HiddenChainProposer`` and ``tree`` uses
``HiddenTreeProposer`` when their ``draft`` is such a drafter rather than a model.
Both set ``reads_hidden``: the loop prefills through the target's ``features`` and
every verification returns the hidden states at the accepted positions
(``Verdict.hidden``), which a ``HiddenWindow`` keeps per row (the last ``window`` of
them and the last three tokens) for the next round's draft. So a round costs one
target call plus one small drafter call; no draft model keeps a state of its own,
and nothing is rolled back on the drafter's side.

Acceptance is the shared lossless rule (``seqlab.decoding.verify`` for chains, the
tree strategy's recursive rejection for trees), with the drafter's exact
probabilities as q.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.config import ConfigError
from seqlab.decoding.drafters import Context, HiddenDrafter
from seqlab.decoding.engine import DecodeStats, Request
from seqlab.decoding.loop import Verdict
from seqlab.decoding.strategies.tree import Level, TreeConfig, TreeDraft, TreeProposer, _children_topk
from seqlab.decoding.verify import ChainDraft


class HiddenWindow:
    """Per row: the target's last ``window`` hidden states (R, W, H), which are real, and the
    last three tokens (the newest not yet run by the target)."""

    def __init__(self, drafter: HiddenDrafter, rows: list[list[int]], first: list[int],
                 hidden: list[Tensor]):
        drafter.check_hidden(hidden[0])
        self.W = drafter.cfg.window
        H, W = hidden[0].shape[-1], self.W
        self.hidden = hidden[0].new_zeros(len(rows), W, H)
        self.mask = torch.zeros(len(rows), W, dtype=torch.bool, device=hidden[0].device)
        for b, h in enumerate(hidden):
            n = min(W, h.shape[0])
            self.hidden[b, W - n:] = h[-n:]
            self.mask[b, W - n:] = True
        self.recent = [([0, 0] + r + [t])[-3:] for r, t in zip(rows, first)]

    def context(self) -> Context:
        tokens = torch.tensor(self.recent, dtype=torch.long, device=self.hidden.device)
        return Context(self.hidden, self.mask, tokens)

    def advance(self, verdict: Verdict) -> None:
        """Take in each row's new hidden states and tokens (the accepted ones and the next)."""
        W = self.W
        for b, (h, toks) in enumerate(zip(verdict.hidden, verdict.tokens)):
            both = torch.cat([self.hidden[b], h.to(self.hidden.dtype)])[-W:]
            mask = torch.cat([self.mask[b], self.mask.new_ones(h.shape[0])])[-W:]
            self.hidden[b], self.mask[b] = both, mask
            self.recent[b] = (self.recent[b] + toks)[-3:]

    def select(self, keep: list[int]) -> None:
        self.hidden, self.mask = self.hidden[keep], self.mask[keep]
        self.recent = [self.recent[i] for i in keep]


class HiddenChainProposer:
    """A chain of up to ``gamma`` (and the drafter's ``depth``) tokens per round."""

    reads_hidden = True

    def __init__(self, drafter: HiddenDrafter, gamma: int, req: Request, stats: DecodeStats):
        self.drafter, self.gamma, self.req, self.stats = drafter, gamma, req, stats
        self.window: HiddenWindow | None = None

    def start(self, rows: list[list[int]], first: list[int], hidden: list[Tensor]) -> None:
        self.window = HiddenWindow(self.drafter, rows, first, hidden)

    def propose(self, last: Tensor, room: list[int]) -> ChainDraft:
        g = min(self.gamma, self.drafter.cfg.depth, max(room))
        R = last.shape[0]
        if not g:
            return ChainDraft(last[:, None], None, None, features=True)
        tokens, q = self.drafter.propose(self.window.context(), g, self.req.sampling,
                                         self.req.generator)
        self.stats.draft_calls += g if self.drafter.autoregressive else 1
        self.stats.drafted += g * R
        self.stats.draft_hits += R
        return ChainDraft(torch.cat([last[:, None], tokens.to(last.device)], 1), q, None,
                          features=True)

    def advance(self, draft: ChainDraft, verdict: Verdict) -> None:
        self.window.advance(verdict)

    def select(self, keep: list[int]) -> None:
        self.window.select(keep)

    def finish(self, stats: DecodeStats) -> None:
        pass


class HiddenTreeProposer(TreeProposer):
    """Trees from a drafter that drafts every depth at once (heads, transfer): under every
    node of depth d hang the best (or, sampling, a draw without replacement of)
    ``branching[d]`` tokens of the drafter's distribution for depth d. The tree strategy's
    verification and acceptance are reused as they are; only scoring keeps the hidden
    states, and the accepted path's go to the drafter."""

    reads_hidden = True

    def __init__(self, model, drafter: HiddenDrafter, req: Request, cfg: TreeConfig,
                 tree_attention: bool, stats: DecodeStats):
        if drafter.autoregressive:
            raise ConfigError(f"a {drafter.cfg.kind} drafter drafts token by token, so its trees "
                              "would need one drafter call per node; verify its chain with "
                              "strategy 'speculative'")
        if cfg.shape is None:
            raise ConfigError("strategy 'tree' with a trained drafter takes branching=(b1, b2, "
                              "...), not beam_width (the drafter's depths do not depend on the "
                              "tokens above them, so there is nothing for a beam to search)")
        if len(cfg.shape) > drafter.cfg.depth:
            raise ConfigError(f"branching = {cfg.shape!r} is {len(cfg.shape)} deep but the "
                              f"drafter drafts {drafter.cfg.depth} tokens; give at most "
                              f"{drafter.cfg.depth} entries")
        self.model, self.draft, self.sampling, self.gen = model, drafter, req.sampling, req.generator
        self.tree_attention, self.draft_tree = tree_attention, False
        self.branching, self.beam_width, self.depth = cfg.shape, None, len(cfg.shape)
        self.V, self.stats = model.vocab_size, stats
        self.window: HiddenWindow | None = None
        self._hidden: Tensor | None = None

    def start(self, rows: list[list[int]], first: list[int], hidden: list[Tensor]) -> None:
        self.window = HiddenWindow(self.draft, rows, first, hidden)

    def propose(self, last: Tensor, room: list[int]) -> TreeDraft:
        R, device = last.shape[0], last.device
        depth = min(self.depth, max(room))
        levels, qs = [], []
        if depth:
            drafter = self.draft
            full = drafter.full_logits(drafter.small_logits(drafter.pseudo(self.window.context())
                                                            [:, :depth]))       # (R, depth, V)
            self.stats.draft_calls += 1
            n_prev = 1
            for d in range(depth):
                logq = self._log_q(full[:, d])                                  # (R, V)
                if not self.sampling.greedy:
                    qs.append(logq.exp()[:, None].expand(R, n_prev, self.V))
                tok, ok = _children_topk(logq.repeat_interleave(n_prev, 0), self.branching[d],
                                         self.sampling, self.gen)               # (R*n_prev, k)
                k = tok.shape[1]
                parent = torch.arange(n_prev, device=device).repeat_interleave(k)
                level = Level(tok.reshape(R, n_prev * k), parent.expand(R, -1).clone(),
                              ok.reshape(R, n_prev * k))
                if levels:  # children of an invalid node are invalid
                    level.valid &= levels[-1].valid.gather(1, level.parent)
                levels.append(level)
                self.stats.drafted += int(level.valid.sum())
                n_prev = n_prev * k
        return TreeDraft(self, last, levels, qs, [], depth)

    def score_tree(self, tokens, tstate, depth, visible):
        self._hidden, state = self.model.features_tree(tokens, tstate, depth, visible)
        return self.model.logits(self._hidden), state

    def score_rows(self, seq, tstate):
        self._hidden, state = self.model.features(seq, tstate)
        return self.model.logits(self._hidden), state

    def verify(self, tree: TreeDraft, model, tstate, fed: list[int], stats: DecodeStats) -> Verdict:
        verdict = super().verify(tree, model, tstate, fed, stats)
        verdict.hidden = [torch.stack([self._hidden[tree.where[r][node]]
                                       for node in [(-1, 0)] + tree.accepted[r]])
                          for r in range(len(tree.accepted))]
        return verdict

    def advance(self, tree: TreeDraft, verdict: Verdict) -> None:
        self.window.advance(verdict)

    def select(self, keep: list[int]) -> None:
        self.window.select(keep)

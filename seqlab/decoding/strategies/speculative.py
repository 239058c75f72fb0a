"""Speculative decoding with a draft model (Leviathan et al. 2023; Chen et al. 2023).

Each round the small ``draft`` model proposes ``gamma`` tokens one step at a time;
the target scores all of them in one parallel call and keeps the longest prefix it
agrees with, plus one token of its own (``seqlab.decoding.verify``). Lossless: greedy
decoding returns exactly the target's greedy output, and sampling draws from exactly
the target's (filtered) distribution.

The draft keeps its state after every proposal step, so after verification it just
picks, per row, the state at the accepted length (or truncates a KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqlab.config import Config, option, require
from seqlab.decoding.engine import DecodeStats, GenerateOutput, Request, combine, groups, prefill
from seqlab.decoding.loop import Verdict, draft_and_verify
from seqlab.decoding.sampling import choose, probabilities
from seqlab.decoding.strategies import register
from seqlab.decoding.verify import ChainDraft


@dataclass(frozen=True)
class SpeculativeConfig(Config):
    gamma: int = option(4, "speculative: draft tokens per target call")

    def validate(self) -> None:
        require(self.gamma >= 1, self, "gamma", "an int >= 1 (draft tokens per round)")


@dataclass
class _DraftChain(ChainDraft):
    states: list = field(default_factory=list)  # the draft's state after each proposal step
    last_token: Tensor | None = None            # the last proposal (not yet fed to the draft)


class DraftModelProposer:
    """Proposes ``gamma`` tokens per row from a draft model, one step at a time."""

    def __init__(self, draft, gamma: int, req: Request, stats: DecodeStats):
        self.draft, self.gamma, self.req, self.stats = draft, gamma, req, stats
        self.state = None
        self.fed: list[int] = []  # tokens inside each row's draft state

    def start(self, rows: list[list[int]], first: list[int]) -> None:
        self.fed = [len(r) for r in rows]
        _, self.state, calls = prefill(self.draft, rows)
        self.stats.draft_calls += calls

    def propose(self, last: Tensor, room: list[int]) -> ChainDraft:
        g = min(self.gamma, max(room))  # never score positions no row may emit
        sampling, gen = self.req.sampling, self.req.generator
        states, q_logits, proposals, tok = [self.state], [], [], last
        for _ in range(g):
            lg, s = self.draft.step(tok, states[-1])
            self.stats.draft_calls += 1
            states.append(s)
            q_logits.append(lg)
            tok = choose(lg, sampling, gen)
            proposals.append(tok)
        q = None
        if g and not sampling.greedy:
            R, V = last.shape[0], q_logits[0].shape[-1]
            q = probabilities(torch.stack(q_logits, 1).reshape(-1, V), sampling).view(R, g, V)
        self.stats.drafted += g * last.shape[0]
        self.stats.draft_hits += last.shape[0] if g else 0
        return _DraftChain(torch.stack([last] + proposals, 1), q, None, states, tok)

    def advance(self, draft: _DraftChain, verdict: Verdict) -> None:
        states, g = draft.states, draft.seq.shape[1] - 1
        if max(verdict.counts) == g:  # the draft has not yet seen its last proposal
            _, s = self.draft.step(draft.last_token, states[-1])
            self.stats.draft_calls += 1
            states.append(s)
        self.fed = [f + c + 1 for f, c in zip(self.fed, verdict.counts)]
        if states[-1].can_truncate:
            self.state = states[-1].truncate(self.fed)
            return
        R = len(verdict.counts)
        self.state = combine([(idx, states[n + 1] if len(idx) == R else states[n + 1].select(idx))
                              for n, idx in groups(verdict.counts).items()], R)

    def select(self, keep: list[int]) -> None:
        self.state = self.state.select(keep)
        self.fed = [self.fed[i] for i in keep]

    def finish(self, stats: DecodeStats) -> None:
        pass


@register("speculative", SpeculativeConfig, samples="optional", needs_draft=True)
def speculative(model, req: Request, cfg: SpeculativeConfig) -> GenerateOutput:
    """Speculative decoding with ``req.draft`` proposing ``cfg.gamma`` tokens per round."""
    from seqlab.decoding.drafters import HiddenDrafter

    stats = DecodeStats(strategy="speculative", options=cfg.to_dict())
    if isinstance(req.draft, HiddenDrafter):   # a drafter trained on the target's hidden states
        from seqlab.decoding.strategies.hidden import HiddenChainProposer

        proposer = HiddenChainProposer(req.draft, cfg.gamma, req, stats)
    else:
        proposer = DraftModelProposer(req.draft, cfg.gamma, req, stats)
    return draft_and_verify(model, req, proposer, stats)

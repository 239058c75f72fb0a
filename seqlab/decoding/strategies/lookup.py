"""Drafting without a draft model: prompt lookup and an adaptive n-gram table.

Each round every row's drafter (``seqlab.decoding.drafters``) proposes up to
``num_draft`` tokens from its context; the target scores all of them in one call
and keeps the longest prefix it agrees with plus one token of its own
(``seqlab.decoding.verify``). Rows propose different numbers of tokens (shorter
drafts are padded, and padding is never accepted) and accept different counts; a
row with no draft just takes a plain step inside the same call. A draft token is a
point mass q, so acceptance is lossless for greedy decoding and for sampling alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import Config, option, require
from seqlab.decoding.drafters import NGramDrafter, NGramTable, PromptLookup
from seqlab.decoding.engine import DecodeStats, GenerateOutput, Request
from seqlab.decoding.loop import Verdict, draft_and_verify
from seqlab.decoding.strategies import register
from seqlab.decoding.verify import ChainDraft

_NUM_DRAFT = "prompt-lookup, ngram: draft tokens per round"
_MAX_NGRAM = "prompt-lookup, ngram: longest suffix to look up"


@dataclass(frozen=True)
class PromptLookupConfig(Config):
    num_draft: int = option(8, _NUM_DRAFT)
    max_ngram: int = option(3, _MAX_NGRAM)

    def validate(self) -> None:
        require(self.num_draft >= 1, self, "num_draft", "an int >= 1 (draft tokens per round)")
        require(self.max_ngram >= 1, self, "max_ngram", "an int >= 1 (longest suffix to look up)")


@dataclass(frozen=True)
class NGramConfig(PromptLookupConfig):
    min_count: int = option(2, "ngram: observations of a continuation before the table is "
                               "trusted")

    def validate(self) -> None:
        super().validate()
        require(self.min_count >= 1, self, "min_count",
                "an int >= 1 (observations before the table is trusted)")


class LookupProposer:
    """One context drafter per row (``extend`` verified tokens, ``propose(k)``)."""

    def __init__(self, make: Callable[[], PromptLookup | NGramDrafter], num_draft: int,
                 device, stats: DecodeStats):
        self.make, self.num_draft, self.device, self.stats = make, num_draft, device, stats
        self.drafters: list = []
        self.active: list[int] = []

    def start(self, rows: list[list[int]], first: list[int]) -> None:
        for r, t in zip(rows, first):
            d = self.make()
            d.extend(r + [t])
            self.drafters.append(d)
        self.active = list(range(len(rows)))

    def propose(self, last: Tensor, room: list[int]) -> ChainDraft:
        drafts = [self.drafters[b].propose(min(self.num_draft, n))
                  for b, n in zip(self.active, room)]
        n_draft = [len(d) for d in drafts]
        g = max(n_draft)
        self.stats.drafted += sum(n_draft)
        self.stats.draft_hits += sum(n > 0 for n in n_draft)
        pad = torch.tensor([d + [0] * (g - len(d)) for d in drafts], device=self.device,
                           dtype=torch.long).view(len(drafts), g)  # padding is never accepted
        return ChainDraft(torch.cat([last[:, None], pad], 1), None,
                          None if min(n_draft) == g else n_draft)

    def advance(self, draft: ChainDraft, verdict: Verdict) -> None:
        for b, toks in zip(self.active, verdict.tokens):
            self.drafters[b].extend(toks)  # the table learns the model's own verified outputs

    def select(self, keep: list[int]) -> None:
        self.active = [self.active[i] for i in keep]

    def finish(self, stats: DecodeStats) -> None:
        counts = [d.explored for d in self.drafters if d.explored is not None]
        if counts:
            stats.explored = sum(counts)


def _lookup(model, req: Request, cfg, name: str, make) -> GenerateOutput:
    stats = DecodeStats(strategy=name, options=cfg.to_dict())
    return draft_and_verify(model, req, LookupProposer(make, cfg.num_draft, model.device, stats),
                            stats)


@register("prompt-lookup", PromptLookupConfig, samples="optional")
def prompt_lookup(model, req: Request, cfg: PromptLookupConfig) -> GenerateOutput:
    """Prompt lookup decoding: drafts copy what followed the last earlier occurrence of the suffix."""
    return _lookup(model, req, cfg, "prompt-lookup", lambda: PromptLookup(cfg.max_ngram))


@register("ngram", NGramConfig, samples="optional", draft_state=NGramTable)
def ngram(model, req: Request, cfg: NGramConfig) -> GenerateOutput:
    """Adaptive tri-gram drafting (the rule: ``seqlab.decoding.drafters.NGramDrafter``): a
    table per row, or the caller's ``draft`` table shared by every row (it persists across
    calls, ADED's memory of what the model produced before)."""
    return _lookup(model, req, cfg, "ngram",
                   lambda: NGramDrafter(cfg.max_ngram, cfg.min_count, req.draft))

"""The one draft-and-verify loop that every speculative strategy plugs into.

A strategy supplies a ``Proposer``: it proposes draft tokens for every active row
(a chain from a draft model, a looked-up continuation, a tree), and the draft it
returns knows how the target verifies it in one call (``Draft.verify``). The loop
does the rest, the same for every proposer: prefill, the first token, emitting each
round's accepted tokens, stop conditions and budgets, and dropping finished rows
from the target's and the proposer's states.

Invariant between rounds: the target state, and the proposer's, cover each row's
prompt and every emitted token but the last one (``last``), which the next round's
draft starts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from seqlab.decoding.engine import (DecodeStats, GenerateOutput, Request, Rows, prefill,
                                    prefill_features, timer)
from seqlab.decoding.sampling import choose
from seqlab.state import State


@dataclass
class Verdict:
    """The target's decision on one round's draft.

    Attributes:
        counts: per row, how many draft tokens were accepted.
        tokens: per row, the accepted draft tokens, then the target's own next token.
        rolled_back: returns the target state covering ``last`` and the accepted tokens of
            every row (computed only if some row goes on).
        hidden: drafts verified through the target's ``features`` (for proposers that
            ``reads_hidden``): per row the target's hidden states at ``last`` and at each
            accepted token, (counts[i] + 1, H), the last one being where the target chose
            the row's next token; None otherwise.
    """

    counts: list[int]
    tokens: list[list[int]]
    rolled_back: Callable[[], State]
    hidden: list[Tensor] | None = None

    @property
    def next_tokens(self) -> list[int]:
        return [t[-1] for t in self.tokens]


class Draft(Protocol):
    """One round's proposals, verified by the target in one call."""

    def verify(self, model, state: State, fed: list[int], req: Request,
               stats: DecodeStats) -> Verdict:
        """Score the draft with ``model`` from ``state`` (covering ``fed[i]`` tokens of row i)."""


class Proposer(Protocol):
    """What a drafting strategy implements (speculative, tree, prompt lookup, ngram).

    A proposer whose drafter reads the target's hidden states (a trained drafter,
    ``seqlab.decoding.drafters``) sets ``reads_hidden = True``: the loop then prefills
    through the target's ``features`` and calls ``start(rows, first, hidden)`` with per row
    the prompt's hidden states (T_b, H), and its drafts verify through ``features`` too,
    handing ``advance`` the new ones in ``Verdict.hidden``. The target computes these
    states anyway; only the head is split off.
    """

    reads_hidden: bool = False

    def start(self, rows: list[list[int]], first: list[int]) -> None:
        """Take in the prompts and each row's first token (emitted, in no state yet)."""

    def propose(self, last: Tensor, room: list[int]) -> Draft:
        """Draft for every active row after its ``last`` token; row i may use at most
        ``room[i]`` draft tokens (its budget, less the token the target adds)."""

    def advance(self, draft: Draft, verdict: Verdict) -> None:
        """Cover ``last`` and each row's accepted tokens (called only when some row goes on)."""

    def select(self, keep: list[int]) -> None:
        """Keep only these rows (indices into the current rows), in this order."""

    def finish(self, stats: DecodeStats) -> None:
        """Add the proposer's own figures to ``stats``."""


@torch.no_grad()
def draft_and_verify(model, req: Request, proposer: Proposer, stats: DecodeStats) -> GenerateOutput:
    """Decode ``req`` with ``model`` as target and ``proposer``'s drafts; see the module docstring."""
    elapsed = timer()
    rows = Rows(req)
    if req.max_new_tokens == 0:
        proposer.finish(stats)
        return rows.finish(stats, elapsed)
    reads_hidden = getattr(proposer, "reads_hidden", False)
    if reads_hidden:
        logits, hidden, state, calls = prefill_features(model, req.rows, req.cached)
    else:
        logits, state, calls = prefill(model, req.rows, req.cached)
    stats.target_calls += calls
    # The first token comes from the prefill's logits, exactly as plain decoding draws it.
    first = choose(logits, req.sampling, req.generator).tolist()
    if reads_hidden:
        proposer.start(req.rows, first, hidden)
    else:
        proposer.start(req.rows, first)
    stats.prefill_s = elapsed()
    fed = [len(r) for r in req.rows]  # tokens inside each row's states
    keep = rows.emit_round([[t] for t in first])
    last = torch.tensor([first[i] for i in keep], device=model.device, dtype=torch.long)
    if len(keep) < len(req.rows) and keep:
        state = state.select(keep)
        proposer.select(keep)
    fed = [fed[i] for i in keep]

    while rows.active:
        draft = proposer.propose(last, [n - 1 for n in rows.room()])
        verdict = draft.verify(model, state, fed, req, stats)
        stats.verify_calls += 1
        stats.accepted.append(verdict.counts)
        n_rows = len(rows.active)
        keep = rows.emit_round(verdict.tokens)
        if not keep:
            break
        state = verdict.rolled_back()
        proposer.advance(draft, verdict)
        fed = [f + n + 1 for f, n in zip(fed, verdict.counts)]
        last = torch.tensor(verdict.next_tokens, device=model.device, dtype=torch.long)
        if len(keep) < n_rows:
            fed = [fed[i] for i in keep]
            last = last[keep]
            state = state.select(keep)
            proposer.select(keep)
    proposer.finish(stats)
    return rows.finish(stats, elapsed)

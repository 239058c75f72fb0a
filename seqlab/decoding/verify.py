"""Verifying a chain of draft tokens in one target call, and rolling the target state back.

Shared by every chain proposer (a draft model, prompt lookup, the n-gram drafter).
Acceptance is lossless: with greedy decoding a proposal is kept while it equals the
target's argmax; with sampling, proposal x drawn from q is kept with probability
min(1, p(x)/q(x)) and a rejection draws from normalize(max(0, p - q)), so the output
follows exactly the target's filtered distribution (Leviathan et al. 2023; Chen et al.
2023). A deterministic drafter is a point mass q.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqlab.decoding.engine import DecodeStats, Request, combine, groups
from seqlab.decoding.loop import Verdict
from seqlab.decoding.sampling import SamplingConfig, choose, probabilities
from seqlab.state import State


@dataclass
class ChainDraft:
    """Per row the last emitted token, then up to g proposals.

    Attributes:
        seq: (R, g+1) the last token (not yet in the target state), then the proposals.
        q: (R, g, V) the draft's probabilities of the proposals (sampling), or None for a
            deterministic drafter (a point mass on each proposal).
        n_draft: per row how many of the g proposals are real (shorter drafts are padded;
            padding is never accepted and carries q = 0), or None when all g are.
        features: verify through the target's ``features`` and hand the hidden states of the
            accepted positions on in ``Verdict.hidden`` (for drafters that read them).
    """

    seq: Tensor
    q: Tensor | None = None
    n_draft: list[int] | None = None
    features: bool = field(default=False, kw_only=True)   # subclasses add positional fields

    def verify(self, model, state: State, fed: list[int], req: Request,
               stats: DecodeStats) -> Verdict:
        hidden = None
        if self.features:
            hidden, verified = model.features(self.seq, state)  # (R, g+1, H)
            logits = model.logits(hidden)
        else:
            logits, verified = model(self.seq, state)  # (R, g+1, V)
        stats.target_calls += 1
        n_acc, nxt = accept_chain(self.seq, logits, req.sampling, req.generator, self.q,
                                  self.n_draft)
        counts, seq_l, nxt_l = n_acc.tolist(), self.seq.tolist(), nxt.tolist()
        tokens = [seq_l[i][1:counts[i] + 1] + [nxt_l[i]] for i in range(len(counts))]
        kept = None if hidden is None else [hidden[i, :counts[i] + 1] for i in range(len(counts))]
        return Verdict(counts, tokens, lambda: roll_back(model, self.seq, state, verified,
                                                         counts, fed, stats), kept)


def accept_chain(seq: Tensor, t_logits: Tensor, sampling: SamplingConfig, generator,
                 q: Tensor | None = None, n_draft: list[int] | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Accepted proposals per row (R,) and the target's own next token after them (R,).

    ``t_logits (R, g+1, V)``: the target's logits at ``seq``'s positions; ``q``, ``n_draft``
    as in ``ChainDraft``.
    """
    R, g = seq.shape[0], seq.shape[1] - 1
    device = seq.device
    real = None
    if n_draft is not None and g > 0:
        real = torch.arange(g, device=device)[None] < torch.tensor(n_draft, device=device)[:, None]
    if g == 0:
        return (torch.zeros(R, dtype=torch.long, device=device),
                choose(t_logits[:, 0], sampling, generator))
    if sampling.greedy:
        target_best = t_logits.argmax(-1)  # (R, g+1)
        agree = seq[:, 1:] == target_best[:, :g]
        if real is not None:
            agree &= real
        n_acc = agree.long().cumprod(1).sum(1)
        return n_acc, target_best.gather(1, n_acc[:, None]).squeeze(1)
    V = t_logits.shape[-1]
    p = probabilities(t_logits.reshape(-1, V), sampling).view(R, g + 1, V)
    if q is None:
        q = torch.nn.functional.one_hot(seq[:, 1:], V).to(p.dtype)
    q = q.to(p.dtype)
    if real is not None:
        q = q * real[..., None]
    q = torch.cat([q, q.new_zeros(R, 1, V)], 1)  # position g: the bonus token, from p
    d = seq[:, 1:, None]
    p_d = p[:, :g].gather(2, d).squeeze(2)
    q_d = q[:, :g].gather(2, d).squeeze(2)
    u = torch.rand(R, g, generator=generator, device=device, dtype=p.dtype)
    agree = u * q_d < p_d  # u < p/q, with q(d) > 0 since d was drawn from q
    if real is not None:
        agree &= real
    n_acc = agree.long().cumprod(1).sum(1)
    idx = n_acc[:, None, None].expand(R, 1, V)
    p_n, q_n = p.gather(1, idx).squeeze(1), q.gather(1, idx).squeeze(1)
    residual = (p_n - q_n).clamp(min=0)
    empty = residual.sum(-1, keepdim=True) <= 0
    residual = torch.where(empty, p_n, residual)  # p == q there: any draw from p is right
    return n_acc, torch.multinomial(residual, 1, generator=generator).squeeze(1)


def roll_back(model, seq: Tensor, snapshot: State, verified: State, counts: list[int],
              fed: list[int], stats: DecodeStats) -> State:
    """The target state covering ``seq[i, :counts[i] + 1]`` after ``snapshot`` (``fed[i]`` tokens).

    A state that can rewind (a KV cache) is truncated per row; a recurrent or hybrid one is
    recomputed from the snapshot, one call per group of rows that accepted the same count
    (counted in ``stats.target_calls`` and ``stats.recompute_calls``).
    """
    R, g = seq.shape[0], seq.shape[1] - 1
    if verified.can_truncate:
        return verified.truncate([f + n + 1 for f, n in zip(fed, counts)])
    parts = []
    for n, idx in groups(counts).items():
        whole = len(idx) == R
        if n == g:
            parts.append((idx, verified if whole else verified.select(idx)))
            continue
        _, s = model(seq[:, :n + 1] if whole else seq[idx, :n + 1],
                     snapshot if whole else snapshot.select(idx))
        stats.target_calls += 1
        stats.recompute_calls += 1
        parts.append((idx, s))
    return combine(parts, R)

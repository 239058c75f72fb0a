"""Speculative decoding with a draft model (Leviathan et al. 2023; Chen et al. 2023).

Each round the small ``draft`` model proposes ``gamma`` tokens one step at a
time; the target scores all of them in one parallel call and keeps the longest
prefix it agrees with, plus one token of its own. Acceptance is lossless:
greedy decoding returns exactly the target's greedy output, and sampling draws
from exactly the target's (filtered) distribution.

State handling works for every model: states are immutable values, so the
state from before the verify call is a snapshot. After acceptance a state that
can rewind (a KV cache) is truncated per row; a recurrent or hybrid state is
recomputed from the snapshot on the accepted tokens (rows grouped by how many
they accepted). The draft keeps its state after every proposal step, so it just
picks, per row, the snapshot at the accepted length.

Invariant between rounds: both states cover the prompt and every emitted token
but the last one (``last``), which is fed at the start of the next round.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.config import ConfigError
from seqlab.decoding.engine import GenerateOutput, prefill, timer
from seqlab.decoding.sampling import SamplingConfig, choose, probabilities
from seqlab.decoding.strategies import register
from seqlab.models.lm import LMState


def _combine(parts: list[tuple[list[int], LMState]], batch: int) -> LMState:
    """Join per-group states (each holding the rows ``idx`` in that order) into batch order."""
    if len(parts) == 1:
        return parts[0][1]
    order = [b for idx, _ in parts for b in idx]
    inverse = [0] * batch
    for pos, b in enumerate(order):
        inverse[b] = pos
    return LMState.cat([s for _, s in parts]).select(inverse)


def _groups(counts: list[int]) -> dict[int, list[int]]:
    g: dict[int, list[int]] = {}
    for b, n in enumerate(counts):
        g.setdefault(n, []).append(b)
    return g


@torch.no_grad()
def verify(model, seq: Tensor, snapshot: LMState, sampling: SamplingConfig,
           generator, stats: dict, q: Tensor | None = None, n_draft: list[int] | None = None
           ) -> tuple[list[int], Tensor, LMState]:
    """Verify drafted tokens with the target in one call; shared by every drafting strategy.

    Args:
        seq: (R, g+1): per row the last emitted token (not yet in the state), then g proposals.
        snapshot: the target state covering every token of each row before seq.
        q: (R, g, V) the draft's probabilities of the proposals (sampling only). None means a
            deterministic drafter: a point mass on each proposal, so a proposal x is accepted
            with probability p(x) and a rejection resamples from normalize(max(0, p - q)).
        n_draft: per row how many of the g proposals are real (rows with fewer proposals are
            padded; padding is never accepted and carries q = 0). None: all g are real.

    Returns:
        counts (accepted proposals per row), nxt (R,) the target's own next token after them,
        and the target state after all of seq (pass it to ``roll_back`` once the caller knows
        which rows go on). ``stats`` gets target_calls, verify_calls and accepted (a list of
        per-row counts per round).
    """
    R, g = seq.shape[0], seq.shape[1] - 1
    device = seq.device
    t_logits, verified = model(seq, snapshot)  # (R, g+1, V)
    stats["target_calls"] += 1
    stats["verify_calls"] += 1
    real = None
    if n_draft is not None and g > 0:
        real = torch.arange(g, device=device)[None] < torch.tensor(n_draft, device=device)[:, None]

    if g == 0:
        n_acc = torch.zeros(R, dtype=torch.long, device=device)
        nxt = choose(t_logits[:, 0], sampling, generator)
    elif sampling.greedy:
        target_best = t_logits.argmax(-1)  # (R, g+1)
        agree = seq[:, 1:] == target_best[:, :g]
        if real is not None:
            agree &= real
        n_acc = agree.long().cumprod(1).sum(1)
        nxt = target_best.gather(1, n_acc[:, None]).squeeze(1)
    else:
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
        nxt = torch.multinomial(residual, 1, generator=generator).squeeze(1)
    counts = n_acc.tolist()
    stats.setdefault("accepted", []).append(counts)
    return counts, nxt, verified


def roll_back(model, seq: Tensor, snapshot: LMState, verified: LMState, counts: list[int],
              fed: list[int], stats: dict) -> tuple[LMState, list[int]]:
    """The target state covering ``seq[i, :counts[i] + 1]`` after the snapshot, and the new fed.

    A state that can rewind (a KV cache) is truncated per row; a recurrent or hybrid one is
    recomputed from the snapshot, one call per group of rows that accepted the same count
    (counted in stats' target_calls and recompute_calls).
    """
    R, g = seq.shape[0], seq.shape[1] - 1
    stats.setdefault("recompute_calls", 0)
    new_fed = [fed[i] + counts[i] + 1 for i in range(R)]
    if verified.can_truncate:
        return verified.truncate(new_fed), new_fed
    parts = []
    for n, idx in _groups(counts).items():
        whole = len(idx) == R
        if n == g:
            parts.append((idx, verified if whole else verified.select(idx)))
            continue
        _, s = model(seq[:, :n + 1] if whole else seq[idx, :n + 1],
                     snapshot if whole else snapshot.select(idx))
        stats["target_calls"] += 1
        stats["recompute_calls"] += 1
        parts.append((idx, s))
    return _combine(parts, R), new_fed



def check_draft(model, draft, strategy: str) -> None:
    """A clear error unless ``draft`` is a model with the target's vocabulary."""
    if draft is None:
        raise ConfigError(f"strategy {strategy!r} needs a draft model: pass draft=<a seqlab LM "
                          "with the target's vocabulary>")
    if draft.cfg.vocab_size != model.cfg.vocab_size:
        raise ConfigError(f"the draft model's vocab_size ({draft.cfg.vocab_size}) differs from the "
                          f"target's ({model.cfg.vocab_size}); speculative decoding needs the same "
                          "vocabulary")


def make_emitter(out: list[list[int]], stopper, on_token, max_new_tokens: int):
    """``emit(row, token) -> finished``: append, stream, and check stops and the budget."""

    def emit(b: int, t: int) -> bool:
        out[b].append(t)
        if on_token is not None:
            on_token(b, t)
        stopper.update(b, out[b])
        return stopper.done[b] or len(out[b]) >= max_new_tokens

    return emit


def emit_accepted(emit, active: list[int], tokens: list[list[int]]) -> list[int]:
    """Emit each active row's tokens of this round, stopping a row at its finishing token;
    returns the indices (into ``active``) of the rows that go on."""
    return [i for i, (b, toks) in enumerate(zip(active, tokens))
            if not any(emit(b, t) for t in toks)]  # any() stops at the finishing token


def finish_stats(out: list[list[int]], stats: dict, elapsed) -> GenerateOutput:
    """The output of a draft-and-verify strategy, with its totals and rates filled in."""
    new = sum(len(o) for o in out)
    acc = [n for r in stats["accepted"] for n in r]
    wall = elapsed()
    stats.update(new_tokens=new, tokens_per_call=new / max(stats["verify_calls"], 1),
                 accepted_tokens=sum(acc), mean_accepted=sum(acc) / max(len(acc), 1),
                 wall_s=wall, tokens_per_s=new / max(wall, 1e-9))
    return GenerateOutput(out, stats)

@register("speculative")
@torch.no_grad()
def speculative(model, rows, *, max_new_tokens, sampling: SamplingConfig, stopper, on_token=None,
                generator=None, draft=None, gamma: int = 4) -> GenerateOutput:
    """Speculative decoding; options ``draft`` (a seqlab LM, same vocabulary) and ``gamma``."""
    check_draft(model, draft, "speculative")
    if not isinstance(gamma, int) or gamma < 1:
        raise ConfigError(f"gamma = {gamma!r} is not allowed: expected an int >= 1 (draft tokens "
                          "per round)")
    was_training = draft.training
    draft.eval()
    try:
        return _run(model, draft, rows, max_new_tokens, sampling, stopper, on_token, generator, gamma)
    finally:
        draft.train(was_training)


def _run(model, draft, rows, max_new_tokens, sampling, stopper, on_token, generator, gamma):
    device = next(model.parameters()).device
    elapsed = timer()
    B = len(rows)
    out: list[list[int]] = [[] for _ in rows]
    stats = {"strategy": "speculative", "gamma": gamma, "target_calls": 0, "verify_calls": 0,
             "recompute_calls": 0, "draft_calls": 0, "accepted": []}

    emit = make_emitter(out, stopper, on_token, max_new_tokens)

    def finish() -> GenerateOutput:
        return finish_stats(out, stats, elapsed)

    if max_new_tokens == 0:
        stats["prefill_s"] = 0.0
        return finish()

    logits, tstate, calls = prefill(model, rows, device)
    stats["target_calls"] += calls
    _, dstate, dcalls = prefill(draft, rows, device)
    stats["draft_calls"] += dcalls
    stats["prefill_s"] = elapsed()

    # The first token comes from the prefill's logits, exactly as plain decoding draws it.
    first = choose(logits, sampling, generator).tolist()
    active = [b for b in range(B) if not emit(b, first[b])]
    last = torch.tensor([first[b] for b in active], device=device, dtype=torch.long)
    fed = [len(rows[b]) + len(out[b]) - 1 for b in active]  # tokens inside each row's state
    if len(active) < B:
        if not active:
            return finish()
        tstate, dstate = tstate.select(active), dstate.select(active)

    while active:
        n_rows = len(active)
        left = max(max_new_tokens - len(out[b]) for b in active)
        g = min(gamma, left - 1)  # never score positions no row may emit

        # -- draft: propose g tokens, keeping the state after every step ------------------
        d_states = [dstate]
        q_logits, proposals = [], []
        tok = last
        for _ in range(g):
            lg, s = draft.step(tok, d_states[-1])
            stats["draft_calls"] += 1
            d_states.append(s)
            q_logits.append(lg)
            tok = choose(lg, sampling, generator)
            proposals.append(tok)
        seq = torch.stack([last] + proposals, 1)  # (R, g+1)

        # -- target: verify in one parallel call, accept, roll the target state back -------
        q = None
        if g > 0 and not sampling.greedy:
            V = model.cfg.vocab_size
            q = probabilities(torch.stack(q_logits, 1).reshape(-1, V), sampling).view(n_rows, g, V)
        snapshot = tstate
        counts, nxt, verified = verify(model, seq, snapshot, sampling, generator, stats, q=q)
        groups = _groups(counts)

        # -- emit ---------------------------------------------------------------------------
        seq_l, nxt_l = seq.tolist(), nxt.tolist()
        keep = emit_accepted(emit, active, [seq_l[i][1:counts[i] + 1] + [nxt_l[i]]
                                            for i in range(n_rows)])
        if not keep:
            break

        # -- states: both must cover last + the accepted proposals --------------------------
        tstate, new_fed = roll_back(model, seq, snapshot, verified, counts, fed, stats)
        if max(counts) == g:  # the draft has not yet seen its last proposal (or `last` if g = 0)
            _, s = draft.step(tok, d_states[-1])
            stats["draft_calls"] += 1
            d_states.append(s)
        if d_states[-1].can_truncate:
            dstate = d_states[-1].truncate(new_fed)
        else:
            dstate = _combine([(idx, d_states[n + 1] if len(idx) == n_rows
                                else d_states[n + 1].select(idx)) for n, idx in groups.items()],
                              n_rows)

        last, fed = nxt, new_fed
        if len(keep) < n_rows:
            active = [active[i] for i in keep]
            fed = [fed[i] for i in keep]
            last = last[keep]
            tstate, dstate = tstate.select(keep), dstate.select(keep)
    return finish()

"""Drafting without a draft model: prompt lookup and an adaptive n-gram table.

Each round every row's drafter (``seqlab.decoding.drafters``) proposes up to
``num_draft`` tokens from its context; the target scores all of them in one
call (``speculative.verify``) and keeps the longest prefix it agrees with plus
one token of its own. Rows propose different numbers of tokens (shorter drafts
are padded, and padding is never accepted) and accept different counts; a row
with no draft just takes a plain step inside the same call.

Acceptance is lossless: greedy output is exactly plain greedy; with sampling a
draft token is a point mass q, accepted with probability p(x), and a rejection
draws from normalize(max(0, p - q)), so samples follow exactly the target's
filtered distribution. The target state is rolled back as in speculative
decoding (``speculative.roll_back``): truncated for a KV cache, recomputed from
the pre-verify snapshot for recurrent and hybrid models.

Stats: target_calls, verify_calls, recompute_calls, tokens_per_call (new tokens
per verify call), mean_accepted (accepted draft tokens per row and round),
drafted (draft tokens proposed), draft_hits (row-rounds with a non-empty draft),
accepted_tokens, wall_s, tokens_per_s, strategy; "ngram" adds explored.
"""

from __future__ import annotations

import torch

from seqlab.config import ConfigError
from seqlab.decoding.drafters import NGramDrafter, PromptLookup
from seqlab.decoding.engine import GenerateOutput, prefill, timer
from seqlab.decoding.sampling import SamplingConfig, choose
from seqlab.decoding.strategies import register
from seqlab.decoding.strategies.speculative import (emit_accepted, finish_stats, make_emitter,
                                                    roll_back, verify)


def _check(name: str, value, what: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} = {value!r} is not allowed: expected an int >= {low} ({what})")


@register("prompt-lookup")
@torch.no_grad()
def prompt_lookup(model, rows, *, max_new_tokens, sampling: SamplingConfig, stopper, on_token=None,
                  generator=None, num_draft: int = 8, max_ngram: int = 3) -> GenerateOutput:
    """Prompt lookup decoding; options ``num_draft`` (tokens per round) and ``max_ngram``."""
    _check("num_draft", num_draft, "draft tokens per round")
    _check("max_ngram", max_ngram, "longest suffix to look up")
    return _run(model, rows, max_new_tokens, sampling, stopper, on_token, generator, num_draft,
                lambda: PromptLookup(max_ngram), "prompt-lookup")


@register("ngram")
@torch.no_grad()
def ngram(model, rows, *, max_new_tokens, sampling: SamplingConfig, stopper, on_token=None,
          generator=None, num_draft: int = 8, max_ngram: int = 3, min_count: int = 2
          ) -> GenerateOutput:
    """Adaptive tri-gram drafting (see ``seqlab.decoding.drafters.NGramDrafter`` for the rule);
    options ``num_draft``, ``max_ngram`` (exploration's lookup) and ``min_count`` (confidence)."""
    _check("num_draft", num_draft, "draft tokens per round")
    _check("max_ngram", max_ngram, "longest suffix to look up")
    _check("min_count", min_count, "observations before the table is trusted")
    return _run(model, rows, max_new_tokens, sampling, stopper, on_token, generator, num_draft,
                lambda: NGramDrafter(max_ngram, min_count), "ngram")


def _run(model, rows, max_new_tokens, sampling, stopper, on_token, generator, num_draft, make,
         name):
    device = next(model.parameters()).device
    elapsed = timer()
    B = len(rows)
    out: list[list[int]] = [[] for _ in rows]
    drafters = []
    stats = {"strategy": name, "num_draft": num_draft, "target_calls": 0, "verify_calls": 0,
             "recompute_calls": 0, "drafted": 0, "draft_hits": 0, "accepted": []}

    emit = make_emitter(out, stopper, on_token, max_new_tokens)

    def finish() -> GenerateOutput:
        if name == "ngram":
            stats["explored"] = sum(d.explored for d in drafters)
        return finish_stats(out, stats, elapsed)

    if max_new_tokens == 0:
        stats["prefill_s"] = 0.0
        return finish()

    logits, tstate, calls = prefill(model, rows, device)
    stats["target_calls"] += calls
    stats["prefill_s"] = elapsed()
    for r in rows:
        d = make()
        d.extend(r)
        drafters.append(d)

    # The first token comes from the prefill's logits, exactly as plain decoding draws it.
    first = choose(logits, sampling, generator).tolist()
    active = []
    for b in range(B):
        drafters[b].extend([first[b]])
        if not emit(b, first[b]):
            active.append(b)
    last = torch.tensor([first[b] for b in active], device=device, dtype=torch.long)
    fed = [len(rows[b]) + len(out[b]) - 1 for b in active]  # tokens inside each row's state
    if len(active) < B:
        if not active:
            return finish()
        tstate = tstate.select(active)

    while active:
        n_rows = len(active)
        # never propose tokens a row may not emit: its last verified position is its own
        drafts = [drafters[b].propose(min(num_draft, max_new_tokens - len(out[b]) - 1))
                  for b in active]
        n_draft = [len(d) for d in drafts]
        g = max(n_draft)
        stats["drafted"] += sum(n_draft)
        stats["draft_hits"] += sum(n > 0 for n in n_draft)
        pad = torch.tensor([d + [0] * (g - len(d)) for d in drafts], device=device,
                           dtype=torch.long).view(n_rows, g)  # padding is never accepted
        seq = torch.cat([last[:, None], pad], 1)  # (R, g+1)

        snapshot = tstate
        counts, nxt, verified = verify(model, seq, snapshot, sampling, generator, stats,
                                       n_draft=None if min(n_draft) == g else n_draft)

        seq_l, nxt_l = seq.tolist(), nxt.tolist()
        new = [seq_l[i][1:counts[i] + 1] + [nxt_l[i]] for i in range(len(active))]
        for b, toks in zip(active, new):
            drafters[b].extend(toks)  # the table learns the model's own verified outputs
        keep = emit_accepted(emit, active, new)
        if not keep:
            break

        tstate, fed = roll_back(model, seq, snapshot, verified, counts, fed, stats)
        last = nxt
        if len(keep) < n_rows:
            active = [active[i] for i in keep]
            fed = [fed[i] for i in keep]
            last = last[keep]
            tstate = tstate.select(keep)
    return finish()

"""Greedy decoding and ancestral sampling (temperature, top-k, top-p, min-p)."""

from __future__ import annotations

import torch

from seqlab.decoding.engine import GenerateOutput, prefill, timer
from seqlab.decoding.sampling import SamplingConfig, choose
from seqlab.decoding.strategies import register


@register("sample")
@torch.no_grad()
def sample(model, rows, *, max_new_tokens, sampling: SamplingConfig, stopper, on_token=None,
           generator=None) -> GenerateOutput:
    device = next(model.parameters()).device
    elapsed = timer()
    logits, state, calls = prefill(model, rows, device)
    prefill_s = elapsed()
    out: list[list[int]] = [[] for _ in rows]
    for i in range(max_new_tokens):
        nxt = choose(logits, sampling, generator)
        ids = nxt.tolist()
        for b, t in enumerate(ids):
            if stopper.done[b]:
                continue
            out[b].append(t)
            if on_token is not None:
                on_token(b, t)
            stopper.update(b, out[b])
        if all(stopper.done) or i == max_new_tokens - 1:
            break  # no model call for logits nobody will use
        logits, state = model.step(nxt, state)
        calls += 1
    new = sum(len(o) for o in out)
    return GenerateOutput(out, {"strategy": "greedy" if sampling.greedy else "sample",
                                "target_calls": calls, "new_tokens": new,
                                "tokens_per_call": new / max(calls, 1), "prefill_s": prefill_s,
                                "wall_s": elapsed(), "tokens_per_s": new / max(elapsed(), 1e-9)})


@register("greedy")
def greedy(model, rows, *, max_new_tokens, sampling: SamplingConfig, stopper, on_token=None,
           generator=None) -> GenerateOutput:
    return sample(model, rows, max_new_tokens=max_new_tokens, sampling=SamplingConfig(temperature=0.0),
                  stopper=stopper, on_token=on_token, generator=generator)

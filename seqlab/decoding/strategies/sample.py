"""Greedy decoding and ancestral sampling (temperature, top-k, top-p, min-p)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.config import Config
from seqlab.decoding.engine import DecodeStats, GenerateOutput, Request, Rows, prefill, timer
from seqlab.decoding.sampling import choose
from seqlab.decoding.strategies import register


@dataclass(frozen=True)
class NoOptions(Config):
    """Greedy decoding and sampling take no options beyond the sampling settings."""


@torch.no_grad()
def _decode(model, req: Request, name: str) -> GenerateOutput:
    elapsed = timer()
    stats = DecodeStats(strategy=name)
    rows = Rows(req)
    if req.max_new_tokens == 0:
        return rows.finish(stats, elapsed)
    logits, state, stats.target_calls = prefill(model, req.rows, req.cached)
    stats.prefill_s = elapsed()
    while True:
        nxt = choose(logits, req.sampling, req.generator)
        n_rows = len(rows.active)
        keep = rows.emit_round([[t] for t in nxt.tolist()])
        if not keep:
            break  # no model call for logits nobody will use
        if len(keep) < n_rows:
            nxt, state = nxt[keep], state.select(keep)
        logits, state = model.step(nxt, state)
        stats.target_calls += 1
    return rows.finish(stats, elapsed)


@register("sample", NoOptions, samples="always")
def sample(model, req: Request, cfg: NoOptions) -> GenerateOutput:
    return _decode(model, req, "greedy" if req.sampling.greedy else "sample")


@register("greedy", NoOptions, samples="never")
def greedy(model, req: Request, cfg: NoOptions) -> GenerateOutput:
    return _decode(model, req, "greedy")

"""Tiny targets and drafters shared by the trained-drafter tests (float64 targets, CPU)."""

from __future__ import annotations

import torch

import seqlab
from seqlab.decoding.drafters import DrafterConfig, build
from seqlab.decoding.drafters.train import head_matrix

PATTERNS = {"attention": ["attention", "attention"], "recurrent": ["mamba", "gru"],
            "hybrid": ["attention", "mamba"]}
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 11, 12, 11]]


def target(pattern: str = "attention", vocab: int = 40, dim: int = 32, seed: int = 0,
           scale: float = 4.0):
    """A random LM, mildly peaked (as in test_speculative) so greedy is far from ties."""
    torch.manual_seed(seed)
    layers = PATTERNS[pattern]
    m = seqlab.models.build_lm(vocab_size=vocab, dim=dim, layers=layers,
                               mixer_options={n: seqlab.mixers.get(n).example_options
                                              for n in set(layers)}).double()
    with torch.no_grad():
        m.embed.weight.mul_(scale)
    return m.eval()


def drafter(kind: str, model, *, draft_vocab: int | None = None, depth: int = 4, window: int = 3,
            noise: float = 0.0, seed: int = 1):
    """A drafter of ``kind`` for ``model`` with the target's head rows for its ``draft_vocab``
    first tokens; ``noise`` > 0 perturbs every weight (a drafter that disagrees often), 0
    keeps the untrained start (it repeats the target's own next-token guess, so it is often
    accepted on a peaked model)."""
    torch.manual_seed(seed)
    V = model.vocab_size
    n = V if draft_vocab is None else draft_vocab
    H = model.cfg.dim
    d = build(DrafterConfig(kind=kind, hidden_size=H, vocab_size=V, draft_vocab=n, depth=depth,
                            window=window, width=16, target="tiny"))
    weight, bias = head_matrix(model, H, dtype=torch.float64)
    ids = torch.randperm(V)[:n].sort().values if n < V else torch.arange(V)
    d.set_head(ids, weight[ids], bias[ids])
    if noise:
        with torch.no_grad():
            for p in d.parameters():
                p.add_(noise * torch.randn_like(p))
    return d.eval()

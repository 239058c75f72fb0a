"""Chimera (Zeng et al. 2024): a trigram encoder over the most recent tokens plus a light
decoder that reads the target's last hidden states, drafting autoregressively.

Heads and transfer layers guess token t+2+j from the target's state alone; Chimera
also sees what was drafted so far. Step j (0-based) embeds the three tokens before the
one it predicts (the target's latest tokens, then its own drafts; the paper's
"trigram encoder": short-range dependencies are where a cheap model is right most
often), and one attention + MLP layer combines that with the target's last ``window``
hidden states (long-range context the target already summarised):

    query = Wq h_t + trigram(x_{-3:}) + step_j
    z     = silu(W1 [query ; attend(query, window)])
    pseudo hidden = h_t + Wo z      (decoded by the target's head rows)

Its own token embedding (width ``width``, one row per token of the draft vocabulary
and one for all others) keeps it independent of how the target stores embeddings,
and small: the tokens it cannot propose matter little as context either. Wo starts at zero, so an untrained drafter repeats the target's own
prediction for the next token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.decoding.drafters.base import Context, DrafterConfig, HiddenDrafter


class Chimera(HiddenDrafter):
    """Trigram encoder and a one-layer decoder over the last ``window`` hidden states."""

    autoregressive = True

    def __init__(self, cfg: DrafterConfig):
        super().__init__(cfg)
        H, W = cfg.hidden_size, cfg.width
        self.embed = nn.Embedding(cfg.draft_vocab + 1, W)
        nn.init.normal_(self.embed.weight, std=W ** -0.5)
        self.trigram = nn.Linear(3 * W, W)
        self.steps = nn.Parameter(torch.zeros(cfg.depth, W))
        self.wq = nn.Linear(H, W, bias=False)
        self.wk = nn.Linear(H, W, bias=False)
        self.wv = nn.Linear(H, W, bias=False)
        self.w1 = nn.Linear(2 * W, W)
        self.wo = nn.Linear(W, H, bias=False)
        nn.init.zeros_(self.wo.weight)

    def step(self, ctx: Context, trigram: Tensor, j: int) -> Tensor:
        win, h = ctx.hidden, ctx.hidden[:, -1]
        dt = self.wq.weight.dtype
        tri = torch.nn.functional.silu(self.trigram(self.embed(self.slot[trigram]).flatten(1)))
        q = self.wq(h.to(dt)) + tri + self.steps[j]
        if "kv" not in ctx.scratch:   # the same hidden states at every step of a round
            ctx.scratch["kv"] = self.wk(win.to(dt)), self.wv(win.to(dt))             # (R, n, W)
        keys, vals = ctx.scratch["kv"]
        score = torch.einsum("rw,rnw->rn", q, keys) * q.shape[-1] ** -0.5
        att = score.masked_fill(~ctx.mask, float("-inf")).softmax(-1)
        read = torch.einsum("rn,rnw->rw", att, vals)
        z = torch.nn.functional.silu(self.w1(torch.cat([q, read], -1)))
        return h + self.wo(z).to(h.dtype)

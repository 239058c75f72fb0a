"""Hidden Transfer (Wu et al. 2024): transfer layers map the target's last hidden states
to *pseudo* hidden states of the next tokens, each decoded by the target's head.

The paper transfers an intermediate layer's states and lets the pseudo states run
through the remaining layers with the real ones; here the decoding protocol offers the
last layer only, so each transfer layer i (0-based) reads the last ``window`` hidden
states: ``h_t + T_i(h_t) + O_i(attend(query_i, window))`` -- a low-rank linear map of
the newest state plus what a learned per-offset query picks from the recent ones
(which earlier positions matter for the token i + 2 ahead). All ``depth`` pseudo states
come at once and do not depend on the tokens chosen, so the drafts form a tree for free:
the top-b candidates of depth d hang under every node of depth d - 1, verified in one
call by the tree strategy (``generate(..., "tree", draft=drafter, branching=(3, 2, 1))``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.decoding.drafters.base import Context, DrafterConfig, HiddenDrafter


class Transfer(HiddenDrafter):
    """``depth`` transfer layers of rank ``width`` over the last ``window`` hidden states."""

    def __init__(self, cfg: DrafterConfig):
        super().__init__(cfg)
        H, W, k = cfg.hidden_size, cfg.width, cfg.depth
        self.t_down = nn.Parameter(torch.randn(k, H, W) * H ** -0.5)
        self.t_up = nn.Parameter(torch.zeros(k, W, H))
        self.query = nn.Parameter(torch.randn(k, W) * W ** -0.5)
        self.key = nn.Linear(H, W, bias=False)
        self.value = nn.Linear(H, W, bias=False)
        self.out = nn.Parameter(torch.zeros(k, W, H))

    def pseudo(self, ctx: Context) -> Tensor:
        win, h = ctx.hidden, ctx.hidden[:, -1]                          # (R, Wn, H), (R, H)
        dt = h.dtype
        lin = torch.einsum("rh,khw->rkw", h, self.t_down.to(dt))
        lin = torch.einsum("rkw,kwh->rkh", lin, self.t_up.to(dt))       # (R, k, H)
        keys = self.key(win.to(self.key.weight.dtype)).to(dt)           # (R, Wn, W)
        vals = self.value(win.to(self.key.weight.dtype)).to(dt)
        score = torch.einsum("kw,rnw->rkn", self.query.to(dt), keys) * keys.shape[-1] ** -0.5
        score = score.masked_fill(~ctx.mask[:, None], float("-inf"))
        picked = torch.einsum("rkn,rnw->rkw", score.softmax(-1), vals)  # (R, k, W)
        return h[:, None] + lin + torch.einsum("rkw,kwh->rkh", picked, self.out.to(dt))

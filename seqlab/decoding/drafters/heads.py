"""Multi-token heads on the target's last hidden state (Medusa, Cai et al. 2024).

Head i (0-based) is a small residual MLP on the target's last hidden state ``h_t``
(the one whose head chose token t+1): ``h_t + up_i(silu(down_i(h_t)))``, decoded by
the target's own head rows, predicts token t+2+i. The heads never see each other's
tokens, so all ``depth`` drafts come from one small matmul; that is why they are the
simplest baseline and why they fall off with depth (nothing tells head 2 what heads
0 and 1 chose). ``up_i`` starts at zero, so an untrained head repeats the target's
own prediction for token t+1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.decoding.drafters.base import Context, DrafterConfig, HiddenDrafter


class Heads(HiddenDrafter):
    """``depth`` residual MLP heads (width ``width``) on the last hidden state; ``window`` unused."""

    def __init__(self, cfg: DrafterConfig):
        super().__init__(cfg)
        H, W, k = cfg.hidden_size, cfg.width, cfg.depth
        self.down = nn.Parameter(torch.randn(k, H, W) * H ** -0.5)   # (k, H, W)
        self.bias = nn.Parameter(torch.zeros(k, W))
        self.up = nn.Parameter(torch.zeros(k, W, H))                  # zero: start from h_t

    def pseudo(self, ctx: Context) -> Tensor:
        h = ctx.hidden[:, -1]                                           # (R, H)
        z = torch.nn.functional.silu(torch.einsum("rh,khw->rkw", h, self.down.to(h.dtype))
                                     + self.bias.to(h.dtype))           # (R, k, W)
        return h[:, None] + torch.einsum("rkw,kwh->rkh", z, self.up.to(h.dtype))

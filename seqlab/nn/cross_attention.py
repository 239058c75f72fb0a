"""Cross-attention: queries from one sequence, keys and values from another (a memory), as in
an encoder-decoder's decoder (Vaswani et al. 2017, arXiv:1706.03762, section 3.2.3).

    y_t = W_o · concat_h softmax(q_t,h · K_hᵀ / √d + mask) V_h,     K = e W_k,  V = e W_v

The memory's keys and values depend on the encoder output ``e`` alone, so they are projected
once (:meth:`CrossAttention.memory`) and kept in the decoder's state: a decode step costs one
read of the S source keys per head, never their projection. No positions are rotated in: the
encoder already placed them in ``e``, and the queries' order is the decoder's own business.

Cost: memory O(S·D²) once; a query O(S·D); state 2·D·S per sequence and layer.

Example:
    >>> cross = CrossAttention(dim=64, heads=4)
    >>> k, v = cross.memory(torch.randn(2, 10, 64))                 # (2, 4, 10, 16) each
    >>> valid = torch.arange(10)[None] < torch.tensor([[10], [6]])  # row 1: 6 source positions
    >>> y = cross(torch.randn(2, 3, 64), k, v, valid)               # (2, 3, 64)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import ConfigError


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` over a memory projected once; see the module docstring."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if heads <= 0 or dim % heads:
            raise ConfigError(f"cross-attention: dim = {dim} does not divide into heads = "
                              f"{heads}; choose heads that divide {dim}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def memory(self, enc: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, H, S, Dh)`` over the encoder output ``enc (B, S, D)``."""
        B, S, _ = enc.shape
        k = self.k_proj(enc).view(B, S, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(enc).view(B, S, self.heads, self.head_dim).transpose(1, 2)
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> Tensor:
        """``x (B, T, D)`` or one step ``(B, D)`` attending to ``k, v (B, H, S, Dh)`` where
        ``valid (B, S)`` is true; a row with no valid position gets zeros (an empty source)."""
        step = x.dim() == 2
        if step:
            x = x[:, None]
        B, T, D = x.shape
        if k.shape[2] == 0:   # init_state's empty source: nothing to read
            y = x.new_zeros(B, T, D)
            return y[:, 0] if step else y
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        empty = ~valid.any(1)                                          # (B,)
        # An all-false mask row would make softmax NaN; open it and zero the output instead.
        mask = (valid | empty[:, None])[:, None, None, :]              # (B, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)    # (B, H, T, Dh)
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, D))
        y = y.masked_fill(empty[:, None, None], 0.0)
        return y[:, 0] if step else y


__all__ = ["CrossAttention"]

"""Cross-attention against a written-out softmax in float64: masked memory positions are never
read, a row with no memory gets zeros, one step equals a sequence's position."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.nn.cross_attention import CrossAttention


def reference(cross: CrossAttention, x, enc, valid):
    """Per row and head: softmax over the valid memory positions, written out."""
    B, T, D = x.shape
    H, Dh = cross.heads, cross.head_dim
    out = torch.zeros(B, T, D, dtype=x.dtype)
    for b in range(B):
        e = enc[b, valid[b]]                                  # (S_b, D)
        if not len(e):
            continue
        q = cross.q_proj(x[b]).view(T, H, Dh)
        k, v = cross.k_proj(e).view(-1, H, Dh), cross.v_proj(e).view(-1, H, Dh)
        w = torch.einsum("thd,shd->hts", q, k).div(Dh ** 0.5).softmax(-1)
        out[b] = cross.o_proj(torch.einsum("hts,shd->thd", w, v).reshape(T, D))
    return out


def test_matches_reference_and_steps():
    torch.manual_seed(0)
    cross = CrossAttention(16, 4).double()
    x, enc = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(3, 7, 16, dtype=torch.float64)
    valid = torch.arange(7)[None] < torch.tensor([[7], [3], [0]])
    k, v = cross.memory(enc)
    y = cross(x, k, v, valid)
    torch.testing.assert_close(y, reference(cross, x, enc, valid))
    assert (y[2] == 0).all()                                   # no memory: zeros, not NaN
    torch.testing.assert_close(cross(x[:, 2], k, v, valid), y[:, 2])
    enc2 = enc.clone()
    enc2[1, 3:] = 9.0                                          # past row 1's valid positions
    torch.testing.assert_close(cross(x, *cross.memory(enc2), valid)[1], y[1])
    empty = cross(x, *cross.memory(enc[:, :0]), valid[:, :0])
    assert empty.shape == x.shape and (empty == 0).all()


def test_heads_must_divide_dim():
    with pytest.raises(ConfigError, match="dim = 30 does not divide into heads = 4"):
        CrossAttention(30, 4)

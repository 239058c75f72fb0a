"""prefix_linear_attention: JRT-RNN's prefix linear attention against its equation, and its masks.

The shared conformance suite runs the example options (a one-token prefix, so any chunking is
exact). These tests use longer prefixes: the parallel face against an explicit quadratic
float64 reference written with the kernel 1 + s + s²/2 (not the feature map); chunked and
token-by-token continuation after the prefix, including a first call that straddles its end;
non-causality inside the prefix and causality after it; and how the prefix length is given.
"""

from __future__ import annotations

import math

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.state import StateError

DIM, B, T, P = 16, 2, 17, 6
TOL = dict(atol=1e-10, rtol=1e-10)


def make(**options):
    options = {"heads": 2, "feature_dim": 3, "chunk_size": 4, **options}
    m = seqlab.mixers.build("prefix_linear_attention", dim=DIM, **options).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@torch.no_grad()
def reference(m, x, M):
    """y_i = sum over prefix encoder keys j < M and causal keys j <= i of κ(q_i, k_j) v_j,
    divided by the sum of the same κ, with κ(q, k) = 1 + s + s²/2, s = q·k / sqrt(d)."""
    Bx, Tx, _ = x.shape
    H, Dv, d = m.heads, m.head_dim, m.cfg.feature_dim

    def heads(t, w):
        return t.view(Bx, -1, H, w).transpose(1, 2)                     # (B, H, T, w)

    def kernel(q, k):
        s = q @ k.transpose(-1, -2) / math.sqrt(d)
        return 1 + s + s * s / 2

    q, k, v = heads(m.q_proj(x), d), heads(m.k_proj(x), d), heads(m.v_proj(x), Dv)
    ke, ve = heads(m.k_enc_proj(x[:, :M]), d), heads(m.v_enc_proj(x[:, :M]), Dv)
    A = kernel(q, k) * torch.ones(Tx, Tx, dtype=x.dtype).tril()         # causal part
    Ae = kernel(q, ke)                                                  # every token sees the whole prefix
    o = (A @ v + Ae @ ve) / (A.sum(-1, keepdim=True) + Ae.sum(-1, keepdim=True))
    return m.o_proj(o.transpose(1, 2).reshape(Bx, Tx, -1))


@pytest.mark.parametrize("M", [0, 1, P, T, T + 5], ids=lambda M: f"prefix{M}")
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_parallel_equals_reference(M, chunk_size):
    m = make(prefix=M, chunk_size=chunk_size)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, s = m(x)
    torch.testing.assert_close(y, reference(m, x, min(M, T)), **TOL)
    assert s.prefix == 0


def test_continuation_after_the_prefix_is_exact():
    """A first call that straddles the prefix end, then ragged chunks or single steps."""
    m = make(prefix=P)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y_full, s_full = m(x)
    for first in (P, P + 3):
        ys, s = [], m.init_state(B, dtype=torch.float64)
        for lo, hi in [(0, first), (first, first + 1), (first + 1, 13), (13, T)]:
            y_c, s = m(x[:, lo:hi], s)
            ys.append(y_c)
        torch.testing.assert_close(torch.cat(ys, 1), y_full, **TOL)
        torch.testing.assert_close(s.S, s_full.S, **TOL)
        y_head, s = m(x[:, :first])
        ys = [y_head]
        for t in range(first, T):
            y_t, s = m.step(x[:, t], s)
            ys.append(y_t[:, None])
        torch.testing.assert_close(torch.cat(ys, 1), y_full, **TOL)
        torch.testing.assert_close(s.S, s_full.S, **TOL)


def test_noncausal_inside_the_prefix_causal_after_it():
    m = make(prefix=P)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, _ = m(x)
    # a later prefix token changes every earlier prefix output (and all later ones)
    x2 = x.clone()
    x2[:, P - 1] = torch.randn(B, DIM, dtype=torch.float64)
    y2, _ = m(x2)
    assert ((y2 - y).abs().amax((0, 2)) > 1e-6).all()
    # after the prefix: changing x[t+1:] leaves y[:t+1] unchanged, for every t >= P - 1
    for t in range(P - 1, T - 1):
        x3 = x.clone()
        x3[:, t + 1:] = torch.randn_like(x3[:, t + 1:])
        y3, _ = m(x3)
        torch.testing.assert_close(y3[:, :t + 1], y[:, :t + 1], atol=0, rtol=0)
        assert (y3[:, t + 1] - y[:, t + 1]).abs().max() > 1e-6


def test_prefix_length_per_call_and_per_state():
    m = make()                                                          # config default 0: causal
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    ref = reference(m, x, P)
    y_call, s = m(x, prefix=P)
    y_state, _ = m(x, m.init_state(B, dtype=torch.float64, prefix=P))
    torch.testing.assert_close(y_call, ref, **TOL)
    torch.testing.assert_close(y_state, ref, **TOL)
    torch.testing.assert_close(m(x)[0], reference(m, x, 0), **TOL)
    assert (m(x)[0] - ref).abs().max() > 1e-6                           # the prefix matters
    # a prompt shorter than the prefix is read whole as the prefix, once
    y_short, s_short = m(x[:, :4], prefix=P)
    torch.testing.assert_close(y_short, reference(m, x[:, :4], 4), **TOL)
    assert s_short.prefix == 0
    # an empty call reads nothing, so the prefix is still to come
    y_empty, s_empty = m(x[:, :0], prefix=P)
    assert y_empty.shape == (B, 0, DIM) and s_empty.prefix == P


def test_prefix_misuse_is_named():
    m = make()
    x = torch.randn(B, 5, DIM, dtype=torch.float64)
    _, s = m(x)
    with pytest.raises(ValueError, match="init_state"):
        m(x, s, prefix=3)
    with pytest.raises(ConfigError, match="prefix = -1"):
        m(x, prefix=-1)
    with pytest.raises(ConfigError, match="prefix = -2"):
        make(prefix=-2)
    # states waiting for different prefixes cannot be joined into one batch
    a, b = m.init_state(1, prefix=2), m.init_state(1, prefix=3)
    with pytest.raises(StateError, match="plain fields differ"):
        type(a).cat([a, b])


def test_state_is_constant_in_length_and_normaliser_positive():
    m = make(prefix=P)
    F = 1 + 3 + 9
    for L in (1, 40):
        _, s = m(torch.randn(B, L, DIM, dtype=torch.float64))
        assert s.S.shape == (B, 2, F, DIM // 2 + 1)
        # every pair's kernel is >= 1/2, so the normaliser of any query is >= (keys) / 2
        q = torch.randn(3, 3, dtype=torch.float64)
        feats = seqlab.mixers.prefix_linear_attention.taylor_features(q)
        z = feats @ s.S[..., -1].unsqueeze(-1)                          # (B, H, 3, 1)
        assert (z >= (min(L, P) + L) / 2 - 1e-9).all()

"""Aaren-specific checks: against explicit softmax attention of the learned query, the scan."""

from __future__ import annotations

import math

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.aaren import combine, prefix_scan

TOL = dict(atol=1e-10, rtol=1e-10)


def make(dim=12, heads=3):
    m = seqlab.mixers.build("aaren", dim=dim, heads=heads).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def naive_attention(m, x):
    """o_t = sum_{s<=t} softmax_s(q . k_s / sqrt(Dh)) v_s per head, one prefix at a time."""
    Bsz, L, D = x.shape
    H, Dh = m.heads, D // m.heads
    k = (x @ m.k_proj.weight.T).view(Bsz, L, H, Dh)
    v = (x @ m.v_proj.weight.T).view(Bsz, L, H, Dh)
    outs = []
    for t in range(L):
        scores = torch.einsum("bshd,hd->bhs", k[:, :t + 1], m.query) / math.sqrt(Dh)  # (B, H, t+1)
        p = torch.softmax(scores, -1)
        o = torch.einsum("bhs,bshd->bhd", p, v[:, :t + 1])                           # (B, H, Dh)
        outs.append(o.reshape(Bsz, D))
    return m.out_proj(torch.stack(outs, 1))


@pytest.mark.parametrize("heads", [1, 3, 12])
def test_parallel_equals_explicit_softmax_attention(heads):
    m = make(heads=heads)
    x = torch.randn(2, 21, 12, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
        torch.testing.assert_close(y, naive_attention(m, x), **TOL)


def test_continuation_attends_over_the_whole_prefix():
    m = make()
    x = torch.randn(2, 17, 12, dtype=torch.float64)
    with torch.no_grad():
        _, s = m(x[:, :6])
        y, _ = m(x[:, 6:], s)
        torch.testing.assert_close(y, naive_attention(m, x)[:, 6:], **TOL)


def test_large_scores_stay_finite_and_exact():
    m = make()
    with torch.no_grad():
        m.query.mul_(3000.0)  # scores in the 1000s: exp(s) overflows float64 without the running max
    x = torch.randn(2, 13, 12, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        assert torch.isfinite(y).all() and torch.isfinite(s.u).all()
        torch.testing.assert_close(y, naive_attention(m, x), **TOL)
        ys, st = [], m.init_state(2, dtype=torch.float64)
        for t in range(13):
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-9, rtol=1e-9)


def test_fresh_state_is_neutral_without_nan():
    m = make()
    x = torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True)
    s0 = m.init_state(2, dtype=torch.float64)
    assert torch.isinf(s0.m).all() and (s0.m < 0).all()
    y0, _ = m(x)
    y1, s1 = m(x, s0)
    torch.testing.assert_close(y1, y0, atol=0, rtol=0)
    y1.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    # Two empty summaries combine to the empty summary (no exp(-inf + inf) = NaN).
    e = combine((s0.m, s0.u, s0.w), (s0.m, s0.u, s0.w))
    assert torch.isinf(e[0]).all() and (e[1] == 0).all() and (e[2] == 0).all()


@pytest.mark.parametrize("L", [1, 2, 7, 8, 33])
def test_prefix_scan_equals_sequential_fold(L):
    m = torch.randn(3, L, dtype=torch.float64) * 5
    u = torch.randn(3, L, 4, dtype=torch.float64)
    w = torch.rand(3, L, dtype=torch.float64)
    ms, us, ws = prefix_scan(m, u, w)
    acc = (m[:, 0], u[:, 0], w[:, 0])
    for t in range(L):
        if t:
            acc = combine(acc, (m[:, t], u[:, t], w[:, t]))
        torch.testing.assert_close(ms[:, t], acc[0], **TOL)
        torch.testing.assert_close(us[:, t], acc[1], **TOL)
        torch.testing.assert_close(ws[:, t], acc[2], **TOL)


def test_state_is_constant_size():
    m = make(dim=12, heads=3)
    assert m.state_size(1) == m.state_size(10_000) == 12 + 2 * 3
    _, s = m(torch.randn(2, 40, 12, dtype=torch.float64))
    assert s.m.shape == (2, 3) and s.u.shape == (2, 3, 4) and s.w.shape == (2, 3)


@pytest.mark.parametrize("dim,options,match", [
    (30, {"heads": 4}, r"dim = 30 does not divide into heads = 4"),
    (8, {"heads": 0}, r"AarenConfig.heads = 0 is not allowed: expected a positive int"),
    (8, {"heads": 2.0}, r"AarenConfig.heads = 2.0 is not allowed: expected int"),
    (8, {"head": 2}, r"AarenConfig has no option 'head'"),
], ids=["indivisible", "zero", "float", "typo"])
def test_option_errors_name_field_and_value(dim, options, match):
    with pytest.raises(ConfigError, match=match):
        seqlab.mixers.build("aaren", dim=dim, **options)

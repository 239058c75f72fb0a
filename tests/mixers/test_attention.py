"""Attention-specific checks: reference softmax attention, GQA, windows, ragged caches."""

import math

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.nn.rotary import apply_rotary, rotary_angles

D = 32


def build(**opts):
    m = seqlab.mixers.build("attention", dim=D, **opts).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def reference(m, x):
    """Softmax attention written out with explicit loops over heads and a masked score matrix."""
    B, T, _ = x.shape
    H, Hkv, Dh = m.heads, m.kv_heads, m.head_dim
    q = m.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
    k = m.k_proj(x).view(B, T, Hkv, Dh).transpose(1, 2)
    v = m.v_proj(x).view(B, T, Hkv, Dh).transpose(1, 2)
    cos, sin = rotary_angles(torch.arange(T).expand(B, T), Dh, m.cfg.rope_theta, dtype=x.dtype)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    out = torch.empty(B, H, T, Dh, dtype=x.dtype)
    i = torch.arange(T)
    allowed = i[None, :] <= i[:, None]
    if m.cfg.window:
        allowed &= i[None, :] > i[:, None] - m.cfg.window
    for h in range(H):
        g = h // (H // Hkv)  # query head h reads kv head g
        s = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(Dh)
        s = s.masked_fill(~allowed, float("-inf"))
        out[:, h] = torch.softmax(s, -1) @ v[:, g]
    return m.o_proj(out.transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("opts", [dict(heads=4), dict(heads=4, kv_heads=1), dict(heads=8, kv_heads=2),
                                  dict(heads=4, window=5)],
                         ids=["mha", "mqa", "gqa", "window5"])
def test_matches_reference(opts):
    m = build(**opts)
    x = torch.randn(2, 17, D, dtype=torch.float64)
    y, _ = m(x)
    torch.testing.assert_close(y, reference(m, x), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("opts", [dict(), dict(window=4)], ids=["full", "window4"])
def test_ragged_rows_equal_separate_runs(opts):
    """Rows of one cache at different lengths decode like each row alone."""
    m = build(**opts)
    lens = [3, 9, 6]
    xs = [torch.randn(1, n + 5, D, dtype=torch.float64) for n in lens]
    states = [m(x[:, :n])[1] for x, n in zip(xs, lens)]
    joined = type(states[0]).cat(states)
    assert joined.lengths == tuple(lens)
    cont = torch.cat([x[:, n:n + 5] for x, n in zip(xs, lens)])
    y, s = m(cont, joined)
    for b, (x, n) in enumerate(zip(xs, lens)):
        y_alone, _ = m(x)
        torch.testing.assert_close(y[b], y_alone[0, n:], atol=1e-10, rtol=1e-8)
    assert s.lengths == tuple(n + 5 for n in lens)


def test_truncate_per_row_then_continue():
    m = build()
    x = torch.randn(2, 12, D, dtype=torch.float64)
    _, s = m(x[:, :10])
    s = s.truncate([4, 7])  # row 0 rewinds to 4 tokens, row 1 to 7
    y, _ = m(torch.stack([x[0, 4:6], x[1, 7:9]]), s)
    full, _ = m(x)
    torch.testing.assert_close(y[0], full[0, 4:6], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(y[1], full[1, 7:9], atol=1e-10, rtol=1e-8)
    with pytest.raises(seqlab.state.StateError, match="cannot truncate row 0"):
        s.truncate([5, 1])


def test_cache_grows_in_place_and_old_state_stays_valid():
    m = build()
    x = torch.randn(1, 200, D, dtype=torch.float64)
    _, s = m(x[:, :1])
    states = [s]
    for t in range(1, 200):
        _, s = m.step(x[:, t], s)
        states.append(s)
    assert s.capacity >= 200 and s.capacity < 400  # amortised doubling, not one alloc per token
    # A snapshot taken long ago still continues correctly (its live part was never overwritten).
    y, _ = m(x[:, 50:52], states[49])
    full, _ = m(x[:, :52])
    torch.testing.assert_close(y, full[:, 50:52], atol=1e-10, rtol=1e-8)


def test_training_through_a_carried_cache_has_gradients():
    m = build().float()
    x = torch.randn(2, 8, D, requires_grad=True)
    _, s = m(x[:, :5])
    y, _ = m(x[:, 5:], s)
    y.sum().backward()
    assert x.grad[:, :5].abs().sum() > 0  # the continuation depends on the cached prefix


def test_errors_name_the_numbers():
    with pytest.raises(ConfigError, match=r"dim = 30 does not divide into heads = 4"):
        seqlab.mixers.build("attention", dim=30, heads=4)
    with pytest.raises(ConfigError, match=r"kv_heads = 3 .*divisor of heads = 4"):
        seqlab.mixers.build("attention", dim=32, heads=4, kv_heads=3)
    with pytest.raises(ConfigError, match=r"no option 'head'.*known options: heads"):
        seqlab.mixers.build("attention", dim=32, head=4)
    with pytest.raises(ConfigError, match=r"heads = 'four'.*int"):
        seqlab.mixers.build("attention", dim=32, heads="four")

"""linear_attention: every decay and feature map against a per-token reference.

The shared conformance suite covers the default options; these tests check the
chunkwise parallel face of each variant against the recurrence written out
token by token, that chunk_size changes nothing, that memory stays O(L) and
that strong gated decays do not overflow.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import seqlab
from seqlab.config import ConfigError

DIM, B, T = 32, 3, 23
TOL = dict(atol=1e-9, rtol=1e-9)
VARIANTS = [
    pytest.param(decay, fmap, id=f"{decay}-{fmap}")
    for decay in ("none", "fixed", "gated") for fmap in ("identity", "elu1")
]


def make(decay="gated", feature_map="identity", dtype=torch.float64, **options):
    options = {"heads": 2, "chunk_size": 5, **options}
    m = seqlab.mixers.build("linear_attention", dim=DIM, decay=decay,
                            feature_map=feature_map, **options).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def reference(m, x, S=None):
    """The recurrence token by token, written from the paper, not the chunk code."""
    cfg, H = m.cfg, m.heads
    Bx, Tx, D = x.shape
    Dh = D // H

    def heads(t):
        return t.view(Bx, Tx, H, Dh)

    q, k, v = heads(m.q_proj(x)), heads(m.k_proj(x)), heads(m.v_proj(x))
    if cfg.feature_map == "elu1":
        q, k = F.elu(q) + 1, F.elu(k) + 1
    q = q / math.sqrt(Dh)
    if cfg.decay == "none":
        a = torch.ones(Bx, Tx, H, Dh, dtype=x.dtype)
    elif cfg.decay == "fixed":
        gamma = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(H)], dtype=x.dtype)
        a = gamma[None, None, :, None].expand(Bx, Tx, H, Dh)
    else:
        a = torch.sigmoid(heads(m.gate_proj(x))) ** (1 / cfg.gate_normalizer)
    S = torch.zeros(Bx, H, Dh, Dh, dtype=x.dtype) if S is None else S
    outs = []
    for t in range(Tx):
        S = a[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, 1)                                   # (B, T, H, Dv)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.norm.eps) * m.norm.weight
    o = o.reshape(Bx, Tx, D)
    if cfg.output_gate:
        o = o * F.silu(m.g_proj(x))
    return m.o_proj(o), S


@pytest.mark.parametrize("decay, fmap", VARIANTS)
def test_parallel_equals_reference(decay, fmap):
    m = make(decay, fmap)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, s = m(x)
    y_ref, S_ref = reference(m, x)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s.S, S_ref, **TOL)
    # continuing from a non-zero state
    y2, s2 = m(x[:, :7], s)
    y2_ref, S2_ref = reference(m, x[:, :7], S_ref)
    torch.testing.assert_close(y2, y2_ref, **TOL)
    torch.testing.assert_close(s2.S, S2_ref, **TOL)


@pytest.mark.parametrize("decay, fmap", VARIANTS)
def test_step_equals_parallel(decay, fmap):
    m = make(decay, fmap)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, s_par = m(x)
    s, ys = m.init_state(B), []
    for t in range(T):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    torch.testing.assert_close(s.S, s_par.S, **TOL)


@pytest.mark.parametrize("decay, fmap", VARIANTS)
def test_chunked_calls_equal_whole(decay, fmap):
    m = make(decay, fmap, output_gate=False)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, s_full = m(x)
    ys, s = [], None
    for lo, hi in [(0, 4), (4, 5), (5, 17), (17, 23)]:
        y_c, s = m(x[:, lo:hi], s)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, 1), y, **TOL)
    torch.testing.assert_close(s.S, s_full.S, **TOL)


@pytest.mark.parametrize("decay", ["none", "fixed", "gated"])
def test_chunk_size_does_not_change_outputs(decay):
    x = torch.randn(2, 70, DIM, dtype=torch.float64)
    base = make(decay, chunk_size=64)
    y0, s0 = base(x)
    # 1: per-token chunks; 16/17: one sub-chunk exact / ragged; 70, 128: one chunk, padded.
    for C in (1, 3, 16, 17, 37, 70, 128):
        m = make(decay, chunk_size=C)
        m.load_state_dict(base.state_dict())
        y, s = m(x)
        torch.testing.assert_close(y, y0, **TOL, msg=lambda e: f"chunk_size {C}: {e}")
        torch.testing.assert_close(s.S, s0.S, **TOL)


def test_strong_gated_decay_stays_finite():
    """Gates near 0: cumulative log decays reach -2000 per chunk; exp(-b) would overflow."""
    m = make("gated", dtype=torch.float32, chunk_size=64)
    with torch.no_grad():
        m.gate_proj[1].bias.fill_(-500.0)                     # log a ~ -31 per token
        m.gate_proj[1].bias[: DIM // 2].fill_(5.0)            # other dims: nearly no decay
    x = torch.randn(2, 100, DIM, requires_grad=True)
    y, s = m(x)
    assert torch.isfinite(y).all() and torch.isfinite(s.S).all()
    y_ref, S_ref = reference(m, x.detach())
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_bfloat16_inputs_keep_the_state_dtype():
    m = make("gated").to(torch.bfloat16)
    x = torch.randn(B, T, DIM, dtype=torch.bfloat16)
    y, s = m(x)
    assert y.dtype == torch.bfloat16 and s.S.dtype == torch.bfloat16
    y32, s32 = m(x, m.init_state(B, dtype=torch.float32))
    assert s32.S.dtype == torch.float32
    y_t, s_t = m.step(x[:, 0], s32)
    assert y_t.dtype == torch.bfloat16 and s_t.S.dtype == torch.float32
    assert torch.isfinite(y32.float()).all()


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("decay", ["none", "fixed", "gated"])
def test_parallel_memory_is_linear_in_length(decay):
    """No tensor grows like L^2: the largest one grows as L (fwd + bwd)."""
    m = seqlab.mixers.build("linear_attention", dim=16, heads=2, decay=decay, chunk_size=32)
    largest = {}
    for L in (1024, 4096):
        x = torch.randn(1, L, 16, requires_grad=True)
        with _LargestTensor() as mode:
            y, _ = m(x)
            y.sum().backward()
        largest[L] = mode.largest
    assert largest[4096] <= 4 * largest[1024]
    assert largest[4096] < 4096 * 4096 / 8


@pytest.mark.slow
def test_long_sequence_runs():
    m = seqlab.mixers.build("linear_attention", dim=16, heads=2)
    x = torch.randn(1, 16384, 16, requires_grad=True)
    y, s = m(x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and s.S.shape == (1, 2, 8, 8)


def test_option_errors_name_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"dim = 32 does not divide into heads = 5"):
        seqlab.mixers.build("linear_attention", dim=32, heads=5)
    with pytest.raises(ConfigError, match=r"decay = 'exp' .*'none', 'fixed', 'gated'"):
        seqlab.mixers.build("linear_attention", dim=32, decay="exp")
    with pytest.raises(ConfigError, match=r"feature_map = 'relu' .*'identity', 'elu1'"):
        seqlab.mixers.build("linear_attention", dim=32, feature_map="relu")
    with pytest.raises(ConfigError, match=r"chunk_size = 0 is not allowed: expected a positive int"):
        seqlab.mixers.build("linear_attention", dim=32, chunk_size=0)
    with pytest.raises(ConfigError, match=r"gate_normalizer = -1.0 is not allowed"):
        seqlab.mixers.build("linear_attention", dim=32, gate_normalizer=-1)
    with pytest.raises(ConfigError, match=r"no option 'window'"):
        seqlab.mixers.build("linear_attention", dim=32, window=4)


def test_state_size_and_cost():
    m = seqlab.mixers.build("linear_attention", dim=64, heads=4)
    assert m.state_size(1) == m.state_size(10_000) == 4 * 16 * 16
    assert m.init_state(3).S.shape == (3, 4, 16, 16)
    assert "O(L" in type(m).cost

"""Tests specific to the ``mamba`` mixer (the shared suite is test_conformance.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.mamba import Mamba, MambaState, selective_scan

F64 = torch.float64
TOL = dict(atol=1e-10, rtol=1e-8)


def make(dim=16, dtype=F64, **options):
    m = seqlab.mixers.build("mamba", dim=dim, **{"d_state": 4, **options}).to(dtype)
    with torch.no_grad():   # move away from the init so that no term can hide
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def naive_mamba(m: Mamba, x, conv0, h0):
    """The layer written out token by token from the paper's equations.

    x: (B, T, dim); conv0: (B, E, K-1) earlier conv inputs; h0: (B, E, N).
    Uses F.conv1d for the short convolution and a plain loop for the SSM, so it
    shares no code with the module's chunked scan or its step.
    """
    E, N, K = m.d_inner, m.cfg.d_state, m.cfg.d_conv
    xi, z = F.linear(x, m.in_proj.weight, m.in_proj.bias).split(E, dim=-1)    # (B, T, E)
    seq = torch.cat([conv0, xi.transpose(1, 2)], dim=2)                        # (B, E, K-1+T)
    xc = F.silu(F.conv1d(seq, m.conv_weight[:, None, :], m.conv_bias, groups=E))  # (B, E, T)
    xc = xc.transpose(1, 2)                                                    # (B, T, E)
    A = -torch.exp(m.A_log)                                                    # (E, N)
    h, ys = h0, []
    for t in range(x.shape[1]):
        dbc = xc[:, t] @ m.x_proj.weight.T
        dt_in, b, c = dbc[:, :m.dt_rank], dbc[:, m.dt_rank:m.dt_rank + N], dbc[:, m.dt_rank + N:]
        dt = F.softplus(dt_in @ m.dt_proj.weight.T + m.dt_proj.bias)          # (B, E)
        for e in range(E):   # one channel at a time, straight from the recurrence
            h = h.clone()
            h[:, e] = torch.exp(dt[:, e, None] * A[e]) * h[:, e] + dt[:, e, None] * b * xc[:, t, e, None]
        y = (h * c[:, None, :]).sum(-1) + m.D * xc[:, t]                        # (B, E)
        ys.append(F.linear(y * F.silu(z[:, t]), m.out_proj.weight, m.out_proj.bias))
    return torch.stack(ys, 1), seq[:, :, -(K - 1):], h


@pytest.mark.parametrize("chunk,d_conv,bias", [(5, 4, False), (1, 2, True), (64, 3, False)],
                         ids=["chunk5-conv4", "chunk1-conv2-bias", "chunk64-conv3"])
def test_parallel_equals_naive_recurrence(chunk, d_conv, bias):
    m = make(chunk_size=chunk, d_conv=d_conv, bias=bias)
    B, T = 2, 13
    x = torch.randn(B, T, 16, dtype=F64)
    start = MambaState(conv=torch.randn(B, m.d_inner, d_conv - 1, dtype=F64),
                       h=torch.randn(B, m.d_inner, 4, dtype=F64))
    y, s = m(x, start)
    y_ref, conv_ref, h_ref = naive_mamba(m, x, start.conv, start.h)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s.conv, conv_ref, **TOL)
    torch.testing.assert_close(s.h, h_ref, **TOL)


def test_chunk_size_does_not_change_output_or_gradients():
    base = make(chunk_size=16)
    x = torch.randn(3, 37, 16, dtype=F64)
    results = []
    for chunk in (1, 3, 8, 37, 100):
        m = make(chunk_size=chunk)
        m.load_state_dict(base.state_dict())
        xg = x.clone().requires_grad_()
        y, s = m(xg)
        (y.square().sum() + s.h.sum()).backward()
        results.append((y, s.h, xg.grad, [p.grad for p in m.parameters()]))
    y0, h0, gx0, gp0 = results[0]
    for y, h, gx, gp in results[1:]:
        torch.testing.assert_close(y, y0, **TOL)
        torch.testing.assert_close(h, h0, **TOL)
        torch.testing.assert_close(gx, gx0, **TOL)
        for a, b in zip(gp, gp0):
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("chunk", [1, 3, 4, 16], ids=lambda c: f"chunk{c}")
def test_selective_scan_gradcheck(chunk):
    B, L, E, N = 2, 9, 3, 2
    dt = (torch.rand(B, L, E, dtype=F64) + 0.1).requires_grad_()
    A = (-torch.rand(E, N, dtype=F64) * 2 - 0.1).requires_grad_()
    rest = [torch.randn(*shape, dtype=F64, requires_grad=True)
            for shape in ((B, L, N), (B, L, N), (B, L, E), (B, E, N))]
    inputs = (dt, A, *rest)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk), inputs)
    # Only one of the two outputs used: the other's gradient arrives as None.
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk)[0], inputs)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk)[1], inputs)


def test_large_decays_stay_finite_and_exact():
    """dt * A near -5000 per token: a scan that exponentiated exp(-cumsum) would overflow."""
    m = make(dim=16, dtype=torch.float32, chunk_size=16)
    with torch.no_grad():
        m.dt_proj.bias.fill_(50.0)                       # dt ~ 50
        m.A_log.fill_(math.log(100.0))                   # A = -100
    x = torch.randn(2, 20, 16)
    y, s = m(x)
    assert torch.isfinite(y).all() and torch.isfinite(s.h).all()
    st, ys = m.init_state(2), []
    for t in range(20):
        y_t, st = m.step(x[:, t], st)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dt_min,dt_max", [(0.001, 0.1), (0.01, 0.02), (0.05, 0.05)],
                         ids=["default", "narrow", "point"])
def test_dt_init_range(dt_min, dt_max):
    m = seqlab.mixers.build("mamba", dim=64, dt_min=dt_min, dt_max=dt_max)
    dt = F.softplus(m.dt_proj.bias.detach().double())
    assert dt.shape == (128,)
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    if dt_max > dt_min:   # log-uniform: both ends of the range are reached
        log_span = math.log(dt_max / dt_min)
        pos = torch.log(dt / dt_min) / log_span                      # in [0, 1]
        assert pos.min() < 0.1 and pos.max() > 0.9
        assert abs(pos.mean().item() - 0.5) < 0.1


def test_other_inits():
    m = seqlab.mixers.build("mamba", dim=40, d_state=5, expand=3)
    assert m.d_inner == 120 and m.dt_rank == math.ceil(40 / 16)
    torch.testing.assert_close(-torch.exp(m.A_log.detach()),
                               -torch.arange(1, 6, dtype=torch.float32).expand(120, 5))
    assert torch.equal(m.D.detach(), torch.ones(120))
    assert m.x_proj.weight.shape == (m.dt_rank + 10, 120)
    assert seqlab.mixers.build("mamba", dim=40, dt_rank=7).dt_proj.weight.shape == (80, 7)
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv_bias is not None
    m2 = seqlab.mixers.build("mamba", dim=8, bias=True, conv_bias=False)
    assert m2.in_proj.bias is not None and m2.conv_bias is None


@pytest.mark.parametrize("options,field,allowed", [
    ({"d_state": 0}, "d_state", ">= 1"),
    ({"d_conv": 0}, "d_conv", ">= 1"),
    ({"expand": 0}, "expand", ">= 1"),
    ({"dt_rank": 0}, "dt_rank", "None"),
    ({"dt_min": 0.0}, "dt_min", "positive"),
    ({"dt_min": 0.1, "dt_max": 0.01}, "dt_max", ">= dt_min"),
    ({"dt_max": math.inf}, "dt_max", "finite"),
    ({"chunk_size": 0}, "chunk_size", ">= 1"),
    ({"d_state": 2.5}, "d_state", "int"),
    ({"bias": 1}, "bias", "bool"),
], ids=["d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max-order", "dt_max-inf",
        "chunk_size", "d_state-type", "bias-type"])
def test_bad_options_name_field_value_and_allowed(options, field, allowed):
    with pytest.raises(ConfigError) as err:
        seqlab.mixers.build("mamba", dim=16, **options)
    msg = str(err.value)
    assert f"MambaConfig.{field} = {options[field]!r}" in msg and allowed in msg


def test_unknown_option_lists_known_ones():
    with pytest.raises(ConfigError, match="no option 'd_model'.*d_state.*chunk_size"):
        seqlab.mixers.build("mamba", dim=16, d_model=3)


def test_state_shapes_and_requested_dtype_are_kept():
    m = make(dim=16, d_conv=4)
    s = m.init_state(3, dtype=torch.float32)
    assert s.conv.shape == (3, 32, 3) and s.h.shape == (3, 32, 4)
    assert s.conv.dtype == s.h.dtype == torch.float32
    _, s2 = m(torch.randn(3, 5, 16, dtype=F64), s)
    _, s3 = m.step(torch.randn(3, 16, dtype=F64), s2)
    assert s2.h.dtype == s2.conv.dtype == s3.h.dtype == s3.conv.dtype == torch.float32
    assert m.init_state(2).h.dtype == F64                    # default: the parameters' dtype
    _, s4 = m(torch.randn(3, 50, 16, dtype=F64), s)
    for t in (s4.conv, s4.h):   # the state owns its memory, not a view of the sequence's
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert m.state_size(10**6) == 32 * 3 + 32 * 4             # constant in the length


def test_bfloat16_runs_with_float32_scan():
    m32 = make(dim=16, dtype=torch.float32, chunk_size=4)
    m16 = make(dim=16, dtype=torch.bfloat16, chunk_size=4)
    m16.load_state_dict({k: v.bfloat16() for k, v in m32.state_dict().items()})
    x = torch.randn(2, 30, 16)
    y32, _ = m32(x)
    y16, s16 = m16(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and s16.h.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=0.02, rtol=0.05)
    y16.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m16.parameters())


def test_empty_sequence_keeps_the_state():
    m = make()
    _, s = m(torch.randn(2, 6, 16, dtype=F64))
    y, s2 = m(torch.zeros(2, 0, 16, dtype=F64), s)
    assert y.shape == (2, 0, 16)
    torch.testing.assert_close(s2.h, s.h, **TOL)
    torch.testing.assert_close(s2.conv, s.conv, **TOL)

"""Tests specific to the ``mamba`` mixer (the shared suite is test_conformance.py)."""

from __future__ import annotations

import math
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.mamba import Mamba, MambaState, clipped_scan, selective_scan

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


# -- Stuffed Mamba's training-free mitigations (decay_scale, input_scale, state_norm) ----------
#
# The conformance suite builds mixers with example_options only, so the faces are proven
# equal here with each option on, in float64, as test_conformance.py does.

DIM, B, T = 32, 3, 23
MITIGATIONS = {
    "decay_scale": {"decay_scale": 0.8},
    "input_scale": {"input_scale": 0.6},
    "state_norm": {"state_norm": "clipping"},   # a bound that clips, see with_mitigation
    "state_norm_per_channel": {"state_norm": "per-channel"},
    "all": {"decay_scale": 0.9, "input_scale": 0.6, "state_norm": "clipping"},
}
MITIGATION = pytest.mark.parametrize("option", sorted(MITIGATIONS))


def channel_norms(m, x):
    """(B, T, E) norms of every channel's state row after every token, via the step."""
    s, out = m.init_state(x.shape[0], dtype=x.dtype), []
    for t in range(x.shape[1]):
        _, s = m.step(x[:, t], s)
        out.append(s.h.norm(dim=-1))
    return torch.stack(out, 1)


def with_mitigation(option, base=None, x=None, dim=DIM, **extra):
    """A mixer with ``MITIGATIONS[option]`` on and ``base``'s weights (or fresh ones).

    "clipping" becomes a state_norm bound of 0.3 x the largest channel norm that the
    unmitigated mixer reaches on ``x``, so that the bound is active on that input;
    "per-channel" becomes one bound per channel, 0.5 x that channel's largest norm.
    """
    base = make(dim=dim, chunk_size=5, **extra) if base is None else base
    options = dict(MITIGATIONS[option])
    if options.get("state_norm") == "clipping":
        with torch.no_grad():
            options["state_norm"] = 0.3 * channel_norms(base, x).max().item()
    elif options.get("state_norm") == "per-channel":
        with torch.no_grad():
            options["state_norm"] = tuple((0.5 * channel_norms(base, x).amax((0, 1))).tolist())
    m = make(dim=dim, chunk_size=5, **extra, **options)
    m.load_state_dict(base.state_dict())
    return base, m


def naive_mitigated(m: Mamba, x, conv0, h0):
    """``naive_mamba`` with the options written out: λ on the decay, β on B, the clip."""
    E, N, K = m.d_inner, m.cfg.d_state, m.cfg.d_conv
    lam, beta, bound = m.cfg.decay_scale, m.cfg.input_scale, m.cfg.state_norm
    bounds = bound if isinstance(bound, tuple) else (bound,) * E
    xi, z = F.linear(x, m.in_proj.weight, m.in_proj.bias).split(E, dim=-1)
    seq = torch.cat([conv0, xi.transpose(1, 2)], dim=2)
    xc = F.silu(F.conv1d(seq, m.conv_weight[:, None, :], m.conv_bias, groups=E)).transpose(1, 2)
    A = -torch.exp(m.A_log)
    h, ys = h0, []
    for t in range(x.shape[1]):
        dbc = xc[:, t] @ m.x_proj.weight.T
        dt_in, b, c = dbc[:, :m.dt_rank], dbc[:, m.dt_rank:m.dt_rank + N], dbc[:, m.dt_rank + N:]
        dt = F.softplus(dt_in @ m.dt_proj.weight.T + m.dt_proj.bias)
        h = lam * torch.exp(dt[:, :, None] * A) * h + (dt * xc[:, t])[:, :, None] * (beta * b)[:, None, :]
        if bound is not None:
            for e in range(E):   # one channel at a time: its row back onto the ball of radius bound
                norm = h[:, e].norm(dim=-1, keepdim=True)
                h = h.clone()
                h[:, e] = torch.where(norm > bounds[e], h[:, e] * bounds[e] / norm, h[:, e])
        y = (h * c[:, None, :]).sum(-1) + m.D * xc[:, t]
        ys.append(F.linear(y * F.silu(z[:, t]), m.out_proj.weight, m.out_proj.bias))
    return torch.stack(ys, 1), seq[:, :, -(K - 1):], h


def test_mitigations_are_off_by_default_and_off_is_bit_identical():
    cfg = seqlab.mixers.build("mamba", dim=8).cfg
    assert (cfg.decay_scale, cfg.input_scale, cfg.state_norm) == (1.0, 1.0, None)
    base = make(dim=DIM, chunk_size=5)
    explicit = make(dim=DIM, chunk_size=5, decay_scale=1.0, input_scale=1.0, state_norm=None)
    explicit.load_state_dict(base.state_dict())
    x = torch.randn(B, T, DIM, dtype=F64)
    (y0, s0), (y1, s1) = base(x), explicit(x)
    assert torch.equal(y0, y1) and torch.equal(s0.h, s1.h)
    assert set(base.state_dict()) == set(explicit.state_dict())   # no new parameters or buffers


@MITIGATION
def test_mitigated_parallel_equals_naive_recurrence(option):
    x = torch.randn(2, 13, 16, dtype=F64)
    _, m = with_mitigation(option, x=x, dim=16)
    start = MambaState(conv=torch.randn(2, m.d_inner, 3, dtype=F64),
                       h=torch.randn(2, m.d_inner, 4, dtype=F64))
    y, s = m(x, start)
    y_ref, conv_ref, h_ref = naive_mitigated(m, x, start.conv, start.h)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s.conv, conv_ref, **TOL)
    torch.testing.assert_close(s.h, h_ref, **TOL)


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@MITIGATION
def test_mitigated_step_equals_parallel(option, grad):
    x = torch.randn(B, T, DIM, dtype=F64)
    _, m = with_mitigation(option, x=x)
    with torch.set_grad_enabled(grad):
        y_full, s_full = m(x)
        s, ys = m.init_state(B, dtype=F64), []
        for t in range(T):
            y_t, s = m.step(x[:, t], s)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, **TOL)
    torch.testing.assert_close(s.h, s_full.h, **TOL)
    torch.testing.assert_close(s.conv, s_full.conv, **TOL)


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@MITIGATION
def test_mitigated_ragged_chunks_equal_whole(option, grad):
    x = torch.randn(B, T, DIM, dtype=F64)
    _, m = with_mitigation(option, x=x)
    rng = random.Random(zlib.crc32(option.encode()))
    ragged = []
    for _ in range(3):
        sizes, left = [], T
        while left:
            sizes.append(min(left, rng.randint(1, 9)))
            left -= sizes[-1]
        ragged.append(sizes)
    with torch.set_grad_enabled(grad):
        y_full, s_full = m(x)
        for sizes in [[1] * T, [T], *ragged]:
            s, ys, pos = m.init_state(B, dtype=F64), [], 0
            for n in sizes:
                y, s = m(x[:, pos:pos + n], s)
                ys.append(y)
                pos += n
            torch.testing.assert_close(torch.cat(ys, 1), y_full, **TOL,
                                       msg=lambda e: f"chunks {sizes}: {e}")
            torch.testing.assert_close(s.h, s_full.h, **TOL)


@MITIGATION
def test_mitigated_continuation_causality_and_gradients(option):
    x = torch.randn(B, T, DIM, dtype=F64)
    _, m = with_mitigation(option, x=x)
    y_full, _ = m(x)
    _, prefix = m(x[:, :9])
    keep = prefix.clone()
    y_a, _ = m(x[:, 9:], prefix)
    y_b, _ = m(x[:, 9:], prefix)          # a state is a value: used twice, same answer
    torch.testing.assert_close(y_a, y_full[:, 9:], **TOL)
    torch.testing.assert_close(y_b, y_a, **TOL)
    torch.testing.assert_close(prefix.h, keep.h, atol=0, rtol=0)
    x2 = x.clone()
    x2[:, 11:] = torch.randn_like(x2[:, 11:])
    y2, _ = m(x2)
    torch.testing.assert_close(y2[:, :11], y_full[:, :11], **TOL)
    m32 = m.float()
    xg = x.float().requires_grad_()
    y32, _ = m32(xg)
    (y32 * torch.randn_like(y32)).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    for name, p in m32.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@MITIGATION
def test_each_mitigation_changes_the_output(option):
    x = torch.randn(B, T, DIM, dtype=F64)
    base, m = with_mitigation(option, x=x)
    y0, s0 = base(x)
    y1, s1 = m(x)
    assert (y1 - y0).abs().max() > 1e-3 * y0.abs().max()
    assert (s1.h - s0.h).abs().max() > 1e-3 * s0.h.abs().max()


def test_state_norm_is_active_in_the_tests_that_use_it():
    """The "clipping" bound really clips: some channel sits exactly on it, none above."""
    x = torch.randn(B, T, DIM, dtype=F64)
    base, m = with_mitigation("state_norm", x=x)
    norms = channel_norms(m, x)
    bound = m.cfg.state_norm
    assert norms.max() <= bound * (1 + 1e-12)
    assert (norms > bound * (1 - 1e-12)).sum() >= 10
    assert channel_norms(base, x).max() > 3 * bound


def test_per_channel_state_norm_holds_every_channel_to_its_own_bound():
    x = torch.randn(B, T, DIM, dtype=F64)
    base, m = with_mitigation("state_norm_per_channel", x=x)
    bounds = torch.tensor(m.cfg.state_norm, dtype=F64)                       # (E,)
    assert len(bounds) == m.d_inner and bounds.max() > 5 * bounds.min()      # they differ
    norms = channel_norms(m, x)                                              # (B, T, E)
    assert (norms <= bounds * (1 + 1e-12)).all()
    on_bound = (norms > bounds * (1 - 1e-12)).any(1).any(0)                  # (E,)
    assert on_bound.all()   # each bound is half its channel's peak, so every channel reaches it


def test_per_channel_state_norm_needs_one_bound_per_channel():
    with pytest.raises(ConfigError, match=r"3 bounds but .* d_inner = expand \* dim = 2 \* 16 = 32"):
        seqlab.mixers.build("mamba", dim=16, state_norm=(1.0, 2.0, 3.0))
    with pytest.raises(ConfigError, match="MambaConfig.state_norm = \\(1.0, 0.0\\)"):
        seqlab.mixers.build("mamba", dim=1, state_norm=(1.0, 0.0))
    m = seqlab.mixers.build("mamba", dim=2, expand=2, state_norm=[0.5, 1, 2, 3])   # JSON lists too
    assert m.cfg.state_norm == (0.5, 1.0, 2.0, 3.0)


def test_state_norm_keeps_the_state_bounded_where_it_otherwise_grows():
    """Slow decays (A = -0.01) on a long random input: without the option the largest
    channel norm keeps growing with length; with it, it never leaves the ball."""
    base = make(dim=16)
    with torch.no_grad():
        base.A_log.fill_(math.log(0.01))
    x = torch.randn(2, 1500, 16, dtype=F64)
    bound = 1.0
    m = make(dim=16, state_norm=bound)
    m.load_state_dict(base.state_dict())
    grown, kept = [], []
    s0 = s1 = None
    with torch.no_grad():
        for c in range(0, 1500, 50):
            _, s0 = base(x[:, c:c + 50], s0)
            _, s1 = m(x[:, c:c + 50], s1)
            grown.append(s0.h.norm(dim=-1).max().item())
            kept.append(s1.h.norm(dim=-1).max().item())
    assert grown[0] < 0.5 * bound and grown[-1] > 3 * bound                 # grows ...
    assert grown[-1] > grown[len(grown) // 2] > grown[len(grown) // 10]      # ... with length
    assert max(kept) <= bound * (1 + 1e-12)
    assert kept[-1] > 0.99 * bound                                           # and is held there


def test_decay_scale_multiplies_the_start_states_influence_by_lambda_per_token():
    """Exact: the start state reaches y_t only through lambda^(t+1) prod exp(dt A), and
    nothing else depends on it, so its influence on every output shrinks by lambda^(t+1)."""
    lam = 0.9
    base = make(dim=16, chunk_size=5)
    m = make(dim=16, chunk_size=5, decay_scale=lam)
    m.load_state_dict(base.state_dict())
    x = torch.randn(2, 60, 16, dtype=F64)
    h0 = torch.randn(2, m.d_inner, 4, dtype=F64)
    with torch.no_grad():
        def influence(mixer):
            zero = mixer.init_state(2, dtype=F64)
            y_a, _ = mixer(x, zero)
            y_b, _ = mixer(x, MambaState(conv=zero.conv, h=h0))
            return y_b - y_a                                                  # (B, T, D)
        d1, dl = influence(base), influence(m)
    factor = lam ** torch.arange(1, 61, dtype=F64)[None, :, None]
    torch.testing.assert_close(dl, factor * d1, atol=1e-13, rtol=1e-9)


def test_decay_scale_makes_an_early_tokens_influence_decay_faster():
    """Measured: perturb token 0 and follow |y_t - y'_t|. Beyond the short convolution
    its influence decays exponentially; with lambda the fitted rate is faster by log lambda."""
    lam = 0.9
    base = make(dim=16)
    m = make(dim=16, decay_scale=lam)
    m.load_state_dict(base.state_dict())
    x = torch.randn(2, 100, 16, dtype=F64)
    x2 = x.clone()
    x2[:, 0] += 1.0

    def influence(mixer):
        with torch.no_grad():
            return (mixer(x2)[0] - mixer(x)[0]).norm(dim=-1).mean(0)          # (T,)

    d1, dl = influence(base), influence(m)
    t = torch.arange(20, 90, dtype=F64)

    def rate(d):   # least-squares slope of log influence against t
        yv = d[20:90].log()
        tc = t - t.mean()
        return ((tc * (yv - yv.mean())).sum() / (tc * tc).sum()).item()

    assert abs((rate(dl) - rate(d1)) - math.log(lam)) < 0.1 * abs(math.log(lam))
    ratio = dl / d1
    for k in (20, 40, 60, 99):   # the influence left at t is about lambda^(t - d_conv + 1) of it
        assert ratio[k] < 1.5 * lam ** (k - 3), (k, ratio[k].item())
    assert ratio[99] < 1e-4


def test_input_scale_scales_the_ssm_path_exactly():
    """The state is linear in B: with the D skip off, the output scales by beta exactly."""
    beta = 0.6
    base = make(dim=16)
    with torch.no_grad():
        base.D.zero_()
    m = make(dim=16, input_scale=beta)
    m.load_state_dict(base.state_dict())
    x = torch.randn(2, 30, 16, dtype=F64)
    (y0, s0), (y1, s1) = base(x), m(x)
    torch.testing.assert_close(y1, beta * y0, **TOL)
    torch.testing.assert_close(s1.h, beta * s0.h, **TOL)


@pytest.mark.parametrize("chunk", [1, 4], ids=lambda c: f"chunk{c}")
def test_selective_scan_with_log_decay_gradcheck(chunk):
    Bn, L, E, N = 2, 9, 3, 2
    dt = (torch.rand(Bn, L, E, dtype=F64) + 0.1).requires_grad_()
    A = (-torch.rand(E, N, dtype=F64) * 2 - 0.1).requires_grad_()
    rest = [torch.randn(*shape, dtype=F64, requires_grad=True)
            for shape in ((Bn, L, N), (Bn, L, N), (Bn, L, E), (Bn, E, N))]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk, log_decay=-0.3),
                                    (dt, A, *rest))


def test_clipped_scan_gradcheck_and_blocks():
    Bn, L, E, N = 2, 9, 3, 2
    dt = (torch.rand(Bn, L, E, dtype=F64) + 0.1).requires_grad_()
    A = (-torch.rand(E, N, dtype=F64) * 2 - 0.1).requires_grad_()
    rest = [torch.randn(*shape, dtype=F64, requires_grad=True)
            for shape in ((Bn, L, N), (Bn, L, N), (Bn, L, E), (Bn, E, N))]
    bound = 0.5   # about half the rows are clipped at some token
    y, _ = clipped_scan(dt, A, *rest, bound, -0.1)
    y_free, _ = selective_scan(dt, A, *rest, 4, log_decay=-0.1)
    assert (y - y_free).abs().max() > 1e-2
    for block in (1, 4):
        torch.testing.assert_close(clipped_scan(dt, A, *rest, bound, -0.1, block=block)[0], y, **TOL)
    assert torch.autograd.gradcheck(lambda *a: clipped_scan(*a, bound, -0.1, block=4),
                                    (dt, A, *rest))


@pytest.mark.parametrize("options,field,allowed", [
    ({"decay_scale": 0.0}, "decay_scale", "(0, 1]"),
    ({"decay_scale": 1.5}, "decay_scale", "(0, 1]"),
    ({"input_scale": 0.0}, "input_scale", "positive"),
    ({"state_norm": 0.0}, "state_norm", "None (off), a positive"),
    ({"state_norm": -1.0}, "state_norm", "None (off), a positive"),
    ({"state_norm": "yes"}, "state_norm", "None"),
    ({"scan": "cpp", "state_norm": 1.0}, "scan", "'torch' with"),
    ({"scan": "cpp", "decay_scale": 0.9}, "scan", "'torch' with"),
], ids=["decay-zero", "decay-above-one", "input-zero", "norm-zero", "norm-negative", "norm-type",
        "cpp-norm", "cpp-decay"])
def test_bad_mitigation_options_name_field_value_and_allowed(options, field, allowed):
    with pytest.raises(ConfigError) as err:
        seqlab.mixers.build("mamba", dim=16, **options)
    msg = str(err.value)
    assert f"MambaConfig.{field} = {options[field]!r}" in msg and allowed in msg


def test_input_scale_works_with_the_cpp_kernel_config():
    """input_scale acts on B before either kernel, so scan='cpp' accepts it."""
    cfg = seqlab.mixers.build("mamba", dim=16, scan="cpp", input_scale=0.7).cfg
    assert cfg.input_scale == 0.7

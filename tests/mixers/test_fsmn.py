"""fsmn: both faces against the equations written out frame by frame, and the receptive field.

The shared conformance suite proves the faces agree with each other for the example
options; these tests check them against an explicit float64 reference (loops over frames and
taps, no conv1d), for several kernel/depth/branch widths, and that an impulse at t changes
outputs at exactly t .. t + R - 1, R = ``receptive_field`` as the docstring states.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError

DIM, B, T = 16, 2, 19
TOL = dict(atol=1e-10, rtol=1e-10)
SHAPES = [
    pytest.param(dict(inner=6, kernel=3, depth=2, branch_kernel=2), id="K3-D2-Kb2"),
    pytest.param(dict(inner=5, kernel=2, depth=3, branch_kernel=1), id="K2-D3-Kb1"),
    pytest.param(dict(inner=4, kernel=4, depth=1, branch_kernel=3), id="K4-D1-Kb3"),
]


def make(**options):
    m = seqlab.mixers.build("fsmn", dim=DIM, **options).double()
    with torch.no_grad():   # away from init: PReLU slopes, norms, biases all matter
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def prelu(h, slope):
    return torch.where(h >= 0, h, slope * h)


def layer_norm(h, ln):
    mu = h.mean(-1, keepdim=True)
    var = (h - mu).pow(2).mean(-1, keepdim=True)
    return (h - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


@torch.no_grad()
def reference(m, x):
    """The module docstring's equations, frame by frame; inputs before frame 0 are zero."""
    cfg, E = m.cfg, m.inner
    Bx, Tx, _ = x.shape
    u = layer_norm(prelu(x @ m.in_proj.weight.T + m.in_proj.bias, m.in_slope), m.norm_in)
    s = F.silu(u @ m.branch_proj.weight.T + m.branch_proj.bias)         # (B, T, 2E)
    wb = m.branch_conv.weight[:, 0]                                     # (2E, Kb), tap j at lag Kb-1-j
    ag = torch.zeros(Bx, Tx, 2 * E, dtype=x.dtype)
    for t in range(Tx):
        ag[:, t] = m.branch_conv.bias
        for lag in range(cfg.branch_kernel):
            if t - lag >= 0:
                ag[:, t] += wb[:, cfg.branch_kernel - 1 - lag] * s[:, t - lag]
    a, g = ag[..., :E], ag[..., E:]
    z = [torch.relu(a @ m.fsmn_hidden.weight.T + m.fsmn_hidden.bias) @ m.fsmn_proj.weight.T]
    for l in range(cfg.depth):
        d = 2 ** l
        w = m.memory[l].weight.view(E, l + 1, cfg.kernel)               # channel c, input z_i, tap
        out = torch.zeros(Bx, Tx, E, dtype=x.dtype)
        for t in range(Tx):
            out[:, t] = m.memory[l].bias
            for i in range(l + 1):
                for lag in range(cfg.kernel):
                    if t - lag * d >= 0:
                        out[:, t] += w[:, i, cfg.kernel - 1 - lag] * z[i][:, t - lag * d]
        z.append(prelu(out, m.memory_slope[l]))
    h = g * (a + z[-1]) + u
    return layer_norm(h, m.norm_out) @ m.out_proj.weight.T + m.out_proj.bias


@pytest.mark.parametrize("options", SHAPES)
def test_parallel_and_step_equal_reference(options):
    m = make(**options)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y_ref = reference(m, x)
    y, s_full = m(x)
    torch.testing.assert_close(y, y_ref, **TOL)
    # continued from a state in ragged chunks, and token by token through step()
    ys, s = [], None
    for lo, hi in [(0, 3), (3, 4), (4, 13), (13, T)]:
        y_c, s = m(x[:, lo:hi], s)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, 1), y_ref, **TOL)
    s, ys = m.init_state(B, dtype=torch.float64), []
    for t in range(T):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_ref, **TOL)
    torch.testing.assert_close(s.memory, s_full.memory, **TOL)
    torch.testing.assert_close(s.branch, s_full.branch, **TOL)


@pytest.mark.parametrize("options", SHAPES)
def test_impulse_reaches_exactly_the_receptive_field(options):
    m = make(**options)
    cfg = m.cfg
    R = m.receptive_field
    assert R == (cfg.branch_kernel - 1) + (cfg.kernel - 1) * (2 ** cfg.depth - 1) + 1
    L, t0 = R + 12, 5
    x = torch.randn(B, L, DIM, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t0] += torch.randn(B, DIM, dtype=torch.float64)
    y1, _ = m(x)
    y2, _ = m(x2)
    changed = (y1 - y2).abs().amax((0, 2))                              # (L,)
    reached = (changed > 1e-9).nonzero().flatten().tolist()
    assert reached == list(range(t0, t0 + R))
    assert changed[:t0].max() == 0                                       # causal: bit-identical
    assert changed[t0 + R:].max() < 1e-12


def test_state_windows_and_size_follow_the_config():
    m = make(inner=6, kernel=3, depth=3, branch_kernel=4)
    s = m.init_state(B, dtype=torch.float64)
    W = (3 - 1) * 2 ** 2
    assert s.memory.shape == (B, 6, 3, W) and s.branch.shape == (B, 12, 3)
    assert m.state_size(100) == 6 * 3 * W + 12 * 3
    # A call shorter than the window keeps the older frames: two short calls = one long one.
    x = torch.randn(B, 5, DIM, dtype=torch.float64)
    _, s_whole = m(x, s)
    _, s_a = m(x[:, :2], s)
    _, s_b = m(x[:, 2:], s_a)
    torch.testing.assert_close(s_b.memory, s_whole.memory, **TOL)
    assert s.memory.abs().max() == 0                                     # the given state is untouched


def test_default_inner_is_half_the_width_and_bad_options_are_named():
    assert seqlab.mixers.build("fsmn", dim=64).inner == 32
    for bad, match in [({"kernel": 1}, r"FSMNConfig.kernel = 1"),
                       ({"depth": 0}, r"FSMNConfig.depth = 0"),
                       ({"inner": 0}, r"FSMNConfig.inner = 0"),
                       ({"branch_kernel": 0}, r"FSMNConfig.branch_kernel = 0")]:
        with pytest.raises(ConfigError, match=match):
            seqlab.mixers.build("fsmn", dim=16, **bad)

"""LSSL-specific checks: HiPPO-LegS itself, a naive recurrence written here, and that the
state is the Legendre projection of the input's history."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.polynomial.legendre import Legendre

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.lssl import LSSLState, hippo_legs, krylov
from seqlab.train.optim import OptimizerConfig, make_optimizer

TOL = dict(atol=1e-10, rtol=1e-10)


def make(dim=12, **options):
    m = seqlab.mixers.build("lssl", dim=dim, **{"d_state": 8, **options}).double()
    with torch.no_grad():  # move away from the init so that shared structure cannot hide bugs
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def legs_by_definition(N):
    """HiPPO-LegS entry by entry (HiPPO, Theorem 2), negated so that A is stable."""
    A = torch.zeros(N, N, dtype=torch.float64)
    for n in range(N):
        for k in range(n + 1):
            A[n, k] = -(n + 1) if n == k else -math.sqrt((2 * n + 1) * (2 * k + 1))
    return A, torch.tensor([math.sqrt(2 * n + 1) for n in range(N)], dtype=torch.float64)


def naive_ssm(m, u, x0=None):
    """Token-by-token bilinear recurrence from the raw parameters: u (B, L, H) -> y (B, L, H), x."""
    N = m.cfg.d_state
    A, B = legs_by_definition(N) if m.A is None else (m.A, legs_by_definition(N)[1])
    I = torch.eye(N, dtype=torch.float64)
    ys, x = [], torch.zeros(u.shape[0], m.channels, N, dtype=torch.float64) if x0 is None else x0
    Abar, Bbar = [], []
    for h in range(m.channels):
        dt = m.log_dt[h].exp()
        Abar.append(torch.linalg.solve(I - dt / 2 * A, I + dt / 2 * A))
        Bbar.append(torch.linalg.solve(I - dt / 2 * A, dt * B))
    Abar, Bbar = torch.stack(Abar), torch.stack(Bbar)                       # (H, N, N), (H, N)
    for t in range(u.shape[1]):
        x = (Abar @ x[..., None])[..., 0] + Bbar * u[:, t, :, None]
        ys.append((m.C * x).sum(-1) + m.D * u[:, t])
    return torch.stack(ys, 1), x


def naive_block(m, x, x0=None):
    u = m.in_proj(x) if m.in_proj is not None else x
    y, h = naive_ssm(m, u, x0)
    y = m.out_proj(F.gelu(y))
    return (F.glu(y, -1) if m.cfg.glu else y), h


def test_hippo_legs_matches_definition():
    A, B = hippo_legs(7)
    A_ref, B_ref = legs_by_definition(7)
    torch.testing.assert_close(A, A_ref, atol=1e-14, rtol=0)
    torch.testing.assert_close(B, B_ref, atol=1e-14, rtol=0)
    # Lower triangular, so its eigenvalues are the diagonal -1, ..., -N: stable.
    torch.testing.assert_close(torch.linalg.eigvals(A).real.sort().values,
                               -torch.arange(7, 0, -1, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("train_A", [False, True], ids=["fixed-A", "trained-A"])
@pytest.mark.parametrize("channels,glu", [(None, True), (7, False)], ids=["H=dim-glu", "H7-linear"])
def test_parallel_equals_naive_recurrence(train_A, channels, glu):
    m = make(train_A=train_A, channels=channels, glu=glu)
    x = torch.randn(2, 19, 12, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        y_ref, h_ref = naive_block(m, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(s.x, h_ref, **TOL)
        # Continuing from a non-zero state: its contribution and the closed-form final state.
        y2, s2 = m(x[:, :5], s)
        y2_ref, h2_ref = naive_block(m, x[:, :5], h_ref)
        torch.testing.assert_close(y2, y2_ref, **TOL)
        torch.testing.assert_close(s2.x, h2_ref, **TOL)
        # The recurrent face against the same reference.
        y_t, s_t = m.step(x[:, 5], s2)
        y3_ref, h3_ref = naive_block(m, x[:, 5:6], h2_ref)
        torch.testing.assert_close(y_t, y3_ref[:, 0], **TOL)
        torch.testing.assert_close(s_t.x, h3_ref, **TOL)


def test_kernel_is_krylov_of_the_discrete_system():
    m = make(dim=5, d_state=12, dt_min=0.01, dt_max=0.5)
    L = 257                                                                 # not a power of two
    with torch.no_grad():
        K = m.kernel(L)
        impulse = torch.zeros(1, L, 5, dtype=torch.float64)
        impulse[:, 0] = 1
        y, _ = naive_ssm(m, impulse)
    torch.testing.assert_close(K, (y[0] - m.D * impulse[0]).T, atol=1e-12, rtol=1e-10)
    M, v = torch.randn(3, 4, 4, dtype=torch.float64) / 2, torch.randn(3, 4, dtype=torch.float64)
    ref = torch.stack([torch.linalg.matrix_power(M, k) @ v[..., None] for k in range(11)], -1)[:, :, 0]
    torch.testing.assert_close(krylov(M, v, 11), ref, atol=1e-12, rtol=1e-12)


# -- the state is the Legendre projection of the history -----------------------------------------
# HiPPO-LegS (dc/dt = (1/t)(A c + B u)) keeps, for the uniform measure on [0, t],
#     c_n(t) = (1/t) ∫_0^t u(s) sqrt(2n+1) P_n(2s/t - 1) ds,
# so if u(s) = sum_n a_n P_n(x) with x = 2s/t - 1 (x = -1 the start of the history, x = +1 now),
#     c_n = a_n / sqrt(2n+1),    u(s) = sum_n c_n sqrt(2n+1) P_n(2s/t - 1).
# Normalisation: HiPPO's basis is orthonormal (sqrt(2n+1) P_n), numpy's is Legendre P_n (P_n(1) = 1).
# Sign: with time running toward x = +1 no sign changes; a reversed axis (x = 1 - 2s/t) would give
# (-1)^n a_n, which the test rejects.
# The mixer is time invariant; LegS is too in log time: with τ = log t, dc/dτ = A c + B u(e^τ).
# So the LSSL with Δ = δ, fed u at geometrically spaced times t_k = t_0 e^(kδ), is LegS. The
# bilinear step (c_k - c_{k-1})/δ = A (c_k + c_{k-1})/2 + B u_k is the implicit midpoint rule when
# u_k is sampled at the mid time e^(τ_{k-1} + δ/2): second order in δ.
N_LEG = 8
HISTORIES = [
    lambda s: 1 - 2 * s + 3 * s ** 3 - s ** 5,        # degree 5 < N: represented exactly
    lambda s: np.sin(6 * s) + 0.5 * np.cos(2 * s),
    lambda s: np.exp(-3 * s) / (1 + s ** 2),
]


def legendre_state(f, t, samples=20000):
    """Reference: numpy's Legendre fit of u on [0, t] (rescaled to x = 2s/t - 1), in HiPPO's
    normalisation c_n = a_n / sqrt(2n+1). A least-squares fit on a fine midpoint grid is the
    L2 projection to O(samples^-2); its first N coefficients do not depend on the degree."""
    s = (np.arange(samples) + 0.5) / samples * t
    a = Legendre.fit(2 * s / t - 1, f(s), N_LEG - 1, domain=[-1, 1]).coef
    return a / np.sqrt(2 * np.arange(N_LEG) + 1)


def run_legs(steps, delta):
    """The LSSL state at t = t0 e^(steps/2 δ) and at t = 1, from the exact state at t0 = e^(-steps δ)."""
    m = seqlab.mixers.build("lssl", dim=1, d_state=N_LEG).double()        # exact HiPPO-LegS A
    with torch.no_grad():
        m.log_dt.fill_(math.log(delta))
    t0 = math.exp(-steps * delta)
    mid_times = np.exp(math.log(t0) + (np.arange(steps) + 0.5) * delta)
    u = torch.tensor(np.stack([f(mid_times) for f in HISTORIES]))[..., None]   # (3, steps, 1)
    x0 = torch.tensor(np.stack([legendre_state(f, t0) for f in HISTORIES]))[:, None, :]
    with torch.no_grad():
        _, s_half = m(u[:, :steps // 2], LSSLState(x=x0))                  # chunked: continue
        _, s_end = m(u[:, steps // 2:], s_half)
    return (t0 * math.exp(steps // 2 * delta), s_half.x[:, 0].numpy()), (1.0, s_end.x[:, 0].numpy())


def test_state_is_legendre_projection_of_history():
    (t_half, c_half), (t_end, c_end) = run_legs(steps=1000, delta=0.007)   # t0 = e^-7 ~ 9e-4
    for t, c in ((t_half, c_half), (t_end, c_end)):
        ref = np.stack([legendre_state(f, t) for f in HISTORIES])           # (3, N)
        # Measured: 4e-7 at t = 0.03 and 5.4e-5 at t = 1 (coefficients are O(1)).
        np.testing.assert_allclose(c, ref, atol=2e-4, rtol=0)
        # A reversed time axis (the other sign convention) is far off: the test can tell.
        flipped = ref * (-1.0) ** np.arange(N_LEG)
        assert np.abs(c - flipped).max() > 0.1
    # The state reconstructs the whole history: the degree-5 polynomial is represented exactly.
    s = np.linspace(0, 1, 101)
    recon = Legendre(c_end[0] * np.sqrt(2 * np.arange(N_LEG) + 1))(2 * s - 1)
    np.testing.assert_allclose(recon, HISTORIES[0](s), atol=1e-3, rtol=0)


def test_legs_discretisation_is_second_order():
    """Halving Δ (twice the steps over the same history) quarters the error: the bilinear
    transform, not a first-order (Euler-like) step."""
    errors = []
    for steps, delta in ((500, 0.014), (1000, 0.007)):
        _, (t, c) = run_legs(steps, delta)
        errors.append(np.abs(c - np.stack([legendre_state(f, t) for f in HISTORIES])).max())
    assert 0.2 < errors[1] / errors[0] < 0.3, errors


def test_train_A_option():
    fixed = seqlab.mixers.build("lssl", dim=4, d_state=6)
    trained = seqlab.mixers.build("lssl", dim=4, d_state=6, train_A=True)
    assert fixed.A is None and "A" not in dict(fixed.named_parameters())
    assert trained.A.requires_grad
    torch.testing.assert_close(trained.A.double(), hippo_legs(6)[0], atol=1e-6, rtol=1e-6)
    # A is a pole matrix: exempt from weight decay although it is 2-D.
    opt = make_optimizer(trained, OptimizerConfig())
    no_decay = next(g for g in opt.param_groups if g["weight_decay"] == 0.0)["params"]
    assert any(p is trained.A for p in no_decay) and any(p is trained.log_dt for p in no_decay)


def test_dt_initialised_log_uniform_in_range():
    m = seqlab.mixers.build("lssl", dim=4000, d_state=2, dt_min=0.002, dt_max=0.2)
    dt = m.log_dt.exp()
    assert dt.min() >= 0.002 * (1 - 1e-6) and dt.max() <= 0.2 * (1 + 1e-6)
    assert abs(dt.median().log().item() - math.log(0.02)) < 0.15


@pytest.mark.parametrize("options,match", [
    ({"d_state": 0}, r"LSSLConfig.d_state = 0 is not allowed: expected an int >= 1"),
    ({"train_A": 1}, r"LSSLConfig.train_A = 1 is not allowed: expected bool"),
    ({"dt_min": 0.0}, r"LSSLConfig.dt_min = 0.0 is not allowed: expected a positive number"),
    ({"dt_min": 0.1, "dt_max": 0.01}, r"LSSLConfig.dt_max = 0.01 is not allowed: expected a number >= dt_min"),
    ({"channels": 0}, r"LSSLConfig.channels = 0 is not allowed"),
    ({"d_sate": 8}, r"has no option 'd_sate'"),
], ids=["zero-N", "train_A", "dt_min", "dt_order", "channels", "typo"])
def test_option_errors_name_field_and_value(options, match):
    with pytest.raises(ConfigError, match=match):
        seqlab.mixers.build("lssl", dim=8, **options)

"""S4D-specific checks: against a naive recurrence written here, per init, and the kernel."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.s4d import legendre_modes

TOL = dict(atol=1e-8, rtol=1e-8)


def make(dim=12, **options):
    m = seqlab.mixers.build("s4d", dim=dim, **{"d_state": 8, **options}).double()
    with torch.no_grad():  # move away from the init so that shared structure cannot hide bugs
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def naive_ssm(m, u, h0=None):
    """Token-by-token ZOH recurrence from the raw parameters: u (B, L, H) -> y (B, L, H), h."""
    dt = m.log_dt.exp()                                                     # (H,)
    A = torch.complex(-m.log_neg_A_re.exp(), m.A_im)                        # (H, N/2)
    B = torch.view_as_complex(m.B.contiguous())
    C = torch.view_as_complex(m.C.contiguous())
    dA = torch.exp(dt[:, None] * A)
    dB = (dA - 1) / A * B
    h = torch.zeros(u.shape[0], *A.shape, dtype=A.dtype) if h0 is None else h0
    ys = []
    for t in range(u.shape[1]):
        h = dA * h + dB * u[:, t, :, None]
        ys.append(2 * (C * h).sum(-1).real + m.D * u[:, t])
    return torch.stack(ys, 1), h


def naive_block(m, x, h0=None):
    u = m.in_proj(x) if m.in_proj is not None else x
    y, h = naive_ssm(m, u, h0)
    y = m.out_proj(F.gelu(y))
    return (F.glu(y, -1) if m.cfg.glu else y), h


@pytest.mark.parametrize("init", ["legendre", "lin", "inv"])
@pytest.mark.parametrize("channels,glu", [(None, True), (7, False)], ids=["H=dim-glu", "H7-linear"])
def test_parallel_equals_naive_recurrence(init, channels, glu):
    m = make(init=init, channels=channels, glu=glu)
    x = torch.randn(2, 19, 12, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        y_ref, h_ref = naive_block(m, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(torch.view_as_complex(s.h), h_ref, **TOL)
        # Continuing from a non-zero state: its contribution and the closed-form final state.
        y2, s2 = m(x[:, :5], s)
        y2_ref, h2_ref = naive_block(m, x[:, :5], h_ref)
        torch.testing.assert_close(y2, y2_ref, **TOL)
        torch.testing.assert_close(torch.view_as_complex(s2.h), h2_ref, **TOL)


def test_kernel_is_impulse_response_in_complex128():
    m = make(dim=6, d_state=16, dt_min=0.01, dt_max=0.5)
    L = 300
    with torch.no_grad():
        K = m.kernel(L, torch.float64)                                      # (H, L)
        impulse = torch.zeros(1, L, 6, dtype=torch.float64)
        impulse[:, 0] = 1
        y, _ = naive_ssm(m, impulse)
        y = y[0] - m.D * impulse[0]                                         # drop the D skip
    assert K.dtype == torch.float64
    # A complex64 kernel would be off by ~1e-6 here; this needs complex128.
    torch.testing.assert_close(K, y.T, atol=1e-12, rtol=1e-10)
    assert m.kernel(L, torch.float32).dtype == torch.float32


def test_init_spectra():
    N = 16
    n = torch.arange(N // 2, dtype=torch.float64)
    lin = seqlab.mixers.build("s4d", dim=3, d_state=N, init="lin").double()
    inv = seqlab.mixers.build("s4d", dim=3, d_state=N, init="inv").double()
    leg = seqlab.mixers.build("s4d", dim=3, d_state=N, init="legendre").double()
    for m in (lin, inv, leg):
        torch.testing.assert_close(-m.log_neg_A_re.exp(), torch.full((3, N // 2), -0.5, dtype=torch.float64))
    torch.testing.assert_close(lin.A_im[0], math.pi * n, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(inv.A_im[0], N / math.pi * (N / (2 * n + 1) - 1), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(lin.B, torch.stack([torch.ones(3, N // 2), torch.zeros(3, N // 2)], -1).double())

    # legendre: the eigenvalues of the normal part S = A_LegS + P P^T of HiPPO-LegS.
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A_legs = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1)
    S = A_legs + 0.5 * q[:, None] * q[None, :]
    eig = torch.linalg.eigvals(S)
    upper = eig[eig.imag > 0].imag.sort(descending=True).values
    torch.testing.assert_close(leg.A_im[0], upper, atol=1e-5, rtol=1e-6)


def test_legendre_modes_reproduce_the_normal_system():
    """The kept half of the modes carries the whole normal system: e^{tS} B_LegS =
    2 Re(sum_n v_n e^{t λ_n} (v_n^* B_LegS)), with |B_n| = |v_n^* B_LegS|."""
    N, t = 10, 0.37
    A, B = legendre_modes(N)
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    qq = q[:, None] * q[None, :] / 2
    S = torch.triu(qq, 1) - torch.tril(qq, -1) - 0.5 * torch.eye(N, dtype=torch.float64)
    ref = torch.matrix_exp(t * S) @ q
    out = torch.zeros(N, dtype=torch.complex128)
    for lam, b in zip(A, B):
        # Unit eigenvector of S for λ (the null vector of S - λI); its phase cancels in v v^*.
        v = torch.linalg.svd(S.to(torch.complex128) - lam * torch.eye(N)).Vh[-1].conj()
        torch.testing.assert_close((S.to(torch.complex128) @ v), lam * v, atol=1e-10, rtol=0)
        proj = v.conj() @ q.to(torch.complex128)
        torch.testing.assert_close(b.abs(), proj.abs(), atol=1e-10, rtol=1e-10)
        out += v * torch.exp(t * lam) * proj
    torch.testing.assert_close(2 * out.real, ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("init", ["legendre", "lin", "inv"])
def test_step_equals_parallel_each_init(init):
    m = make(init=init)
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    y, s_par = m(x)
    s, ys = m.init_state(2, dtype=torch.float64), []
    for t in range(9):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    torch.testing.assert_close(s.h, s_par.h, **TOL)


def test_dt_initialised_log_uniform_in_range():
    m = seqlab.mixers.build("s4d", dim=4000, d_state=2, dt_min=0.002, dt_max=0.2)
    dt = m.log_dt.exp()
    assert dt.min() >= 0.002 * (1 - 1e-6) and dt.max() <= 0.2 * (1 + 1e-6)
    # log-uniform: the median sits at the geometric mean, not the arithmetic one.
    assert abs(dt.median().log().item() - math.log(0.02)) < 0.15


def test_state_is_real_view_and_selectable():
    m = make(channels=5)
    _, s = m(torch.randn(3, 4, 12, dtype=torch.float64))
    assert s.h.shape == (3, 5, 4, 2) and s.h.dtype == torch.float64
    assert s.h.numel() == 3 * m.state_size(4)
    joined = type(s).cat([s.select([2]), s.select([0, 1])])
    torch.testing.assert_close(joined.h, s.h[[2, 0, 1]])


@pytest.mark.parametrize("options,match", [
    ({"d_state": 7}, r"S4DConfig.d_state = 7 is not allowed: expected an even int"),
    ({"d_state": 0}, r"S4DConfig.d_state = 0"),
    ({"init": "hippo"}, r"S4DConfig.init = 'hippo' is not allowed: expected one of 'legendre', 'lin', 'inv'"),
    ({"dt_min": 0.0}, r"S4DConfig.dt_min = 0.0 is not allowed: expected a positive number"),
    ({"dt_min": 0.1, "dt_max": 0.01}, r"S4DConfig.dt_max = 0.01 is not allowed: expected a number >= dt_min = 0.1"),
    ({"channels": 0}, r"S4DConfig.channels = 0 is not allowed"),
    ({"glu": 1}, r"S4DConfig.glu = 1 is not allowed: expected bool"),
    ({"d_sate": 8}, r"has no option 'd_sate'"),
], ids=["odd-N", "zero-N", "init", "dt_min", "dt_order", "channels", "glu", "typo"])
def test_option_errors_name_field_and_value(options, match):
    with pytest.raises(ConfigError, match=match):
        seqlab.mixers.build("s4d", dim=8, **options)

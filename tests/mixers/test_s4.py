"""S4-specific checks: the NPLR form of HiPPO-LegS, the Cauchy/Woodbury kernel against the
materialised powers of the discrete matrix, and a dense naive recurrence written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.lssl import hippo_legs
from seqlab.mixers.s4 import nplr_legs

TOL = dict(atol=1e-10, rtol=1e-10)


def make(dim=12, **options):
    m = seqlab.mixers.build("s4", dim=dim, **{"d_state": 8, **options}).double()
    with torch.no_grad():  # move away from the init so that shared structure cannot hide bugs
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def dense_system(m):
    """Ā, B̄ (bilinear, by dense solves) and C from the raw parameters: (H, N, N), (H, N), (H, N)."""
    N = m.cfg.d_state
    dt = m.log_dt.exp()[:, None, None]
    lam = torch.complex(-m.log_neg_lam_re.exp(), m.lam_im)
    P, B, C = (torch.view_as_complex(t.contiguous()) for t in (m.P, m.B, m.C))
    A = torch.diag_embed(lam) - P[:, :, None] * P.conj()[:, None, :]        # Λ - P P^*
    I = torch.eye(N, dtype=torch.complex128)
    Abar = torch.linalg.solve(I - dt / 2 * A, I + dt / 2 * A)
    Bbar = torch.linalg.solve(I - dt / 2 * A, dt * B[..., None])[..., 0]
    return Abar, Bbar, C


def naive_ssm(m, u, x0=None):
    """Token-by-token dense recurrence: u (B, L, H) -> y (B, L, H), x (B, H, N) complex."""
    Abar, Bbar, C = dense_system(m)
    x = torch.zeros(u.shape[0], *Bbar.shape, dtype=torch.complex128) if x0 is None else x0
    ys = []
    for t in range(u.shape[1]):
        x = (Abar @ x[..., None])[..., 0] + Bbar * u[:, t, :, None]
        ys.append((C * x).sum(-1).real + m.D * u[:, t])
    return torch.stack(ys, 1), x


def naive_block(m, x, x0=None):
    u = m.in_proj(x) if m.in_proj is not None else x
    y, h = naive_ssm(m, u, x0)
    y = m.out_proj(F.gelu(y))
    return (F.glu(y, -1) if m.cfg.glu else y), h


def test_nplr_is_hippo_legs():
    N = 9                                                                   # odd: one real mode
    lam, P, B, V = nplr_legs(N)
    A_legs, B_legs = hippo_legs(N)
    I = torch.eye(N, dtype=torch.complex128)
    torch.testing.assert_close(V.mH @ V, I, atol=1e-12, rtol=0)
    torch.testing.assert_close(lam.real, torch.full((N,), -0.5, dtype=torch.float64))
    A = V @ (torch.diag(lam) - P[:, None] * P.conj()[None, :]) @ V.mH
    torch.testing.assert_close(A, A_legs.to(torch.complex128), atol=1e-12, rtol=0)
    torch.testing.assert_close(V @ B, B_legs.to(torch.complex128), atol=1e-12, rtol=0)


@pytest.mark.parametrize("L", [299, 300], ids=["odd-L", "even-L"])   # even L has the node z = -1
def test_kernel_equals_materialised_powers(L):
    m = make(dim=6, d_state=16, dt_min=0.01, dt_max=0.5)
    with torch.no_grad():
        Abar, Bbar, C = dense_system(m)
        ref, v = [], Bbar
        for _ in range(L):                                                  # C Ā^k B̄, k < L
            ref.append((C * v).sum(-1))
            v = (Abar @ v[..., None])[..., 0]
        ref = torch.stack(ref, -1)                                          # (H, L)
        K = m.kernel(L, torch.float64)
    assert K.dtype == torch.complex128 and K.shape == (6, L)
    # Measured ~1e-15 with |K| up to ~1. Without the C (I - Ā^L) correction the inverse FFT would
    # return the aliased K_l + K_(l+L) + ... (measured: off by 1e-3 here).
    torch.testing.assert_close(K, ref, atol=1e-12, rtol=1e-10)
    K32 = m.float().kernel(L, torch.float32)
    assert K32.dtype == torch.complex64
    torch.testing.assert_close(K32.to(torch.complex128), ref, atol=1e-5, rtol=1e-4)


def test_fresh_s4_is_the_lssl_with_the_same_output_map():
    """At init, S4's system is HiPPO-LegS in the eigenbasis V of its normal part: with C = cᵀ V
    its kernel is the LSSL's (dense LegS, Krylov powers) with C = c, imaginary part 0."""
    N, H, L = 8, 4, 64
    s4 = seqlab.mixers.build("s4", dim=H, d_state=N).double()
    lssl = seqlab.mixers.build("lssl", dim=H, d_state=N).double()
    _, _, _, V = nplr_legs(N)
    with torch.no_grad():
        lssl.log_dt.copy_(s4.log_dt)
        c = torch.randn(H, N, dtype=torch.float64)
        lssl.C.copy_(c)
        s4.C.copy_(torch.view_as_real(c.to(torch.complex128) @ V))
        K4, KL = s4.kernel(L), lssl.kernel(L)
    # Measured 2e-8: Λ, P, B were stored in float32 at init; |K| is up to ~0.6.
    torch.testing.assert_close(K4.real, KL, atol=1e-6, rtol=1e-6)
    assert K4.imag.abs().max() < 1e-6


@pytest.mark.parametrize("channels,glu", [(None, True), (7, False)], ids=["H=dim-glu", "H7-linear"])
def test_parallel_equals_naive_recurrence(channels, glu):
    m = make(channels=channels, glu=glu)
    x = torch.randn(2, 19, 12, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        y_ref, h_ref = naive_block(m, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(torch.view_as_complex(s.h), h_ref, **TOL)
        # Continuing from a state with no conjugate symmetry (the general complex case).
        x0 = torch.randn_like(h_ref)
        for length in (6, 5, 1):                                            # even, odd, one token
            y2, s2 = m(x[:, :length], type(s)(h=torch.view_as_real(x0)))
            y2_ref, h2_ref = naive_block(m, x[:, :length], x0)
            torch.testing.assert_close(y2, y2_ref, **TOL)
            torch.testing.assert_close(torch.view_as_complex(s2.h), h2_ref, **TOL)
        # The O(N) Woodbury step against the dense one.
        y_t, s_t = m.step(x[:, 0], type(s)(h=torch.view_as_real(x0)))
        torch.testing.assert_close(y_t, naive_block(m, x[:, :1], x0)[0][:, 0], **TOL)


def test_state_is_complex_real_view():
    m = make(channels=5)
    _, s = m(torch.randn(3, 4, 12, dtype=torch.float64))
    assert s.h.shape == (3, 5, 8, 2) and s.h.dtype == torch.float64
    assert s.h.numel() == 3 * m.state_size(4)


@pytest.mark.parametrize("options,match", [
    ({"d_state": 0}, r"S4Config.d_state = 0 is not allowed: expected an int >= 1"),
    ({"dt_min": 0.0}, r"S4Config.dt_min = 0.0 is not allowed: expected a positive number"),
    ({"dt_min": 0.1, "dt_max": 0.01}, r"S4Config.dt_max = 0.01 is not allowed: expected a number >= dt_min"),
    ({"channels": 0}, r"S4Config.channels = 0 is not allowed"),
    ({"glu": 1}, r"S4Config.glu = 1 is not allowed: expected bool"),
    ({"d_sate": 8}, r"has no option 'd_sate'"),
], ids=["zero-N", "dt_min", "dt_order", "channels", "glu", "typo"])
def test_option_errors_name_field_and_value(options, match):
    with pytest.raises(ConfigError, match=match):
        seqlab.mixers.build("s4", dim=8, **options)

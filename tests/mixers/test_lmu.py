"""LMU-specific checks: the delay system, the Legendre decoding of a delayed sine, a
reference recurrence written here (GELU and spiking readouts), and the spiking faces."""

from __future__ import annotations

import math
from math import comb

import pytest
import torch
import torch.nn.functional as F
from scipy.signal import cont2discrete

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.lmu import _Spike, SURROGATE_ALPHA, discretized_system, legendre_delay_system
from seqlab.state import StateError

TOL = dict(atol=1e-10, rtol=1e-10)
SPIKING = {"spiking": True, "threshold": 0.3}   # low threshold: random weights then fire often


def make(dim=10, **options):
    opts = {"order": 7, "theta": 9.0, "memory": 3, "hidden": 16, **options}
    m = seqlab.mixers.build("lmu", dim=dim, **opts).double()
    with torch.no_grad():  # move away from the init so that shared structure cannot hide bugs
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def shifted_legendre_at(order: int, r: float) -> torch.Tensor:
    """P~_i(r) = (-1)^i sum_j C(i,j) C(i+j,j) (-r)^j, i < order: u(t - r theta) ≈ P~(r) · m_t."""
    return torch.tensor([(-1) ** i * sum(comb(i, j) * comb(i + j, j) * (-r) ** j for j in range(i + 1))
                         for i in range(order)], dtype=torch.float64)


def reference_system(order: int, theta: float):
    """A, B entry by entry from the LMU paper's formulas, then scipy's ZOH (dt = 1)."""
    A = torch.zeros(order, order, dtype=torch.float64)
    B = torch.zeros(order, dtype=torch.float64)
    for i in range(order):
        B[i] = (2 * i + 1) * (-1) ** i / theta
        for j in range(order):
            A[i, j] = (2 * i + 1) / theta * (-1 if i < j else (-1) ** (i - j + 1))
    Ad, Bd, *_ = cont2discrete((A.numpy(), B[:, None].numpy(), torch.eye(order).numpy(),
                                torch.zeros(order, 1).numpy()), dt=1.0, method="zoh")
    return A, B, torch.from_numpy(Ad), torch.from_numpy(Bd[:, 0])


def reference_lmu(m, x, m0=None, v0=None):
    """Token-by-token LMU from the raw weights: x (B, L, dim) -> y, final memory, final v."""
    cfg = m.cfg
    _, _, Abar, Bbar = reference_system(cfg.order, cfg.theta)
    B_, L, _ = x.shape
    mem = torch.zeros(B_, cfg.memory, cfg.order, dtype=torch.float64) if m0 is None else m0
    v = torch.zeros(B_, m.hidden, dtype=torch.float64) if v0 is None else v0
    ys, fired = [], []
    for t in range(L):
        u = x[:, t] @ m.in_proj.weight.T + m.in_proj.bias                      # (B, C)
        mem = torch.einsum("ij,bcj->bci", Abar, mem) + u[..., None] * Bbar     # (B, C, N)
        pre = torch.cat([mem.reshape(B_, -1), x[:, t]], -1) @ m.h_proj.weight.T + m.h_proj.bias
        if cfg.spiking:
            v = v + (pre - v) / cfg.tau
            s = (v >= cfg.threshold).double()
            v = v * (1 - s)
            h = s
            fired.append(s)
        else:
            h = F.gelu(pre)
        ys.append(h @ m.out_proj.weight.T)
    rate = torch.stack(fired).mean().item() if fired else None
    return torch.stack(ys, 1), mem, (v if cfg.spiking else None), rate


def test_delay_system_matches_formula_and_scipy_zoh():
    for order, theta in [(1, 3.0), (6, 8.0), (12, 50.0)]:
        A_ref, B_ref, Ad_ref, Bd_ref = reference_system(order, theta)
        A, B = legendre_delay_system(order, theta)
        torch.testing.assert_close(A, A_ref, atol=0, rtol=0)
        torch.testing.assert_close(B, B_ref, atol=0, rtol=0)
        Abar, Bbar = discretized_system(order, theta, torch.device("cpu"))
        assert Abar.dtype == torch.float64
        torch.testing.assert_close(Abar, Ad_ref, atol=1e-13, rtol=1e-12)
        torch.testing.assert_close(Bbar, Bd_ref, atol=1e-13, rtol=1e-12)
    # The Padé delay system is stable: every discrete pole strictly inside the unit circle.
    assert torch.linalg.eigvals(discretized_system(12, 50.0, torch.device("cpu"))[0]).abs().max() < 1


def test_kernel_is_impulse_response():
    m = make(order=9, theta=40.0)
    Abar, Bbar = discretized_system(9, 40.0, torch.device("cpu"))
    L = 300                                    # not a power of two: the doubling is cut
    K = m.kernel(L)
    ref, k = [], Bbar
    for _ in range(L):
        ref.append(k)
        k = Abar @ k
    torch.testing.assert_close(K, torch.stack(ref), atol=1e-14, rtol=1e-12)


def test_memory_decodes_delayed_sine_with_shifted_legendre():
    """m_t holds the last theta steps of u on shifted Legendre polynomials:
    u(t - r theta) ≈ sum_i P~_i(r) m_t,i, with P~_i(1) = 1 for the full delay theta.

    ZOH holds u_s over [s, s+1) and m_t is the memory at the end of step t, so the
    decoded value at delay r theta is the held input around t + 1 - r theta: the sine at
    t - r theta + 1/2 (to within the polynomial approximation), and the sample
    u_{t - theta} itself to within half a step of the sine's slope (omega / 2 = 0.0157).
    Measured, order 12, theta 50, period 200 steps, t >= 2 theta: 5.3e-4 against the sine at
    delay theta (order 2: 7.8e-2), 1.7e-4 at delay theta/2, 1.6e-2 against the sample.
    """
    order, theta, period, T = 12, 50, 200, 400
    m = seqlab.mixers.build("lmu", dim=4, order=order, theta=float(theta), memory=1).double()
    with torch.no_grad():                      # u_t = x_t[0]
        m.in_proj.weight.zero_()
        m.in_proj.bias.zero_()
        m.in_proj.weight[0, 0] = 1
    t = torch.arange(T, dtype=torch.float64)
    w = 2 * math.pi / period
    x = torch.zeros(1, T, 4, dtype=torch.float64)
    x[0, :, 0] = torch.sin(w * t)
    keep = t >= 2 * theta                      # past the start-up transient

    mem = m.memory(m.in_proj(x))[0, :, 0]                                      # (T, N) parallel face
    s, steps = m.init_state(1, dtype=torch.float64), []
    for i in range(T):                                                         # recurrent face
        _, s = m.step(x[:, i], s)
        steps.append(s.m[0, 0])
    torch.testing.assert_close(torch.stack(steps), mem, atol=1e-12, rtol=1e-12)
    _, s_par = m(x)
    torch.testing.assert_close(s_par.m[0, 0], mem[-1], atol=1e-12, rtol=1e-12)

    dec = mem @ shifted_legendre_at(order, 1.0)                                # u(t - theta)
    assert torch.equal(shifted_legendre_at(order, 1.0), torch.ones(order, dtype=torch.float64))
    err = (dec - torch.sin(w * (t - theta + 0.5)))[keep].abs().max()
    assert err < 2e-3, f"delay-theta decoding error {err:.2e}"
    sample = x[0, (t - theta).clamp(min=0).long(), 0]                          # u_{t - theta}
    assert (dec - sample)[keep].abs().max() < 0.02
    mid = mem @ shifted_legendre_at(order, 0.5)                                # u(t - theta/2)
    assert (mid - torch.sin(w * (t - theta / 2 + 0.5)))[keep].abs().max() < 1e-3
    # The bound has teeth: a 2nd-order memory (measured 7.8e-2), or the decoder of another
    # delay, misses it.
    m2 = seqlab.mixers.build("lmu", dim=1, order=2, theta=float(theta), memory=1).double()
    dec2 = m2.memory(x[..., :1])[0, :, 0] @ shifted_legendre_at(2, 1.0)
    assert (dec2 - torch.sin(w * (t - theta + 0.5)))[keep].abs().max() > 2e-2
    assert (mid - torch.sin(w * (t - theta + 0.5)))[keep].abs().max() > 0.5


@pytest.mark.parametrize("options", [{}, SPIKING], ids=["gelu", "spiking"])
def test_parallel_equals_reference_recurrence(options):
    m = make(**options)
    x = torch.randn(2, 21, 10, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        y_ref, mem_ref, v_ref, rate = reference_lmu(m, x)
        if m.cfg.spiking:
            assert 0.05 < rate < 0.95, f"spike rate {rate}: the test would not exercise firing and reset"
            torch.testing.assert_close(s.v, v_ref, **TOL)
        else:
            assert s.v is None
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(s.m, mem_ref, **TOL)
        # Continue from the non-zero state (memory and membrane potentials).
        y2, s2 = m(x[:, :8], s)
        y2_ref, mem2_ref, v2_ref, _ = reference_lmu(m, x[:, :8], mem_ref, v_ref)
        torch.testing.assert_close(y2, y2_ref, **TOL)
        torch.testing.assert_close(s2.m, mem2_ref, **TOL)
        if m.cfg.spiking:
            torch.testing.assert_close(s2.v, v2_ref, **TOL)


def test_spiking_faces_agree_and_chunk():
    """The conformance suite builds the GELU readout; this runs its core checks spiking."""
    m = make(**SPIKING)
    x = torch.randn(3, 17, 10, dtype=torch.float64)
    y, s = m(x)
    st, ys = m.init_state(3, dtype=torch.float64), []
    for t in range(17):
        y_t, st = m.step(x[:, t], st)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    torch.testing.assert_close(st.m, s.m, **TOL)
    torch.testing.assert_close(st.v, s.v, **TOL)
    sc, yc, pos = m.init_state(3, dtype=torch.float64), [], 0
    for n in (5, 1, 7, 4):
        y_c, sc = m(x[:, pos:pos + n], sc)
        yc.append(y_c)
        pos += n
    torch.testing.assert_close(torch.cat(yc, 1), y, **TOL)
    torch.testing.assert_close(sc.v, s.v, **TOL)
    # States are values: continuing a kept state twice gives the same result.
    _, s5 = m(x[:, :5])
    keep = s5.clone()
    a, _ = m(x[:, 5:], s5)
    b, _ = m(x[:, 5:], s5)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(s5.v, keep.v, atol=0, rtol=0)
    sel = s5.select([2, 0])
    y_sel, _ = m(x[[2, 0], 5:], sel)
    torch.testing.assert_close(y_sel, a[[2, 0]], **TOL)
    assert s.v.numel() + s.m.numel() == 3 * m.state_size(17)


def test_spiking_surrogate_gradient():
    z = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    s = _Spike.apply(z)
    assert torch.equal(s, (z >= 0).double())
    s.sum().backward()
    sig = torch.sigmoid(SURROGATE_ALPHA * z.detach())
    torch.testing.assert_close(z.grad, SURROGATE_ALPHA * sig * (1 - sig), atol=1e-15, rtol=1e-12)

    m = make(**SPIKING).float()
    x = torch.randn(2, 12, 10, requires_grad=True)
    y, _ = m(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_state_of_other_configuration_is_refused():
    gelu, spiking = make(), make(**SPIKING)
    x = torch.randn(2, 4, 10, dtype=torch.float64)
    _, s_gelu = gelu(x)
    _, s_spk = spiking(x)
    with pytest.raises(StateError, match="spiking = True"):
        spiking(x, s_gelu)
    with pytest.raises(StateError, match="spiking = False"):
        gelu(x, s_spk)
    with pytest.raises(StateError, match="order = 5"):
        make(order=5)(x, s_gelu)


@pytest.mark.parametrize("options,match", [
    ({"order": 0}, r"LMUConfig.order = 0 is not allowed"),
    ({"theta": -1.0}, r"LMUConfig.theta = -1.0 is not allowed: expected a positive number"),
    ({"memory": 0}, r"LMUConfig.memory = 0 is not allowed"),
    ({"tau": 0.5}, r"LMUConfig.tau = 0.5 is not allowed: expected a number >= 1"),
    ({"threshold": 0.0}, r"LMUConfig.threshold = 0.0 is not allowed"),
    ({"spiking": 1}, r"LMUConfig.spiking = 1 is not allowed: expected bool"),
], ids=["order", "theta", "memory", "tau", "threshold", "spiking"])
def test_option_errors_name_field_and_value(options, match):
    with pytest.raises(ConfigError, match=match):
        seqlab.mixers.build("lmu", dim=8, **options)

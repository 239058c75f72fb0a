"""S4: structured state spaces (Gu, Goel, Ré 2021), https://arxiv.org/abs/2111.00396

Per channel, HiPPO-LegS in its normal-plus-low-rank form A = Λ - P P^* (N complex modes, Λ
diagonal with Re Λ < 0), discretised by the bilinear transform with a learned step Δ:
    x_t = Ā x_{t-1} + B̄ u_t;   y_t = Re(C x_t) + D u_t     (x_t complex, N modes)
Parallel face (the paper's Algorithm 1): the kernel's generating function
C̃ (I - Ā z)^-1 B̄, C̃ = C (I - Ā^L), is evaluated at the L-th roots of unity by four Cauchy
kernels and the Woodbury identity, then an inverse FFT gives K_l = C Ā^l B̄; y = Re(K) * u.
The block around the SSM is S4's: [input linear to H channels] -> SSM -> GELU -> linear [-> GLU].

Continuing from a state uses the same resolvents: the state's part of the outputs is another
generating function, and the final state is an interpolation at the same roots of unity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.mixers import register
from seqlab.mixers.lssl import SSMBlock, SSMConfig, causal_conv, compute_dtype, hippo_legs
from seqlab.state import State


def nplr_legs(d_state: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """HiPPO-LegS as normal plus low rank, in the eigenbasis of its normal part.

    A_LegS + P P^T = S with P_n = sqrt(n + 1/2) and S = -I/2 + (skew-symmetric), so S = V Λ V^*
    with V unitary and Re Λ = -1/2. Then A_LegS = V (Λ - P̃ P̃^*) V^* with P̃ = V^* P, and the
    system (A_LegS, B_LegS) is unitarily equivalent to (Λ - P̃ P̃^*, B̃ = V^* B_LegS).

    Returns:
        Λ: (N,) complex128, real parts -1/2;  P̃: (N,);  B̃: (N,);  V: (N, N) unitary.
    """
    A, B = hippo_legs(d_state)
    P = torch.sqrt(torch.arange(d_state, dtype=torch.float64) + 0.5)
    S = A + P[:, None] * P[None, :]
    skew = S + 0.5 * torch.eye(d_state, dtype=torch.float64)
    # -i * skew is Hermitian: eigh is exact and well conditioned (eig on S is not).
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    lam = torch.complex(torch.full_like(mu, -0.5), mu)
    Vh = V.mH
    return lam, Vh @ P.to(torch.complex128), Vh @ B.to(torch.complex128), V


def resolvent(lam: Tensor, P: Tensor, p: Tensor, q: Tensor, v: Tensor) -> Tensor:
    """(p I - q A)^-1 v for A = diag(lam) - P P^*, by the Woodbury identity in O(N).

    With R = diag(1 / (p - q lam)): (R^-1 + q P P^*)^-1 = R - q R P (1 + q P^* R P)^-1 P^* R.

    Args:
        lam, P: (..., N), broadcast with v;  p, q: broadcast with v's leading dims;  v: (..., N).
    """
    r = 1 / (p[..., None] - q[..., None] * lam)
    rv, rP = r * v, r * P
    num = (P.conj() * rv).sum(-1)                                              # P^* R v
    den = 1 + q * (P.conj() * rP).sum(-1)                                      # 1 + q P^* R P
    return rv - (q * num / den)[..., None] * rP


@dataclass(frozen=True)
class S4Config(SSMConfig):
    """Options of the S4 mixer: :class:`~seqlab.mixers.lssl.SSMConfig`'s, with d_state the
    number of complex modes per channel (state: 2N reals)."""


@dataclass(frozen=True)
class S4State(State):
    """Complex SSM state stored as its real view, so that select/clone/cat and casting
    modules to a real dtype treat it like any other tensor.

    Attributes:
        h: (B, H, N, 2) real and imaginary parts of x_t.
    """

    h: Tensor


@register("s4")
class S4(SSMBlock):
    """S4 layer: DPLR (normal plus low rank) HiPPO-LegS SSM per channel, kernel by Cauchy +
    Woodbury at the roots of unity, FFT convolution.

    Example:
        >>> m = seqlab.mixers.build("s4", dim=64, d_state=32)
        >>> y, state = m(torch.randn(2, 100, 64))          # (2, 100, 64)
        >>> y2, state = m(torch.randn(2, 10, 64), state)  # continue
    """

    no_weight_decay = ("log_dt", "log_neg_lam_re", "lam_im", "P", "B")

    Config = S4Config
    State = S4State
    example_options = {"d_state": 8, "channels": 16}
    cost = ("parallel O(H N L + H L log L + H N^3 log L) time (Cauchy kernels at L roots of unity, "
            "FFT, the dense Ā^L for C (I - Ā^L)), O(H N L) memory; step O(H N) (Woodbury); "
            "state 2*H*N reals, constant in L")

    def __init__(self, dim: int, cfg: S4Config):
        super().__init__(dim, cfg)
        H, N = self.channels, cfg.d_state
        lam, P, B, _ = nplr_legs(N)
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        # Complex parameters are stored as real tensors (Module.to(float64) would otherwise drop
        # their imaginary parts). Re Λ < 0 via its log: with Q = P tied, A's Hermitian part
        # Re Λ - P P^* is then negative definite, so every Ā is stable.
        self.log_dt = nn.Parameter((torch.rand(H, dtype=torch.float64) * (hi - lo) + lo).float())  # (H,)
        self.log_neg_lam_re = nn.Parameter(torch.log(-lam.real).float().repeat(H, 1))   # (H, N)
        self.lam_im = nn.Parameter(lam.imag.float().repeat(H, 1))                        # (H, N)
        self.P = nn.Parameter(torch.view_as_real(P).float().repeat(H, 1, 1))             # (H, N, 2)
        self.B = nn.Parameter(torch.view_as_real(B).float().repeat(H, 1, 1))             # (H, N, 2)
        self.C = nn.Parameter(torch.randn(H, N, 2) * math.sqrt(0.5))                    # (H, N, 2)
        self.D = nn.Parameter(torch.randn(H))                                            # (H,)

    # -- the SSM ----------------------------------------------------------------------------
    def ssm_params(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Δ (H,) real;  Λ, P, B, C: (H, N) complex, from the real parameters in real ``dtype``."""
        dt = torch.exp(self.log_dt.to(dtype))
        lam = torch.complex(-torch.exp(self.log_neg_lam_re.to(dtype)), self.lam_im.to(dtype))
        P, B, C = (torch.view_as_complex(t.to(dtype).contiguous()) for t in (self.P, self.B, self.C))
        return dt, lam, P, B, C

    @staticmethod
    def _dense_abar(dt: Tensor, lam: Tensor, P: Tensor) -> Tensor:
        """Ā = (I - Δ/2 A)^-1 (I + Δ/2 A) materialised: (H, N, N) complex, in O(H N^2)."""
        N = lam.shape[-1]
        eye = torch.eye(N, dtype=lam.dtype, device=lam.device)
        A = torch.diag_embed(lam) - P[..., :, None] * P.conj()[..., None, :]   # (H, N, N)
        A1 = eye + dt[:, None, None] / 2 * A
        # Rows of A1ᵀ are the columns of A1; solve each with the O(N) Woodbury resolvent.
        cols = resolvent(lam[:, None], P[:, None], torch.ones_like(dt)[:, None],
                         (dt / 2)[:, None], A1.transpose(-1, -2))             # (H, j, N)
        return cols.transpose(-1, -2)

    @staticmethod
    def _nodes(length: int, dt: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
        """At z_k = exp(2 pi i k / L): (I - z Ā)^-1 = (p I - q A)^-1 (I - Δ/2 A) with p = 1 - z,
        q = Δ (1 + z) / 2 (neither 1 + z nor 1 - z is divided by, so no node is singular).

        Returns:
            q: (H, L);  r: (H, L, N) the Cauchy denominators 1 / (p_k - q_k λ_n).
        """
        theta = 2 * math.pi * torch.arange(length, dtype=torch.float64, device=dt.device) / length
        # 1 - z = 2 sin^2(θ/2) - i sin θ, accurate near θ = 0 where 1 - cos θ would cancel.
        p = torch.complex(2 * torch.sin(theta / 2) ** 2, -torch.sin(theta)).to(lam.dtype)   # (L,)
        half = torch.complex(torch.cos(theta / 2) ** 2,
                             torch.sin(theta / 2) * torch.cos(theta / 2)).to(lam.dtype)    # (1 + z)/2
        q = dt[:, None] * half                                                  # (H, L)
        r = 1 / (p[:, None] - q[..., None] * lam[:, None, :])                  # (H, L, N)
        return q, r

    def _generating(self, length: int, rdt: torch.dtype):
        """What the parallel face needs for ``length`` tokens: Ā^L, the nodes, and the kernel."""
        dt, lam, P, B, C = self.ssm_params(rdt)
        AL = torch.linalg.matrix_power(self._dense_abar(dt, lam, P), length)  # (H, N, N)
        Ct = C - (C[:, None, :] @ AL)[:, 0]                                   # C̃ = C (I - Ā^L)
        q, r = self._nodes(length, dt, lam)

        def cauchy(a: Tensor, b: Tensor) -> Tensor:                           # sum_n a_n b_n r_kn
            return torch.einsum("hkn,hn->hk", r, a * b)

        # (I - z Ā)^-1 B̄ = (p - q A)^-1 Δ B; Woodbury splits C̃ (p - q A)^-1 B into four Cauchy kernels.
        kCP, kPP = cauchy(Ct, P), cauchy(P.conj(), P)
        den = 1 + q * kPP                                                      # (H, L)
        G = dt[:, None] * (cauchy(Ct, B) - q * kCP * cauchy(P.conj(), B) / den)
        # G_k = sum_l K_l z_k^l = L * ifft(K)_k, so K = fft(G) / L.
        K = torch.fft.fft(G, dim=-1) / length                                  # (H, L) complex
        return dict(dt=dt, lam=lam, P=P, B=B, C=C, Ct=Ct, AL=AL, q=q, r=r, den=den, kCP=kCP, K=K)

    def kernel(self, length: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """The complex kernel K_l = C Ā^l B̄, l < length: (H, length), complex128 for float64.
        The layer convolves with its real part (the impulse response without the D skip)."""
        return self._generating(length, compute_dtype(dtype))["K"]

    def ssm(self, u: Tensor, state: S4State | None) -> tuple[Tensor, S4State]:
        L = u.shape[-1]
        g = self._generating(L, u.dtype)
        dt, lam, P, B, q, r, den = g["dt"], g["lam"], g["P"], g["B"], g["q"], g["r"], g["den"]
        y = causal_conv(u, g["K"].real) + self.D.to(u.dtype)[:, None] * u     # (B, H, L)

        # Final state: for c_r = u_{L-1-r}, sum_r Ā^r B̄ c_r = (1/L) sum_k ĉ_k (I - z_k Ā)^-1 (I - Ā^L) B̄
        # with ĉ = fft(c) (interpolation at the roots of unity), and
        # (I - z Ā)^-1 (I - Ā^L) B̄ = (p - q A)^-1 w,  w = Δ (I - Ā^L) B  (Ā and A commute).
        w = dt[:, None] * (B - (g["AL"] @ B[..., None])[..., 0])              # (H, N)
        s = torch.einsum("hkn,hn->hk", r, P.conj() * w) / den                 # (H, L)
        M = r * (w[:, None, :] - (q * s)[..., None] * P[:, None, :])          # (H, L, N) = (p - qA)^-1 w
        c_hat = torch.fft.fft(u.flip(-1), dim=-1)                              # (B, H, L)
        x = torch.einsum("bhk,hkn->bhn", c_hat, M) / L                        # (B, H, N)
        if state is not None:
            x0 = torch.view_as_complex(state.h.to(u.dtype).contiguous())      # (B, H, N)
            # The state adds Re(C Ā^(t+1) x0) at t; its generating function is
            # C̃ (I - z Ā)^-1 Ā x0 = C̃ (p - q A)^-1 (I + Δ/2 A) x0, by Woodbury again.
            v = x0 + dt[:, None] / 2 * (lam * x0 - P * (P.conj() * x0).sum(-1, keepdim=True))
            kCv = torch.einsum("hkn,bhn->bhk", r * g["Ct"][:, None, :], v)
            kPv = torch.einsum("hkn,bhn->bhk", r * P.conj()[:, None, :], v)
            Gs = kCv - q * g["kCP"] * kPv / den                                # (B, H, L)
            y = y + (torch.fft.fft(Gs, dim=-1) / L).real
            x = x + torch.einsum("hmn,bhn->bhm", g["AL"], x0)
        return y, S4State(h=torch.view_as_real(x))

    def ssm_step(self, u: Tensor, state: S4State) -> tuple[Tensor, S4State]:
        dt, lam, P, B, C = self.ssm_params(u.dtype)
        x = torch.view_as_complex(state.h.to(u.dtype).contiguous())           # (B, H, N)
        # x_t = (I - Δ/2 A)^-1 [(I + Δ/2 A) x_{t-1} + Δ B u_t]: the inverse by Woodbury, O(N).
        v = x + dt[:, None] / 2 * (lam * x - P * (P.conj() * x).sum(-1, keepdim=True)) \
            + (dt * u)[..., None] * B
        x = resolvent(lam, P, torch.ones_like(dt), dt / 2, v)
        y = (C * x).sum(-1).real + self.D.to(u.dtype) * u                      # (B, H)
        return y, S4State(h=torch.view_as_real(x))

    # -- the mixer contract -----------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> S4State:
        h = torch.zeros(batch_size, self.channels, self.cfg.d_state, 2,
                        device=self._state_device(device), dtype=compute_dtype(self._state_dtype(dtype)))
        return S4State(h=h)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.channels * self.cfg.d_state     # N complex = 2N reals per channel

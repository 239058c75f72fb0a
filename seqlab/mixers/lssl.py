"""LSSL: the Linear State-Space Layer (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré 2021),
https://arxiv.org/abs/2110.13985

Per channel, a dense N x N state matrix A (HiPPO-LegS, optionally trained) and B, discretised
by the bilinear transform with a learned step Δ (Ā = (I - Δ/2 A)^-1 (I + Δ/2 A), B̄ = (I - Δ/2 A)^-1 Δ B):
    x_t = Ā x_{t-1} + B̄ u_t;   y_t = C x_t + D u_t
Parallel face: y = K * u (FFT, length 2L) with K_l = C Ā^l B̄ read off the Krylov matrix
[B̄, ĀB̄, Ā²B̄, ...], built by doubling. The block around the SSM is S4's:
[input linear to H channels] -> SSM -> GELU -> linear [-> GLU].

This file also holds what the dense-HiPPO family shares (``hippo_legs``, ``causal_conv``,
``compute_dtype``, ``SSMBlock``); ``seqlab.mixers.s4`` imports them from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.state import State


# -- shared by the HiPPO mixers (lssl, s4) ------------------------------------------------------
def hippo_legs(d_state: int, *, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """The HiPPO-LegS state matrix and input vector (HiPPO paper, Theorem 2, sign flipped so
    that A is stable): dc/dt = (1/t) (A c + B u) keeps c_n(t) = <u, sqrt(2n+1) P_n(2s/t - 1)>
    over the uniform measure on [0, t].

        A_nk = -sqrt(2n+1) sqrt(2k+1)  (n > k),   -(n+1)  (n = k),   0  (n < k);   B_n = sqrt(2n+1)

    Returns:
        A: (N, N) lower triangular with eigenvalues -1, ..., -N;  B: (N,).

    Example:
        >>> A, B = hippo_legs(4)
        >>> A[1, 0], A[1, 1], B[1]        # -sqrt(3), -2, sqrt(3)
    """
    q = torch.sqrt(2 * torch.arange(d_state, dtype=torch.float64) + 1)         # (N,)
    A = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(torch.arange(1, d_state + 1, dtype=torch.float64))
    return A.to(device=device, dtype=dtype), q.to(device=device, dtype=dtype)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype an SSM runs in: float64 for float64 activations, float32 otherwise.
    Powers Ā^l lose accuracy fast in half precision, and FFTs need float32/64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def causal_conv(u: Tensor, K: Tensor) -> Tensor:
    """Causal convolution y_t = sum_{l <= t} K_l u_{t-l} by FFT: u (B, H, L), K (H, L) -> (B, H, L).

    Both are zero-padded to 2L so that the circular FFT convolution is the linear one.
    """
    L = u.shape[-1]
    n = 2 * L
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)[..., :L]


def krylov(M: Tensor, v: Tensor, length: int) -> Tensor:
    """The Krylov matrix [v, M v, M^2 v, ..., M^(length-1) v] by doubling.

    Each round appends M^m [v ... M^(m-1) v] and squares M^m: log2(length) batched matmuls
    instead of ``length`` dependent matrix-vector products.

    Args:
        M: (..., N, N);  v: (..., N);  length: number of columns (>= 1).

    Returns:
        (..., N, length).
    """
    V, P = v[..., None], M                                                   # (..., N, 1), M^1
    while V.shape[-1] < length:
        V = torch.cat([V, P @ V], dim=-1)                                    # columns 0 .. 2m-1
        if V.shape[-1] < length:
            P = P @ P
    return V[..., :length]


class SSMBlock(Mixer):
    """The block around a per-channel SSM, as in S4 and S4D:
    [input linear dim -> H] -> SSM -> GELU -> linear H -> dim (or 2 dim and a GLU).

    Subclasses implement ``ssm(u, state) -> (y, state)`` on ``u: (B, H, L)`` in the SSM's real
    dtype (``compute_dtype``) and ``ssm_step(u_t, state) -> (y_t, state)`` on ``u_t: (B, H)``.
    Their configs carry ``channels: int | None`` and ``glu: bool``.
    """

    def __init__(self, dim: int, cfg: Config):
        super().__init__(dim, cfg)
        self.channels = cfg.channels or dim
        self.in_proj = nn.Linear(dim, self.channels) if cfg.channels is not None else None
        self.out_proj = nn.Linear(self.channels, 2 * dim if cfg.glu else dim)

    def ssm(self, u: Tensor, state: State | None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def ssm_step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def _block_in(self, x: Tensor) -> Tensor:
        u = self.in_proj(x) if self.in_proj is not None else x
        return u.to(compute_dtype(x.dtype))

    def _block_out(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        y = self.out_proj(F.gelu(y.to(dtype)))
        return F.glu(y, dim=-1) if self.cfg.glu else y

    def mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        u = self._block_in(x).transpose(1, 2)                                # (B, H, L)
        # The SSM runs in float32/64 even under autocast (powers of Ā in bf16 drift).
        with torch.autocast(x.device.type, enabled=False):
            y, state = self.ssm(u, state)                                    # (B, H, L)
        return self._block_out(y.transpose(1, 2), x.dtype), state

    def step_unchecked(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        u = self._block_in(x_t)                                              # (B, H)
        with torch.autocast(x_t.device.type, enabled=False):
            y, state = self.ssm_step(u, state)
        return self._block_out(y, x_t.dtype), state


# -- the LSSL mixer -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SSMConfig(Config):
    """Options the HiPPO-LegS mixers share (``lssl``, ``s4``).

    Attributes:
        d_state: N, the HiPPO-LegS order.
        dt_min, dt_max: range of the initial step size Δ, drawn log-uniformly per channel
            (Δ is learned as log Δ).
        channels: H, channels the SSM runs on; None means H = dim with no input projection.
        glu: output linear to 2*dim followed by a GLU instead of a plain linear to dim.
    """

    d_state: int = 64
    dt_min: float = 0.001
    dt_max: float = 0.1
    channels: int | None = None
    glu: bool = True

    def validate(self) -> None:
        require(self.d_state >= 1, self, "d_state", "an int >= 1")
        require(self.dt_min > 0, self, "dt_min", "a positive number")
        require(self.dt_max >= self.dt_min, self, "dt_max", f"a number >= dt_min = {self.dt_min}")
        require(self.channels is None or self.channels > 0, self, "channels",
                "None (H = dim) or a positive int")


@dataclass(frozen=True)
class LSSLConfig(SSMConfig):
    """Options of the LSSL mixer: :class:`SSMConfig`'s (d_state: the real state size per
    channel) and

    Attributes:
        train_A: learn A (shared by all channels, initialised at HiPPO-LegS); otherwise A is
            the exact HiPPO-LegS matrix, rebuilt in the compute dtype at each call. B is
            HiPPO-LegS's and fixed either way.
    """

    train_A: bool = False


@dataclass(frozen=True)
class LSSLState(State):
    """Attributes:
        x: (B, H, N) the HiPPO coefficients x_t of each channel (float32/64)."""

    x: Tensor


def _init_log_dt(H: int, dt_min: float, dt_max: float) -> Tensor:
    lo, hi = math.log(dt_min), math.log(dt_max)
    return torch.rand(H, dtype=torch.float64) * (hi - lo) + lo


@register("lssl")
class LSSL(SSMBlock):
    """LSSL layer: dense HiPPO-LegS SSM per channel, bilinear discretisation, FFT convolution.

    Example:
        >>> m = seqlab.mixers.build("lssl", dim=64, d_state=32)
        >>> y, state = m(torch.randn(2, 100, 64))          # (2, 100, 64)
        >>> y2, state = m(torch.randn(2, 10, 64), state)  # continue
    """

    no_weight_decay = ("log_dt", "A")

    Config = LSSLConfig
    State = LSSLState
    example_options = {"d_state": 8, "channels": 16, "train_A": True}
    cost = ("parallel O(H N^2 L + H N^3 log L + H L log L) time (Krylov doubling, FFT), "
            "O(H N L) memory; step O(H N^2) after an O(H N^3) discretisation; "
            "state H*N reals, constant in L")

    def __init__(self, dim: int, cfg: LSSLConfig):
        super().__init__(dim, cfg)
        H, N = self.channels, cfg.d_state
        A, _ = hippo_legs(N)
        # A fixed at HiPPO-LegS is not stored: rebuilt exactly in the compute dtype, so that a
        # float32 module still has the exact matrix in float64.
        if cfg.train_A:
            self.A = nn.Parameter(A.float())                                   # (N, N), shared
        else:
            self.register_parameter("A", None)
        self.log_dt = nn.Parameter(_init_log_dt(H, cfg.dt_min, cfg.dt_max).float())   # (H,)
        self.C = nn.Parameter(torch.randn(H, N) / math.sqrt(N))                # (H, N)
        self.D = nn.Parameter(torch.randn(H))                                  # (H,)

    # -- the SSM ----------------------------------------------------------------------------
    def discretize(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Bilinear transform in real ``dtype``.

        Returns:
            Ā: (H, N, N) (I - Δ/2 A)^-1 (I + Δ/2 A);  B̄: (H, N) (I - Δ/2 A)^-1 Δ B;  C: (H, N).
        """
        device = self.log_dt.device
        A, B = hippo_legs(self.cfg.d_state, dtype=dtype, device=device)
        if self.A is not None:
            A = self.A.to(dtype)
        dt = torch.exp(self.log_dt.to(dtype))[:, None, None]                   # (H, 1, 1)
        eye = torch.eye(self.cfg.d_state, dtype=dtype, device=device)
        # One solve for both: [Ā | B̄] = (I - Δ/2 A)^-1 [I + Δ/2 A | Δ B].
        rhs = torch.cat([eye + dt / 2 * A, dt * B[:, None]], dim=-1)          # (H, N, N+1)
        sol = torch.linalg.solve(eye - dt / 2 * A, rhs)
        return sol[..., :-1], sol[..., -1], self.C.to(dtype)

    def kernel(self, length: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """The convolution kernel K_l = C Ā^l B̄, l < length: (H, length) in ``compute_dtype(dtype)``.
        It is the impulse response of the recurrence without the D skip."""
        Abar, Bbar, C = self.discretize(compute_dtype(dtype))
        return torch.einsum("hn,hnl->hl", C, krylov(Abar, Bbar, length))

    def ssm(self, u: Tensor, state: LSSLState | None) -> tuple[Tensor, LSSLState]:
        L = u.shape[-1]
        Abar, Bbar, C = self.discretize(u.dtype)
        V = krylov(Abar, Bbar, L)                                              # (H, N, L): Ā^l B̄
        y = causal_conv(u, torch.einsum("hn,hnl->hl", C, V)) + self.D.to(u.dtype)[:, None] * u
        # Final state x_{L-1} = Ā^L x0 + sum_r Ā^r B̄ u_{L-1-r}: the Krylov matrix against the
        # reversed input (one matmul, no token loop).
        x = torch.einsum("hnl,bhl->bhn", V, u.flip(-1))                       # (B, H, N)
        if state is not None:
            x0 = state.x.to(u.dtype)                                           # (B, H, N)
            # The state adds C Ā^(t+1) x0 at t: rows C Ā^(l+1) as a Krylov matrix of Āᵀ.
            At = Abar.transpose(-1, -2)
            W = krylov(At, (At @ C[..., None])[..., 0], L)                     # (H, N, L)
            y = y + torch.einsum("hnl,bhn->bhl", W, x0)
            x = x + torch.einsum("hmn,bhn->bhm", torch.linalg.matrix_power(Abar, L), x0)
        return y, LSSLState(x=x)

    def ssm_step(self, u: Tensor, state: LSSLState) -> tuple[Tensor, LSSLState]:
        Abar, Bbar, C = self.discretize(u.dtype)
        x = torch.einsum("hmn,bhn->bhm", Abar, state.x.to(u.dtype)) + Bbar * u[..., None]
        y = (C * x).sum(-1) + self.D.to(u.dtype) * u                          # (B, H)
        return y, LSSLState(x=x)

    # -- the mixer contract -----------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LSSLState:
        x = torch.zeros(batch_size, self.channels, self.cfg.d_state,
                        device=self._state_device(device), dtype=compute_dtype(self._state_dtype(dtype)))
        return LSSLState(x=x)

    def state_size(self, seq_len: int) -> int:
        return self.channels * self.cfg.d_state

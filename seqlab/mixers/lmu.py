"""LMU: the Legendre Memory Unit (Voelker, Kajić, Eliasmith, NeurIPS 2019), as in LMUFormer
(Liu et al. 2024, https://arxiv.org/abs/2402.04882), parallelised as in Chilkuri &
Eliasmith, ICML 2021 (https://proceedings.mlr.press/v139/chilkuri21a.html).

A fixed linear memory (the Padé approximant of a delay of theta steps, order N,
zero-order hold) on C memory channels u_t = W_u x_t, then a nonlinear readout:
    m_t = Abar m_{t-1} + Bbar u_t^T          (m_t: (C, N); Abar, Bbar fixed)
    h_t = act(W_h [vec(m_t); x_t] + b_h);    y_t = W_out h_t
act is GELU, or (``spiking``) leaky integrate-and-fire neurons whose membrane
potential v is carried in the state. Parallel face: m = K * u, a causal FFT
convolution with the impulse response K_k = Abar^k Bbar (built in float64 by
doubling), plus Abar^(t+1) m_0 from the incoming state; the LIF neurons, which
reset nonlinearly, then run as L elementwise steps. Recurrent face: the lines
above, token by token.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.state import State, StateError

# Slope of the sigmoid whose derivative stands in for the Heaviside's in the
# backward pass (spikingjelly's default surrogate, which LMUFormer's LIF uses).
SURROGATE_ALPHA = 4.0


@dataclass(frozen=True)
class LMUConfig(Config):
    """Options of the LMU mixer.

    Attributes:
        order: N, Legendre coefficients kept per memory channel (the order of
            the Padé approximant of the delay).
        theta: the window the memory represents, in tokens: m_t encodes
            u over (t - theta, t].
        memory: C, memory channels; u_t = W_u x_t projects dim -> C (a few
            channels, not one per feature: the readout sees C*N numbers).
        hidden: width of the readout h_t; None means dim.
        spiking: leaky integrate-and-fire neurons on the readout instead of
            GELU (LMUFormer's spiking LMU); the output is then W_out of 0/1 spikes,
            trained through a sigmoid-derivative surrogate gradient.
        tau: LIF membrane time constant, v_t = v_{t-1} + (pre_t - v_{t-1}) / tau
            (only with spiking).
        threshold: LIF firing threshold; a spike resets v to 0 (only with spiking).
    """

    order: int = 32
    theta: float = 64.0
    memory: int = 4
    hidden: int | None = None
    spiking: bool = False
    tau: float = 2.0
    threshold: float = 1.0

    def validate(self) -> None:
        require(self.order >= 1, self, "order", "a positive int (Legendre coefficients per channel)")
        require(self.theta > 0, self, "theta", "a positive number of tokens")
        require(self.memory >= 1, self, "memory", "a positive int (memory channels)")
        require(self.hidden is None or self.hidden >= 1, self, "hidden", "None (= dim) or a positive int")
        require(self.tau >= 1, self, "tau", "a number >= 1 (the leak 1 - 1/tau must lie in [0, 1))")
        require(self.threshold > 0, self, "threshold", "a positive number")


@dataclass(frozen=True)
class LMUState(State):
    """Legendre memory of each channel, and the LIF membrane potentials.

    Attributes:
        m: (B, C, N) memory m_t.
        v: (B, hidden) membrane potentials after the last reset (spiking only;
            None otherwise).
    """

    m: Tensor
    v: Tensor | None = None


def legendre_delay_system(order: int, theta: float) -> tuple[Tensor, Tensor]:
    """The LMU's continuous-time system dm/dt = A m + B u (Voelker et al. 2019, eq. 2).

    A[i, j] = (2i+1)/theta * (-1 if i < j else (-1)^(i-j+1)),  B[i] = (2i+1) (-1)^i / theta.

    Returns:
        A: (order, order) float64;  B: (order,) float64.
    """
    i = torch.arange(order, dtype=torch.float64)
    scale = (2 * i + 1) / theta                                                 # (N,)
    # (-1)^(i-j+1) below and on the diagonal, -1 above it.
    sign = torch.where(i[:, None] < i[None, :], -1.0, (-1.0) ** (i[:, None] - i[None, :] + 1))
    return scale[:, None] * sign, scale * (-1.0) ** i


@functools.lru_cache(maxsize=64)
def discretized_system(order: int, theta: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Zero-order hold of the delay system at step 1, in float64 on ``device``.

    exp([[A, B], [0, 0]]) = [[Abar, Bbar], [0, 1]]: one matrix exponential gives
    Abar = e^A and Bbar = A^{-1} (e^A - I) B without inverting A. Computed once
    per (order, theta, device): the system is fixed, so this memo is a constant
    table, not a state.

    Returns:
        Abar: (order, order);  Bbar: (order,), both float64 (treat as read-only).
    """
    A, B = legendre_delay_system(order, theta)
    M = torch.zeros(order + 1, order + 1, dtype=torch.float64)
    M[:order, :order], M[:order, order] = A, B
    E = torch.linalg.matrix_exp(M)
    return E[:order, :order].to(device), E[:order, order].to(device)


def powers_apply(Abar: Tensor, v: Tensor, length: int) -> Tensor:
    """Abar^k v for k < length by doubling: v (..., N) -> (length, ..., N).

    Each round appends Abar^n (Abar^k v) for the n rows already there, so the
    cost is O(length N^2) plus O(N^3 log length) for the squarings.
    """
    out, P = v[None], Abar                                                     # P = Abar^(rows of out)
    while out.shape[0] < length:
        out = torch.cat([out, out @ P.transpose(0, 1)], 0)
        P = P @ P
    return out[:length]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # The memory runs in float32/64 (FFTs need it, and low-order Legendre
    # coefficients hold long sums); float64 activations keep float64.
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Spike(torch.autograd.Function):
    """Heaviside(z) forward; d/dz of sigmoid(alpha z) backward (the surrogate)."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        s = torch.sigmoid(SURROGATE_ALPHA * z)
        return grad * SURROGATE_ALPHA * s * (1 - s)


@register("lmu")
class LMU(Mixer):
    """Legendre Memory Unit with a fixed delay memory and a GELU or spiking readout.

    Example:
        >>> m = seqlab.mixers.build("lmu", dim=64, order=16, theta=32.0, memory=4)
        >>> y, state = m(torch.randn(2, 100, 64))          # (2, 100, 64)
        >>> y2, state = m(torch.randn(2, 10, 64), state)  # continue
        >>> s = seqlab.mixers.build("lmu", dim=64, spiking=True)   # LIF readout
    """

    Config = LMUConfig
    State = LMUState
    example_options = {"order": 6, "theta": 8.0, "memory": 3, "hidden": 20}
    cost = ("parallel O(C N L log L + L (C N + dim) hidden) time, O(C N L) memory (FFT "
            "convolution; kernel O(N^2 L + N^3 log L) in float64; spiking adds L elementwise "
            "steps); step O(C N^2 + (C N + dim) hidden); state C*N reals (+ hidden if "
            "spiking), constant in L")

    def __init__(self, dim: int, cfg: LMUConfig):
        super().__init__(dim, cfg)
        self.hidden = cfg.hidden or dim
        C, N = cfg.memory, cfg.order
        self.in_proj = nn.Linear(dim, C)                                       # u_t = W_u x_t
        self.h_proj = nn.Linear(C * N + dim, self.hidden)                      # W_h [vec(m_t); x_t]
        self.out_proj = nn.Linear(self.hidden, dim, bias=False)

    def system(self, device) -> tuple[Tensor, Tensor]:
        """(Abar, Bbar) in float64 on ``device`` (fixed, not learned)."""
        return discretized_system(self.cfg.order, float(self.cfg.theta), torch.device(device))

    def kernel(self, length: int, device=None) -> Tensor:
        """Impulse response K_k = Abar^k Bbar for k < length: (length, N) float64."""
        Abar, Bbar = self.system(device or self._state_device(None))
        return powers_apply(Abar, Bbar, length)

    # -- the memory --------------------------------------------------------------
    def memory(self, u: Tensor, m0: Tensor | None = None) -> Tensor:
        """Parallel memory: every m_t for u (B, L, C) from m_{-1} = m0 (B, C, N) or 0.

        u must be float32 or float64; the result has its dtype.

        Returns:
            (B, L, C, N): m_t for t < L.
        """
        L, rdt = u.shape[1], u.dtype
        K = self.kernel(L, u.device).to(rdt)                                   # (L, N)
        n = 2 * L            # zero-padding makes the circular FFT convolution causal
        Uf = torch.fft.rfft(u.transpose(1, 2), n=n)                            # (B, C, F)
        Kf = torch.fft.rfft(K.transpose(0, 1), n=n)                            # (N, F)
        m = torch.fft.irfft(Uf[:, :, None, :] * Kf, n=n)[..., :L]              # (B, C, N, L)
        m = m.permute(0, 3, 1, 2)                                              # (B, L, C, N)
        if m0 is not None:
            Abar, _ = self.system(u.device)
            Abar = Abar.to(rdt)
            # m_t gains Abar^(t+1) m0 from the incoming state.
            m = m + powers_apply(Abar, m0 @ Abar.transpose(0, 1), L).transpose(0, 1)
        return m

    def _lif(self, v: Tensor, pre: Tensor) -> tuple[Tensor, Tensor]:
        """One LIF step: charge, fire at threshold, hard reset to 0 -> (v, spikes)."""
        v = v + (pre - v) / self.cfg.tau
        s = _Spike.apply(v - self.cfg.threshold)
        # The reset is detached (LMUFormer's detach_reset): gradients flow through the
        # charge and the surrogate, not through which neurons were reset.
        return v * (1 - s.detach()), s

    def _readout(self, m: Tensor, x: Tensor) -> Tensor:
        """Pre-activations W_h [vec(m); x] + b_h: m (..., C, N), x (..., dim) -> (..., hidden)."""
        return self.h_proj(torch.cat([m.flatten(-2).to(x.dtype), x], -1))

    # -- the mixer contract -------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LMUState:
        dtype = _compute_dtype(self._state_dtype(dtype))
        device = self._state_device(device)
        m = torch.zeros(batch_size, self.cfg.memory, self.cfg.order, device=device, dtype=dtype)
        v = torch.zeros(batch_size, self.hidden, device=device, dtype=dtype) if self.cfg.spiking else None
        return LMUState(m=m, v=v)

    def state_size(self, seq_len: int) -> int:
        return self.cfg.memory * self.cfg.order + (self.hidden if self.cfg.spiking else 0)

    def check_state(self, state: State, batch_size: int) -> None:
        super().check_state(state, batch_size)
        want = (self.cfg.memory, self.cfg.order)
        if tuple(state.m.shape[1:]) != want:
            raise StateError(f"lmu state memory has shape (B, C, N) = {tuple(state.m.shape)} but this "
                             f"mixer has memory = {want[0]}, order = {want[1]}")
        if (state.v is not None) != self.cfg.spiking:
            raise StateError(f"lmu state {'has' if state.v is not None else 'lacks'} LIF potentials v "
                             f"but this mixer has spiking = {self.cfg.spiking}; use its init_state")

    def mix(self, x: Tensor, state: LMUState | None) -> tuple[Tensor, LMUState]:
        B, L, _ = x.shape
        rdt = _compute_dtype(x.dtype)
        u = self.in_proj(x).to(rdt)                                            # (B, L, C)
        with torch.autocast(x.device.type, enabled=False):
            m = self.memory(u, None if state is None else state.m.to(rdt))    # (B, L, C, N)
        pre = self._readout(m, x)                                              # (B, L, hidden)
        v = None
        if self.cfg.spiking:
            v = (torch.zeros(B, self.hidden, device=x.device, dtype=rdt) if state is None
                 else state.v.to(rdt))
            spikes = []
            for t in range(L):   # the reset is nonlinear: no scan, but only elementwise work
                v, s = self._lif(v, pre[:, t].to(rdt))
                spikes.append(s)
            h = torch.stack(spikes, 1).to(x.dtype)
        else:
            h = F.gelu(pre)
        # clone: a view would keep the whole (B, L, C, N) memory alive inside the state
        return self.out_proj(h), LMUState(m=m[:, -1].clone(), v=v)

    def step_unchecked(self, x_t: Tensor, state: LMUState) -> tuple[Tensor, LMUState]:
        rdt = _compute_dtype(x_t.dtype)
        Abar, Bbar = (t.to(rdt) for t in self.system(x_t.device))
        u = self.in_proj(x_t).to(rdt)                                          # (B, C)
        m = state.m.to(rdt) @ Abar.transpose(0, 1) + u[..., None] * Bbar      # (B, C, N)
        pre = self._readout(m, x_t)                                            # (B, hidden)
        v = None
        if self.cfg.spiking:
            v, s = self._lif(state.v.to(rdt), pre.to(rdt))
            h = s.to(x_t.dtype)
        else:
            h = F.gelu(pre)
        return self.out_proj(h), LMUState(m=m, v=v)

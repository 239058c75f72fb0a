"""S4D: the diagonal state space layer (Gu, Gupta, Goel, Ré 2022), https://arxiv.org/abs/2206.11893

Per channel, N/2 complex diagonal modes discretised by zero-order hold
(dA = exp(Δ A), dB = (dA - 1) / A · B):
    h_t = dA ⊙ h_{t-1} + dB x_t;   y_t = 2 Re(C · h_t) + D x_t
Parallel face: y = K * x, a causal convolution (FFT, length 2L) with the kernel
K_l = 2 Re(C · dA^l dB) from a Vandermonde matrix (factored as dA^(blk j + i)
so that it is two sqrt(L)-sized factors and matmuls). The block around the
SSM follows S4D's: [input linear to H channels] -> SSM -> GELU -> linear [-> GLU].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.state import State


@dataclass(frozen=True)
class S4DConfig(Config):
    """Options of the S4D mixer.

    Attributes:
        d_state: N, real state size per channel; the layer keeps N/2 complex
            modes (one of each conjugate pair; the other half is implied by
            taking 2 Re(.)).
        init: how the diagonal A (and B) start, all HiPPO-derived (S4D paper, Sec. 4):
            ``"legendre"`` (S4D-LegS) the eigenvalues of the normal part of
            HiPPO-LegS, B = V^* B_LegS in its eigenbasis; ``"lin"`` (S4D-Lin)
            A_n = -1/2 + i pi n; ``"inv"`` (S4D-Inv) A_n = -1/2 + i N/pi (N/(2n+1) - 1).
        dt_min, dt_max: range of the initial step size Δ, drawn log-uniformly
            per channel (Δ is learned as log Δ).
        channels: H, channels the SSM runs on; None means H = dim with no input
            projection, otherwise a linear layer maps dim -> H first.
        glu: output linear to 2*dim followed by a GLU (S4D's block) instead of a
            plain linear to dim.
    """

    d_state: int = 64
    init: Literal["legendre", "lin", "inv"] = "legendre"
    dt_min: float = 0.001
    dt_max: float = 0.1
    channels: int | None = None
    glu: bool = True

    def validate(self) -> None:
        require(self.d_state >= 2 and self.d_state % 2 == 0, self, "d_state",
                "an even int >= 2 (the layer keeps d_state / 2 complex modes)")
        require(self.dt_min > 0, self, "dt_min", "a positive number")
        require(self.dt_max >= self.dt_min, self, "dt_max", f"a number >= dt_min = {self.dt_min}")
        require(self.channels is None or self.channels > 0, self, "channels",
                "None (H = dim) or a positive int")


@dataclass(frozen=True)
class S4DState(State):
    """Complex SSM state stored as its real view, so that select/clone/cat and
    casting modules to a real dtype treat it like any other tensor.

    Attributes:
        h: (B, H, N/2, 2) real and imaginary parts of h_t.
    """

    h: Tensor


def legendre_modes(d_state: int) -> tuple[Tensor, Tensor]:
    """Diagonal of the HiPPO-LegS normal part: (A, B) for the N/2 modes with Im A >= 0.

    HiPPO-LegS is normal plus low rank: A_LegS = S - P P^T with
    S = -1/2 I + (skew-symmetric), P_n = sqrt(n + 1/2). S is diagonalised
    exactly by a unitary V; its eigenvalues come in conjugate pairs, so one of
    each pair is kept and B = V^* B_LegS (B_LegS,n = sqrt(2n+1)) is expressed in
    that eigenbasis.

    Returns:
        A: (N/2,) complex128, real parts -1/2, imaginary parts descending.
        B: (N/2,) complex128.
    """
    q = torch.sqrt(2 * torch.arange(d_state, dtype=torch.float64) + 1)       # (N,)
    # Skew part of S: -q_n q_k / 2 below the diagonal, +q_n q_k / 2 above.
    qq = q[:, None] * q[None, :] / 2
    skew = torch.triu(qq, 1) - torch.tril(qq, -1)                              # (N, N)
    # -i * skew is Hermitian: eigh is exact and well conditioned (eig is not).
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))                 # ascending
    keep = torch.arange(d_state - 1, d_state // 2 - 1, -1)                     # largest N/2
    A = torch.complex(torch.full((d_state // 2,), -0.5, dtype=torch.float64), mu[keep])
    B = V[:, keep].mH @ q.to(torch.complex128)
    return A, B


def _init_modes(init: str, d_state: int) -> tuple[Tensor, Tensor]:
    """(A, B), each (N/2,) complex128, for one channel."""
    if init == "legendre":
        return legendre_modes(d_state)
    n = torch.arange(d_state // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n
    else:  # "inv": the asymptotics of the LegS eigenvalues
        imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)
    A = torch.complex(torch.full_like(n, -0.5), imag)
    return A, torch.ones_like(A)


def _cexp(z: Tensor) -> Tensor:
    """exp of a complex tensor through real exp/cos/sin: about 3x faster than
    torch.exp on complex inputs on CPU, and as accurate."""
    return torch.polar(torch.exp(z.real), z.imag)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Powers dA^l lose phase accuracy quickly; never go below float32 (and FFTs
    # need float32/64 anyway). float64 activations get a complex128 kernel.
    return torch.float64 if dtype == torch.float64 else torch.float32


@register("s4d")
class S4D(Mixer):
    """S4D layer: diagonal complex SSM per channel, FFT-convolution parallel face.

    Example:
        >>> m = seqlab.mixers.build("s4d", dim=64, d_state=32, init="lin")
        >>> y, state = m(torch.randn(2, 100, 64))          # (2, 100, 64)
        >>> y2, state = m(torch.randn(2, 10, 64), state)  # continue
    """

    no_weight_decay = ("log_dt", "log_neg_A_re", "A_im")

    Config = S4DConfig
    State = S4DState
    example_options = {"d_state": 8, "channels": 16}
    cost = ("parallel O(H N L + H L log L) time, O(H (L + N sqrt L)) memory (blocked "
            "Vandermonde matmuls + FFT); "
            "step O(H N); state H*N reals, constant in L")

    def __init__(self, dim: int, cfg: S4DConfig):
        super().__init__(dim, cfg)
        H, half = cfg.channels or dim, cfg.d_state // 2
        self.channels = H
        self.in_proj = nn.Linear(dim, H) if cfg.channels is not None else None

        A, B = _init_modes(cfg.init, cfg.d_state)
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) \
            + math.log(cfg.dt_min)
        # Complex parameters are stored as real tensors: Module.to(float64) would
        # otherwise drop their imaginary parts. Re A is kept negative via its log.
        self.log_dt = nn.Parameter(log_dt.float())                                        # (H,)
        self.log_neg_A_re = nn.Parameter(torch.log(-A.real).float().repeat(H, 1))         # (H, N/2)
        self.A_im = nn.Parameter(A.imag.float().repeat(H, 1))                             # (H, N/2)
        self.B = nn.Parameter(torch.view_as_real(B).float().repeat(H, 1, 1))              # (H, N/2, 2)
        # C ~ complex standard normal (variance 1/2 per real part), as in S4D.
        self.C = nn.Parameter(torch.randn(H, half, 2) * math.sqrt(0.5))                  # (H, N/2, 2)
        self.D = nn.Parameter(torch.randn(H))                                             # (H,)
        self.out_proj = nn.Linear(H, 2 * dim if cfg.glu else dim)

    # -- the SSM ----------------------------------------------------------------
    def discretize(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Zero-order hold in real ``dtype`` (float32/64) and its complex counterpart.

        Returns:
            dtA: (H, N/2) Δ A;  dA: (H, N/2) exp(Δ A);  dB: (H, N/2) (dA - 1)/A · B;
            C: (H, N/2).
        """
        dt = torch.exp(self.log_dt.to(dtype))                                              # (H,)
        A = torch.complex(-torch.exp(self.log_neg_A_re.to(dtype)), self.A_im.to(dtype))   # (H, N/2)
        dtA = dt[:, None] * A
        dA = _cexp(dtA)
        dB = (dA - 1) / A * torch.view_as_complex(self.B.to(dtype))
        return dtA, dA, dB, torch.view_as_complex(self.C.to(dtype))

    @staticmethod
    def _vandermonde(dtA: Tensor, length: int) -> tuple[Tensor, Tensor, int]:
        """dA^l for l < length, factored as l = blk*j + i: dA^l = lo[..., i] * hi[..., j].

        Materialising the full (H, N/2, L) Vandermonde costs one complex exp per
        entry (slow, and O(H N L) memory); with blk ~ sqrt(L) its products
        become batched matmuls against these two small factors instead.

        Returns:
            lo: (H, N/2, blk) dA^i;  hi: (H, N/2, J) dA^(blk j), blk * J >= length;  blk.
        """
        blk = math.isqrt(max(length, 1) - 1) + 1                                # ceil(sqrt(length))
        J = -(-length // blk)
        r = dtA.real.dtype
        i = torch.arange(blk, device=dtA.device, dtype=r)
        j = torch.arange(J, device=dtA.device, dtype=r) * blk
        return _cexp(dtA[..., None] * i), _cexp(dtA[..., None] * j), blk

    @staticmethod
    def _vandermonde_apply(z: Tensor, lo: Tensor, hi: Tensor, length: int) -> Tensor:
        """sum_n z[..., n] dA_n^l for l < length: z (..., H, N/2) -> (..., H, length) complex."""
        # [.., i, j] = sum_n z_n dA_n^i dA_n^(blk j): a matmul over the modes.
        out = torch.matmul((z[..., None] * lo).transpose(-1, -2), hi)          # (..., H, blk, J)
        return out.transpose(-1, -2).flatten(-2)[..., :length]                 # l = blk*j + i

    def kernel(self, length: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """The SSM's convolution kernel K_l = 2 Re(C · dA^l dB), l < length: (H, length).

        It is the impulse response of the recurrence without the D skip; built
        in complex128 for float64 and complex64 otherwise.
        """
        dtA, _, dB, C = self.discretize(_compute_dtype(dtype))
        lo, hi, _ = self._vandermonde(dtA, length)
        return 2 * self._vandermonde_apply(C * dB, lo, hi, length).real

    def _block_out(self, y: Tensor) -> Tensor:
        """GELU -> output linear [-> GLU]: (..., H) -> (..., dim)."""
        y = self.out_proj(F.gelu(y))
        return F.glu(y, dim=-1) if self.cfg.glu else y

    def _ssm(self, u: Tensor, state: S4DState | None) -> tuple[Tensor, Tensor]:
        """Parallel SSM on u (B, H, L) in a float dtype: y (B, H, L) and final h (B, H, N/2) complex."""
        L, rdt = u.shape[-1], u.dtype
        dtA, _, dB, C = self.discretize(rdt)
        lo, hi, blk = self._vandermonde(dtA, L + 1)                            # powers 0..L
        K = 2 * self._vandermonde_apply(C * dB, lo, hi, L).real                # (H, L)
        # Zero-pad to 2L so the circular FFT convolution is the causal linear one.
        n = 2 * L
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)[..., :L]
        y = y + self.D.to(rdt)[:, None] * u                                    # (B, H, L)

        # Final state h_{L-1} = dA^L h0 + dB sum_r dA^r u_{L-1-r}: the sum is a
        # matmul of the reversed input against the Vandermonde (no token loop),
        # done blockwise: r = blk*j + i.
        J = hi.shape[-1]
        ur = F.pad(u.flip(-1), (0, blk * J - L)).unflatten(-1, (J, blk))      # (B, H, J, blk)
        # Real input times complex powers as one real matmul (no complex cast of u).
        lo_r = torch.view_as_real(lo).transpose(-2, -3).flatten(-2)            # (H, blk, N/2*2)
        inner = torch.view_as_complex(torch.matmul(ur, lo_r).unflatten(-1, (-1, 2)))  # (B, H, J, N/2)
        h = dB * (inner * hi.transpose(-1, -2)).sum(-2)                        # (B, H, N/2)
        if state is not None:
            h0 = torch.view_as_complex(state.h.to(rdt).contiguous())          # (B, H, N/2)
            # h_t = dA^(t+1) h0 + (input terms): the state adds 2 Re(C dA^(t+1) h0) at t.
            y = y + 2 * self._vandermonde_apply(C * h0, lo, hi, L + 1)[..., 1:].real
            h = h + _cexp(dtA * L) * h0
        return y, h

    # -- the mixer contract -------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> S4DState:
        dtype = _compute_dtype(self._state_dtype(dtype))
        h = torch.zeros(batch_size, self.channels, self.cfg.d_state // 2, 2,
                        device=self._state_device(device), dtype=dtype)
        return S4DState(h=h)

    def state_size(self, seq_len: int) -> int:
        return self.channels * self.cfg.d_state     # N/2 complex = N reals per channel

    def mix(self, x: Tensor, state: S4DState | None) -> tuple[Tensor, S4DState]:
        rdt = _compute_dtype(x.dtype)
        u = self.in_proj(x) if self.in_proj is not None else x                 # (B, L, H)
        u = u.transpose(1, 2).to(rdt)                                          # (B, H, L)

        # The SSM runs in float32/64 even under autocast: powers dA^l in bf16
        # lose their phase within a few steps (and bf16 has no complex dtype).
        with torch.autocast(x.device.type, enabled=False):
            y, h = self._ssm(u, state)                                         # (B, H, L), (B, H, N/2)
        y = self._block_out(y.transpose(1, 2).to(x.dtype))                     # (B, L, dim)
        return y, S4DState(h=torch.view_as_real(h))

    def step_unchecked(self, x_t: Tensor, state: S4DState) -> tuple[Tensor, S4DState]:
        rdt = _compute_dtype(x_t.dtype)
        u = self.in_proj(x_t) if self.in_proj is not None else x_t            # (B, H)
        u = u.to(rdt)
        with torch.autocast(x_t.device.type, enabled=False):
            _, dA, dB, C = self.discretize(rdt)
            h = torch.view_as_complex(state.h.to(rdt).contiguous())           # (B, H, N/2)
            h = dA * h + dB * u[..., None]
            y = 2 * (C * h).sum(-1).real + self.D.to(rdt) * u                  # (B, H)
        return self._block_out(y.to(x_t.dtype)), S4DState(h=torch.view_as_real(h))

"""Aaren: attention as an RNN (Feng et al. 2024), https://arxiv.org/abs/2405.13956

A learned query q (per head and layer) attends over the prefix. With scores
s_t = q · k_t / sqrt(d_head) the state (m, u, w) = (running max, Σ e^{s_i-m} v_i, Σ e^{s_i-m}):
    m_t = max(m_{t-1}, s_t);  u_t = u_{t-1} e^{m_{t-1}-m_t} + v_t e^{s_t-m_t};  w_t = w_{t-1} e^{m_{t-1}-m_t} + e^{s_t-m_t}
    o_t = u_t / w_t = Σ_{i<=t} softmax(s_{<=t})_i v_i
Parallel face: an inclusive Hillis-Steele prefix scan (ceil(log2 L) vectorised
steps) over the associative ⊕ on (m, u, w), then ⊕ with the incoming state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer, heads_divide
from seqlab.state import State

Triple = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class AarenConfig(Config):
    """Options of the Aaren mixer.

    Attributes:
        heads: attention heads, each with its own learned query; must divide dim.
    """

    heads: int = 4

    def validate(self) -> None:
        require(self.heads >= 1, self, "heads", "a positive int that divides dim")


@dataclass(frozen=True)
class AarenState(State):
    """Softmax-attention summary of the prefix, constant in its length.

    Attributes:
        m: (B, H) running max of the scores (-inf before any token).
        u: (B, H, Dh) Σ e^{s_i - m} v_i.
        w: (B, H) Σ e^{s_i - m}.
    """

    m: Tensor
    u: Tensor
    w: Tensor


def combine(a: Triple, b: Triple) -> Triple:
    """The associative operator (m_a, u_a, w_a) ⊕ (m_b, u_b, w_b), a before b.

    Shapes broadcast: m and w are (...), u is (..., Dh). The empty prefix is
    (m=-inf, u=0, w=0); it is a neutral element, also when both sides are
    empty, because the rescaling uses a finite reference in place of -inf.
    """
    m_a, u_a, w_a = a
    m_b, u_b, w_b = b
    m = torch.maximum(m_a, m_b)
    # exp(-inf - (-inf)) would be NaN; any finite reference gives exp(-inf) = 0
    # for an empty side, and the reference cancels in u / w.
    ref = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    ea, eb = torch.exp(m_a - ref), torch.exp(m_b - ref)
    return m, u_a * ea[..., None] + u_b * eb[..., None], w_a * ea + w_b * eb


def prefix_scan(m: Tensor, u: Tensor, w: Tensor) -> Triple:
    """Inclusive ⊕-scan along the sequence (Hillis-Steele: ceil(log2 L) steps).

    Args:
        m: (..., L) scores; u: (..., L, Dh) values; w: (..., L) weights.

    Returns:
        (m, u, w) of the same shapes, entry t summarising tokens 0..t.
    """
    L, d = m.shape[-1], 1
    while d < L:
        # Every position t >= d absorbs the summary of the d tokens before its
        # own window; positions < d are already complete. Out of place for autograd.
        mt, ut, wt = combine((m[..., :-d], u[..., :-d, :], w[..., :-d]),
                             (m[..., d:], u[..., d:, :], w[..., d:]))
        m = torch.cat([m[..., :d], mt], -1)
        u = torch.cat([u[..., :d, :], ut], -2)
        w = torch.cat([w[..., :d], wt], -1)
        d *= 2
    return m, u, w


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Sums of exponentials in half precision lose the small terms; use >= float32.
    return torch.float64 if dtype == torch.float64 else torch.float32


@register("aaren")
class Aaren(Mixer):
    """Aaren: multi-head attention of a learned query over the prefix, as an RNN.

    Example:
        >>> m = seqlab.mixers.build("aaren", dim=64, heads=4)
        >>> y, state = m(torch.randn(2, 100, 64))
        >>> y_t, state = m.step(torch.randn(2, 64), state)
    """

    Config = AarenConfig
    State = AarenState
    example_options = {"heads": 4}
    cost = ("parallel O(L log L) time, O(L) memory (Hillis-Steele scan); "
            "step O(dim^2); state dim + 2*heads, constant in L")

    def __init__(self, dim: int, cfg: AarenConfig):
        super().__init__(dim, cfg)
        self.heads = cfg.heads
        self.head_dim = heads_divide(dim, cfg.heads)
        self.scale = 1 / math.sqrt(self.head_dim)
        # No key bias: q · b_k adds the same constant to every score of a head,
        # which softmax ignores (it would never get a gradient). No value bias:
        # softmax weights sum to 1, so it would duplicate out_proj's bias.
        self.query = nn.Parameter(torch.randn(cfg.heads, self.head_dim))     # (H, Dh)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (..., dim) -> scores (..., H) and values (..., H, Dh) in compute dtype."""
        H, Dh = self.heads, self.head_dim
        k = self.k_proj(x).unflatten(-1, (H, Dh))                              # (..., H, Dh)
        v = self.v_proj(x).unflatten(-1, (H, Dh))
        s = (k * self.query).sum(-1) * self.scale                              # (..., H)
        rdt = _compute_dtype(x.dtype)
        return s.to(rdt), v.to(rdt)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> AarenState:
        dtype = _compute_dtype(self._state_dtype(dtype))
        device = self._state_device(device)
        H = self.heads
        return AarenState(
            m=torch.full((batch_size, H), -math.inf, device=device, dtype=dtype),
            u=torch.zeros(batch_size, H, self.head_dim, device=device, dtype=dtype),
            w=torch.zeros(batch_size, H, device=device, dtype=dtype))

    def state_size(self, seq_len: int) -> int:
        return self.heads * (self.head_dim + 2)

    def mix(self, x: Tensor, state: AarenState | None) -> tuple[Tensor, AarenState]:
        Bsz, L, D = x.shape
        s, v = self._scores_values(x)                                          # (B, L, H), (B, L, H, Dh)
        s, v = s.transpose(1, 2), v.transpose(1, 2)                            # (B, H, L), (B, H, L, Dh)
        m, u, w = prefix_scan(s, v, torch.ones_like(s))
        if state is not None:
            prev = (state.m.to(s.dtype)[..., None], state.u.to(s.dtype)[:, :, None], state.w.to(s.dtype)[..., None])
            m, u, w = combine(prev, (m, u, w))                                 # broadcast over L
        o = u / w[..., None]                                                   # (B, H, L, Dh)
        y = self.out_proj(o.transpose(1, 2).reshape(Bsz, L, D).to(x.dtype))
        # clone: keep only the last position, not views into (B, H, L, ...) buffers.
        return y, AarenState(m=m[..., -1].clone(), u=u[:, :, -1].clone(), w=w[..., -1].clone())

    def step_unchecked(self, x_t: Tensor, state: AarenState) -> tuple[Tensor, AarenState]:
        s, v = self._scores_values(x_t)                                        # (B, H), (B, H, Dh)
        prev = (state.m.to(s.dtype), state.u.to(s.dtype), state.w.to(s.dtype))
        m, u, w = combine(prev, (s, v, torch.ones_like(s)))
        o = u / w[..., None]                                                   # (B, H, Dh)
        y = self.out_proj(o.flatten(1).to(x_t.dtype))
        return y, AarenState(m=m, u=u, w=w)

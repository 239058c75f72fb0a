"""Multi-head linear attention with optional decay: plain, RetNet or GLA.

Papers: linear attention (Katharopoulos et al., arXiv:2006.16236), RetNet
(arXiv:2307.08621, fixed per-head decay), Gated Linear Attention (GLA,
arXiv:2312.06635, data-dependent per-key-dimension decay). Per head:

    S_t = diag(a_t) S_{t-1} + k_t v_tᵀ        S: (Dk, Dv), a_t in (0, 1]^Dk
    o_t = S_tᵀ q_t                              (the current token is included)

with a_t = 1 ("none"), a_t = gamma_h ("fixed") or a_t = sigmoid(W x_t)^(1/16)
("gated"). The parallel face is chunkwise (GLA Sec. 4): exact attention with a
decay mask inside chunks of C tokens, and the carried state S between chunks,
so time is O(L C d) and memory O(L C), never O(L^2).

Example:
    >>> m = seqlab.mixers.build("linear_attention", dim=64, heads=4, decay="fixed")
    >>> y, s = m(torch.randn(2, 100, 64))          # s.S: (2, 4, 16, 16)
    >>> y_t, s = m.step(torch.randn(2, 64), s)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer, heads_divide
from seqlab.nn import RMSNorm
from seqlab.state import State

# Gated decays vary per key dimension, so the intra-chunk decay mask is a
# (C, C, Dk) tensor. Only its diagonal (SUB, SUB, Dk) blocks are formed in
# full; off-diagonal blocks factorise through sub-chunk boundaries (see
# _gated_scores). Memory per token is ~(SUB + C/SUB) * Dk, least near
# sqrt(C). Forward+backward at dim 256, B = 4, C = 64, L = 1024 on one
# EPYC CPU thread: SUB = 8 took 615 ms; 4: 702, 16: 704, 32: 1173 and the
# full (C, C, Dk) tensor 2133. On an H200 (L = 4096) 8 and 16 tie, full is 28% slower.
_SUB = 8


@dataclasses.dataclass(frozen=True)
class LinearAttentionConfig(Config):
    """Options of the ``linear_attention`` mixer.

    Attributes:
        heads: number of heads; must divide ``dim`` (Dk = Dv = dim // heads).
        decay: "none" (S_t = S_{t-1} + k vᵀ), "fixed" (RetNet: gamma_h =
            1 - 2^(-5-h) for head h = 0..heads-1) or "gated" (GLA: a_t =
            sigmoid(W x_t)^(1/gate_normalizer), W of rank ``gate_rank``).
        feature_map: applied to q and k: "identity" (GLA, RetNet) or "elu1"
            (elu(x) + 1, Katharopoulos et al.).
        output_gate: multiply the normalised output by swish(W_g x) (GLA).
        chunk_size: tokens per chunk in the parallel face; does not change
            the result, only speed and memory (O(L * chunk_size)).
        gate_rank: rank of the gated decay's projection (GLA uses 16).
        gate_normalizer: log a_t = logsigmoid(W x_t) / gate_normalizer; larger
            keeps decays near 1 (GLA uses 16).
    """

    heads: int = 4
    decay: Literal["none", "fixed", "gated"] = "gated"
    feature_map: Literal["identity", "elu1"] = "identity"
    output_gate: bool = True
    chunk_size: int = 64
    gate_rank: int = 16
    gate_normalizer: float = 16.0

    def validate(self) -> None:
        require(self.heads >= 1, self, "heads", "a positive int")
        require(self.chunk_size >= 1, self, "chunk_size", "a positive int")
        require(self.gate_rank >= 1, self, "gate_rank", "a positive int")
        require(math.isfinite(self.gate_normalizer) and self.gate_normalizer > 0, self,
                "gate_normalizer", "a positive finite number")


@dataclasses.dataclass(frozen=True)
class LinearAttentionState(State):
    """The recurrent state: one (Dk, Dv) matrix per head.

    Attributes:
        S: (B, H, Dk, Dv) sum of decayed k vᵀ outer products, in the dtype
            asked of ``init_state`` (compute runs in at least float32).
    """

    S: Tensor


def chunk_linear_attention(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None,
                           state: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Chunkwise parallel form of ``S_t = a_t S_{t-1} + k_t v_tᵀ; o_t = S_tᵀ q_t``.

    Args:
        q, k: (B, H, T, Dk) queries and keys (already feature-mapped, scaled).
        v: (B, H, T, Dv) values.
        log_decay: None (no decay), (B or 1, H, T, 1) scalar log decays per
            head, or (B, H, T, Dk) per-key-dimension log decays; all <= 0.
        state: (B, H, Dk, Dv) initial state, in the dtype of q.
        chunk_size: C, tokens per chunk.

    Returns:
        o: (B, H, T, Dv) and the final state (B, H, Dk, Dv).

    Every exponent below is a difference b_t - b_s of within-chunk cumulative
    log decays with s <= t (or b itself), so it is <= 0 and exp never
    overflows, however strong the decay.
    """
    B, H, T, _ = q.shape
    C = chunk_size
    n = -(-T // C)
    if n == 0:
        return v.new_zeros(v.shape), state
    pad = n * C - T
    if pad:
        # Zero keys/values add nothing, and log decay 0 (a = 1) carries the
        # state through the padding unchanged, so the final state is S_T.
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        if log_decay is not None:
            log_decay = F.pad(log_decay, (0, 0, 0, pad))
    q = q.unflatten(2, (n, C))                               # (B, H, n, C, Dk)
    k = k.unflatten(2, (n, C))                               # (B, H, n, C, Dk)
    v = v.unflatten(2, (n, C))                               # (B, H, n, C, Dv)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()

    if log_decay is None:
        scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)   # (B, H, n, C, C)
        k_to_end, q_from_start, chunk_decay = k, q, None
    else:
        b = log_decay.unflatten(2, (n, C)).cumsum(-2)        # (B|1, H, n, C, Dg), Dg in {1, Dk}
        b_end = b[..., -1:, :]                               # (B|1, H, n, 1, Dg)
        if b.shape[-1] == 1:
            # Scalar decay: one (C, C) mask exp(b_t - b_s) per head and chunk.
            diff = b[..., :, None, 0] - b[..., None, :, 0]   # (B|1, H, n, C, C)
            mask = diff.masked_fill(~causal, -math.inf).exp()
            scores = (q @ k.transpose(-1, -2)) * mask
        else:
            scores = _gated_scores(q, k, b)
        k_to_end = k * (b_end - b).exp()                     # k_s decayed to the chunk end
        q_from_start = q * b.exp()                           # q_t sees S decayed since start
        chunk_decay = b_end.transpose(-1, -2).exp()          # (B|1, H, n, Dg, 1)

    o = scores @ v                                           # (B, H, n, C, Dv) intra-chunk
    # Each chunk's own contribution to the state, all chunks in one matmul.
    updates = k_to_end.transpose(-1, -2) @ v                 # (B, H, n, Dk, Dv)
    # Sequential over chunks only (n = T / C small steps); the heavy work is batched.
    starts = []
    S = state
    for i in range(n):
        starts.append(S)
        if chunk_decay is not None:
            S = chunk_decay[:, :, i] * S
        S = S + updates[:, :, i]
    starts = torch.stack(starts, 2)                          # (B, H, n, Dk, Dv) S before each chunk
    o = o + q_from_start @ starts                            # inter-chunk
    o = o.flatten(2, 3)[:, :, :T]                            # (B, H, T, Dv)
    return o, S


def _gated_scores(q: Tensor, k: Tensor, b: Tensor) -> Tensor:
    """Intra-chunk scores sum_d q_t[d] k_s[d] exp(b_t[d] - b_s[d]) for s <= t, else 0.

    q, k, b: (B, H, n, C, Dk), b the inclusive within-chunk cumsum of log
    decays. Returns (B, H, n, C, C).

    The cheap factorisation (q_t e^{b_t}) . (k_s e^{-b_s}) overflows once
    -b_s exceeds ~88 (float32). Instead each chunk is cut into sub-chunks of
    _SUB tokens (GLA Sec. 4.2): across sub-chunks i > j the decay splits at
    r_i, the cumulative decay just before sub-chunk i, as
    exp(b_t - r_i) * exp(r_i - b_s) with both exponents <= 0; inside a
    sub-chunk the full (SUB, SUB, Dk) pairwise mask is formed.
    """
    C, Dk = q.shape[-2:]
    c = min(C, _SUB)
    m = -(-C // c)
    pad = m * c - C
    if pad:
        # Padded queries/keys are zero; b repeats its last value so that all
        # exponents stay <= 0 (an inf times 0 would be NaN).
        q, k = (F.pad(t, (0, 0, 0, pad)) for t in (q, k))
        b = torch.cat([b, b[..., -1:, :].expand(*b.shape[:-2], pad, Dk)], -2)
    q, k, b = (t.unflatten(-2, (m, c)) for t in (q, k, b))  # (B, H, n, m, c, Dk)
    # r_i: cumulative log decay at the end of sub-chunk i-1 (0 for i = 0).
    ends = b[..., -1:, :]                                    # (B, H, n, m, 1, Dk)
    r = torch.cat([torch.zeros_like(ends[..., :1, :, :]), ends[..., :-1, :, :]], -3)

    below = torch.ones(m, m, dtype=torch.bool, device=q.device).tril(-1)[:, :, None, None]
    q_in = q * (b - r).exp()                                 # (B, H, n, m, c, Dk)
    gap = r.unsqueeze(-3) - b.unsqueeze(-4)                  # (B, H, n, m_i, m_j, c, Dk)
    k_in = k.unsqueeze(-4) * gap.masked_fill(~below, -math.inf).exp()
    blocks = torch.einsum("...itd,...ijsd->...ijts", q_in, k_in)   # (B, H, n, m, m, c, c)

    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()[..., None]
    pair = b.unsqueeze(-2) - b.unsqueeze(-3)                 # (B, H, n, m, c_t, c_s, Dk)
    pair = pair.masked_fill(~causal, -math.inf).exp()
    diag = (q.unsqueeze(-2) * k.unsqueeze(-3) * pair).sum(-1)      # (B, H, n, m, c, c)
    eye = torch.eye(m, dtype=q.dtype, device=q.device)[:, :, None, None]
    blocks = blocks + eye * diag.unsqueeze(-3)
    scores = blocks.transpose(-3, -2).flatten(-4, -3).flatten(-2, -1)   # (B, H, n, m*c, m*c)
    return scores[..., :C, :C]


@register("linear_attention")
class LinearAttention(Mixer):
    """Multi-head linear attention; decay "none", "fixed" (RetNet) or "gated" (GLA).

    y = o_proj( RMSNorm_per_head(o) * swish(g_proj(x)) ), o from the recurrence
    in the module docstring with q = phi(q_proj x) Dk^-0.5, k = phi(k_proj x),
    v = v_proj x.
    """

    Config = LinearAttentionConfig
    State = LinearAttentionState
    example_options = {"heads": 2, "chunk_size": 5}
    cost = ("parallel O(L*C*d) time, O(L*C) memory (chunkwise, C = chunk_size); "
            "step O(d^2/H); state H*Dk*Dv = d^2/H, constant in L")

    def __init__(self, dim: int, cfg: LinearAttentionConfig):
        super().__init__(dim, cfg)
        self.heads = cfg.heads
        self.head_dim = heads_divide(dim, cfg.heads)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        if cfg.decay == "gated":
            # Low-rank gate as in GLA: few parameters, bias sets the initial decay.
            self.gate_proj = nn.Sequential(nn.Linear(dim, cfg.gate_rank, bias=False),
                                           nn.Linear(cfg.gate_rank, dim, bias=True))
        if cfg.output_gate:
            self.g_proj = nn.Linear(dim, dim, bias=False)
        # Each head's output is RMS-normalised on its own (GLA): heads whose
        # decays keep very different amounts of history (and plain linear
        # attention, whose sums grow with T) come out on one scale. The
        # weight is shared across heads, as in GLA.
        self.norm = RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    # -- state ------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LinearAttentionState:
        """Zero state ``S: (batch_size, H, Dk, Dv)``; dtype defaults to the parameters'."""
        S = torch.zeros(batch_size, self.heads, self.head_dim, self.head_dim,
                        device=self._state_device(device), dtype=self._state_dtype(dtype))
        return LinearAttentionState(S=S)

    def state_size(self, seq_len: int) -> int:
        return self.heads * self.head_dim * self.head_dim

    # -- faces ------------------------------------------------------------------
    def mix(self, x: Tensor, state: LinearAttentionState | None
            ) -> tuple[Tensor, LinearAttentionState]:
        q, k, v, log_decay = self._qkv(x)                    # (B, H, T, Dh) each
        S0, out_dtype = self._start(state, x.shape[0], q)
        o, S = chunk_linear_attention(q, k, v, log_decay, S0, self.cfg.chunk_size)
        return self._output(o, x), LinearAttentionState(S=S.to(out_dtype))

    def step_unchecked(self, x_t: Tensor, state: LinearAttentionState
                       ) -> tuple[Tensor, LinearAttentionState]:
        x = x_t.unsqueeze(1)                                 # (B, 1, D)
        q, k, v, log_decay = self._qkv(x)                    # (B, H, 1, Dh)
        S, out_dtype = self._start(state, x.shape[0], q)
        if log_decay is not None:
            S = log_decay[:, :, 0, :, None].exp() * S        # (B|1, H, Dg, 1) * (B, H, Dk, Dv)
        S = S + k[:, :, 0, :, None] * v[:, :, 0, None, :]    # + k vᵀ
        o = q @ S                                            # (B, H, 1, Dv)
        return self._output(o, x).squeeze(1), LinearAttentionState(S=S.to(out_dtype))

    # -- shared parts of both faces ----------------------------------------------
    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Heads-first q, k, v and log decays, in at least float32 (bf16 sums drift)."""
        B, T, _ = x.shape
        work = torch.promote_types(x.dtype, torch.float32)

        def heads(t: Tensor) -> Tensor:
            # (B, T, D) -> (B, H, T, Dh)
            return t.view(B, T, self.heads, self.head_dim).transpose(1, 2).to(work)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.cfg.feature_map == "elu1":
            q, k = F.elu(q) + 1, F.elu(k) + 1
        q = q * self.head_dim ** -0.5
        if self.cfg.decay == "none":
            log_decay = None
        elif self.cfg.decay == "fixed":
            # RetNet: gamma_h = 1 - 2^(-5-h), memories from ~32 to ~32*2^(H-1) tokens.
            h = torch.arange(self.heads, device=x.device, dtype=work)
            log_decay = torch.log1p(-torch.exp2(-5.0 - h)).view(1, -1, 1, 1).expand(1, -1, T, 1)
        else:
            # GLA: log a_t = logsigmoid(W x_t) / normalizer, in log space so the
            # chunk form can sum it; the normalizer keeps decays near 1.
            log_decay = F.logsigmoid(heads(self.gate_proj(x))) / self.cfg.gate_normalizer
        return q, k, v, log_decay

    def _start(self, state: LinearAttentionState | None, batch: int, like: Tensor
               ) -> tuple[Tensor, torch.dtype]:
        """Initial S in the compute dtype, and the dtype the returned state keeps."""
        if state is None:
            state = self.init_state(batch, device=like.device)
        return state.S.to(like.dtype), state.S.dtype

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """(B, H, T, Dv) head outputs -> (B, T, D): per-head RMS norm, swish gate, o_proj."""
        B, T, D = x.shape
        o = self.norm(o.to(x.dtype).transpose(1, 2)).reshape(B, T, D)   # (B, T, D)
        if self.cfg.output_gate:
            o = o * F.silu(self.g_proj(x))
        return self.o_proj(o)

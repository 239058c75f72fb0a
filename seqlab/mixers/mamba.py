"""Mamba: the selective state space model (Mamba-1), https://arxiv.org/abs/2312.00752.

Per channel e of the expanded input and state index n, with input-dependent dt_t, B_t, C_t:
    h_t = exp(dt_t * A) ⊙ h_{t-1} + (dt_t * x_t) B_tᵀ        # h: (d_inner, d_state)
    y_t = h_t C_t + D ⊙ x_t,    out_t = W_out (y_t ⊙ silu(z_t))

x_t is the input after a causal depthwise short convolution and SiLU; z_t is a gate.
The parallel face runs the recurrence as a chunked scan (see ``selective_scan``);
the recurrent face updates the state one token at a time.

Training-free mitigations of state collapse (Stuffed Mamba, Chen et al. 2024,
https://arxiv.org/abs/2410.07145), all off by default and usable on a trained model:
    decay_scale λ, input_scale β ("forget more, remember less", the paper's method 1):
        h_t = λ exp(dt_t A) ⊙ h_{t-1} + (dt_t x_t) (β B_t)ᵀ
    state_norm c (the paper's method 2): after each update every channel's state row is
        scaled back onto the ball of radius c:  h_t[e] <- h_t[e] · min(1, c / ||h_t[e]||)

Example:
    >>> m = seqlab.mixers.build("mamba", dim=64, d_state=16)
    >>> y, state = m(torch.randn(2, 100, 64))              # parallel face
    >>> y_t, state = m.step(torch.randn(2, 64), state)    # one more token
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from seqlab.config import Config, ConfigError, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.ops.selective_scan_cpu import selective_scan_cpu
from seqlab.state import State

# Softplus(dt_proj.bias) is initialised no lower than this (as in the paper's code),
# so that no channel starts with a decay that never forgets.
_DT_INIT_FLOOR = 1e-4


@dataclasses.dataclass(frozen=True)
class MambaConfig(Config):
    """Options of the ``mamba`` mixer.

    Attributes:
        d_state: N, the state size per channel (paper: 16).
        d_conv: width of the causal depthwise convolution before the SSM.
        expand: d_inner = expand * dim, the width of the SSM channels.
        dt_rank: rank of the dt projection; None means ceil(dim / 16).
        dt_min, dt_max: range of the initial step sizes softplus(dt_proj.bias),
            sampled log-uniformly.
        chunk_size: tokens per chunk of the parallel scan. It changes only
            speed and memory, never the result. On CPU 8-16 is fastest (each
            chunk costs O(log chunk) passes over its states); on a GPU, where each
            chunk is a few dozen kernel launches, 64-128 is (4x faster at 128).
        scan: the kernel of the parallel face. ``"torch"``: the chunked
            pure-PyTorch scan below, on any device. ``"cpp"``: the fused C++/OpenMP
            kernel ``seqlab.ops.selective_scan_cpu`` (one pass over time per block of
            channels, no per-token states; ``chunk_size`` is then unused); CPU only,
            compiled on first use (about 20-30 s, then cached by torch). Both give
            the same result to rounding; the recurrent ``step`` is the same for both.
        bias: bias on the input and output projections.
        conv_bias: bias on the short convolution.
        decay_scale: λ in (0, 1], a constant factor on every per-token decay,
            exp(dt_t A) -> λ exp(dt_t A): the start state and every token lose a further
            factor λ per token, so nothing is kept much beyond ~1 / (1 - λ) tokens
            whatever the learned dt (Stuffed Mamba's "forget more"; the paper's
            alpha_t multiplier; its code tries 0.9999-0.99999 on Mamba-2 780M). 1: off. Costs
            nothing: it is one addition to the log-decay in the chunked scan and the step.
        input_scale: β > 0, a constant factor on B_t, the write into the state
            (Stuffed Mamba's "remember less"; its code tries 0.7). The state is linear in B, so
            alone it only scales the SSM's output β times against the D skip; it
            matters with ``state_norm``, whose bound is then reached later. 1: off.
        state_norm: None (off), one bound c > 0 for every channel, or a tuple of
            d_inner bounds, one per channel. After each token's update, each channel's
            state row h_t[e] (d_state numbers, the Mamba-1 analogue of a Mamba-2 head:
            one dt per channel) with norm above its bound c_e is scaled down to norm c_e,
            so no channel's state can grow beyond its bound however long the input
            (Stuffed Mamba's state normalisation; the paper calibrates one threshold per
            head from the state norms after a training-length prompt, which is what the
            per-channel form is for: ``benchmarks/passkey_capacity.py`` calibrates it as
            each channel's largest norm at the training length). The rescaling depends
            on the state, so the chunked scan cannot apply it: with ``state_norm`` set
            the parallel face runs an explicit per-token loop (``clipped_scan``) that
            equals the step exactly, whatever ``scan`` and ``chunk_size`` say. Cost: L
            sequential steps of O(E·N), and under autograd O(L·E·N) saved states. On
            this 2-core CPU, one thread, dim 64, d_state 16: inference at L = 4096 took
            1.3x the chunked scan's time at batch 16 (7.0 against 5.4 s) and 2.8x at
            batch 1 (1.0 against 0.36 s); forward + backward at L = 1024, 5x at batch 1
            and 6.6x at batch 16 (26 against 4.0 s): fine for scoring a trained model,
            slow for training with it.
    """

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    chunk_size: int = 16
    scan: Literal["torch", "cpp"] = "torch"
    bias: bool = False
    conv_bias: bool = True
    decay_scale: float = 1.0
    input_scale: float = 1.0
    state_norm: float | tuple[float, ...] | None = None

    def validate(self) -> None:
        require(self.d_state >= 1, self, "d_state", "an int >= 1")
        require(self.d_conv >= 1, self, "d_conv", "an int >= 1 (1: no look-back)")
        require(self.expand >= 1, self, "expand", "an int >= 1")
        require(self.dt_rank is None or self.dt_rank >= 1, self, "dt_rank",
                "None (ceil(dim / 16)) or an int >= 1")
        require(0 < self.dt_min < math.inf, self, "dt_min", "a positive finite number")
        require(self.dt_min <= self.dt_max < math.inf, self, "dt_max",
                f"a finite number >= dt_min = {self.dt_min}")
        require(self.chunk_size >= 1, self, "chunk_size", "an int >= 1")
        require(0.0 < self.decay_scale <= 1.0, self, "decay_scale",
                "a number in (0, 1] (1: off; below 1 every token forgets more)")
        require(self.input_scale > 0.0, self, "input_scale", "a positive finite number (1: off)")
        bounds = self.state_norm if isinstance(self.state_norm, tuple) else (self.state_norm,)
        require(self.state_norm is None or (len(bounds) > 0 and min(bounds) > 0.0), self,
                "state_norm", "None (off), a positive finite bound on each channel's state "
                "norm, or a tuple of d_inner such bounds (one per channel)")
        mitigated = self.state_norm is not None or self.decay_scale != 1.0
        require(self.scan == "torch" or not mitigated, self, "scan",
                f"'torch' with decay_scale = {self.decay_scale!r} and state_norm = "
                f"{self.state_norm!r}: the fused 'cpp' kernel has neither (train with "
                "scan='cpp', then load the weights into a scan='torch' mixer with the option)")


@dataclasses.dataclass(frozen=True)
class MambaState(State):
    """Recurrent state of the ``mamba`` mixer; constant in size.

    Attributes:
        conv: (B, d_inner, d_conv - 1) the last inputs of the short convolution.
        h: (B, d_inner, d_state) the SSM state.
    """

    conv: Tensor
    h: Tensor


# -- the chunked selective scan ------------------------------------------------------
#
# Within a chunk of q tokens the scan is a log-depth (Hillis-Steele) prefix scan.
# Its multipliers are decays over spans inside the chunk,
#     P_k[t] = prod_{s in (t-k, t]} exp(dt_s A) = exp(cum_t - cum_{t-k}),   cum = cumsum(dt A),
# so only non-positive log-decays are ever exponentiated and nothing can overflow
# (a factorisation exp(cum_t) * exp(-cum_s) would). Because A is (d_inner, d_state),
# the decay differs per channel *and* state index, so the quadratic "segsum" form
# (every pair s <= t of a chunk at once, as in Mamba-2) costs q/2 exponentials per
# state element; on CPU it measured 3-5x slower than this O(log q) form. Chunks are
# visited in order carrying the state, so memory is O(chunk * d_inner * d_state),
# never O(L * d_inner * d_state). The backward pass recomputes each chunk from the
# state saved at its start and runs the same scan in reverse for dL/dh.


def _span_decays(a: Tensor, bufs: list[Tensor]) -> list[Tensor]:
    """Decays over spans of 1, 2, 4, ... tokens inside a chunk.

    Args:
        a: (B, q, E, N) per-token decays exp(dt_t A).
        bufs: scratch from ``_Scratch``; level i + 1 is written into ``bufs[i]``.

    Returns:
        ``P`` with ``P[i]``: (B, q - k, E, N), k = 2**i, holding the product of a over
        (t - k, t] for t = k..q-1. Read backwards, the same entry is the decay over
        (t', t' + k] for t' = t - k, which is what the reverse scan needs.
    """
    q = a.shape[1]
    out, p, k = [], a[:, 1:], 1
    while k < q:
        out.append(p)
        if 2 * k < q:   # spans of 2k from two adjacent spans of k: (B, q - 2k, E, N)
            p = torch.mul(p[:, k:], p[:, :-k], out=bufs[len(out) - 1])
        k *= 2
    return out


def _scan_chunk(u: Tensor, a0: Tensor, h0: Tensor, spans: list[Tensor], spare: Tensor) -> Tensor:
    """All states h_t = a_t h_{t-1} + u_t of a chunk, with h_{-1} = h0.

    The start state enters at t = 0; each level then adds the partial sum k tokens
    back, decayed over the span between. Levels alternate between ``u`` and ``spare``
    (both (B, q, E, N), both overwritten); the states are returned in one of them.
    """
    u[:, 0].addcmul_(a0, h0)
    src, dst, k = u, spare, 1
    for p in spans:
        torch.addcmul(src[:, k:], p, src[:, :-k], out=dst[:, k:])
        dst[:, :k] = src[:, :k]
        src, dst, k = dst, src, 2 * k
    return src


def _scan_chunk_reverse(v: Tensor, spans: list[Tensor], spare: Tensor) -> Tensor:
    """The adjoint scan g_t = v_t + a_{t+1} g_{t+1} inside a chunk, as ``_scan_chunk``."""
    src, dst, k = v, spare, 1
    for p in spans:
        torch.addcmul(src[:, :-k], p, src[:, k:], out=dst[:, :-k])
        dst[:, -k:] = src[:, -k:]
        src, dst, k = dst, src, 2 * k
    return src


class _Scratch:
    """Chunk-sized (B, q, E, N) buffers, allocated once per call and reused by every chunk.

    On CPU, fresh multi-megabyte tensors per chunk cost page faults that took as long
    as the arithmetic. Buffers are per chunk length (the last chunk may be shorter) so
    that every one is contiguous.
    """

    def __init__(self, like: Tensor, count: int, d_state: int):
        self.like, self.count, self.d_state, self.sets = like, count, d_state, {}

    def get(self, q: int) -> tuple[list[Tensor], list[Tensor]]:
        if q not in self.sets:
            batch, _, d_inner = self.like.shape
            new = lambda n: self.like.new_empty(batch, n, d_inner, self.d_state)  # noqa: E731
            spans, k = [], 1
            while 2 * k < q:
                spans.append(new(q - 2 * k))
                k *= 2
            self.sets[q] = [new(q) for _ in range(self.count)], spans
        return self.sets[q]


def _sum_state(t: Tensor, ones: Tensor) -> Tensor:
    """``t.sum(-1)`` over the state index, for contiguous t: (B, q, E, N) -> (B, q, E).

    A matrix-vector product: on CPU it ran 2x faster than a reduction over the
    16-wide innermost dim.
    """
    return torch.mv(t.view(-1, t.shape[-1]), ones).view(t.shape[:-1])


class _SelectiveScan(torch.autograd.Function):
    """y_t = C_t · h_t with h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t; see selective_scan."""

    @staticmethod
    def forward(ctx, dt, A, Bm, Cm, x, h0, chunk, log_decay):
        batch, length, d_inner = x.shape
        keep = any(ctx.needs_input_grad)
        ctx.set_materialize_grads(False)
        chunk = max(1, min(chunk, length))
        scratch, ones = _Scratch(x, 4, A.shape[1]), x.new_ones(A.shape[1])
        w = dt * x                                                   # (B, L, E)
        y = x.new_empty(batch, length, d_inner)
        starts, h = [], h0
        for c in range(0, length, chunk):
            sl, q = slice(c, c + chunk), min(chunk, length - c)
            (a, u, spare, tmp), span_bufs = scratch.get(q)
            if keep:
                starts.append(h)
            _log_decays(dt[:, sl], A, log_decay, out=a).exp_()              # (B, q, E, N)
            torch.mul(w[:, sl, :, None], Bm[:, sl, None, :], out=u)         # (B, q, E, N)
            hs = _scan_chunk(u, a[:, 0], h, _span_decays(a, span_bufs), spare)
            y[:, sl] = _sum_state(torch.mul(hs, Cm[:, sl, None, :], out=tmp), ones)  # C_t · h_t
            h = hs[:, -1].clone()                       # the buffer is reused by the next chunk
        if length == 0:
            h = h0.clone()                              # an output must not be an input
        if keep:
            ctx.chunk, ctx.log_decay = chunk, log_decay
            ctx.save_for_backward(dt, A, Bm, Cm, x, *starts)
        return y, h

    @staticmethod
    @once_differentiable      # the backward writes into scratch buffers; no double backward
    def backward(ctx, gy, gh):
        dt, A, Bm, Cm, x, *starts = ctx.saved_tensors
        chunk, length = ctx.chunk, x.shape[1]
        scratch, ones = _Scratch(x, 7, A.shape[1]), x.new_ones(A.shape[1])
        g_dt, g_x = torch.empty_like(dt), torch.empty_like(x)
        g_B, g_C = torch.empty_like(Bm), torch.zeros_like(Cm)
        g_A = torch.zeros_like(A)
        w = dt * x                                                   # (B, L, E)
        carry = gh                      # dL/dh at the end of the current chunk, or None
        for i in reversed(range(len(starts))):
            c = i * chunk
            sl, q = slice(c, c + chunk), min(chunk, length - c)
            (a, u, spare, lam, spare2, ah, tmp), span_bufs = scratch.get(q)
            h_start = starts[i]                                      # (B, E, N)
            _log_decays(dt[:, sl], A, ctx.log_decay, out=a).exp_()   # (B, q, E, N)
            spans = _span_decays(a, span_bufs)
            torch.mul(w[:, sl, :, None], Bm[:, sl, None, :], out=u)
            hs = _scan_chunk(u, a[:, 0], h_start, spans, spare)      # (B, q, E, N)
            # lam_t = dL/dh_t = gy_t C_t (this token) + a_{t+1} lam_{t+1} (later tokens)
            if gy is not None:
                torch.mul(gy[:, sl, :, None], Cm[:, sl, None, :], out=lam)
                g_C[:, sl] = torch.matmul(gy[:, sl, None, :], hs).squeeze(-2)
            else:
                lam.zero_()
            if carry is not None:
                lam[:, -1] += carry
            lam = _scan_chunk_reverse(lam, spans, spare2)
            # u_t = dt_t x_t B_t: its gradient is lam_t.
            r = _sum_state(torch.mul(lam, Bm[:, sl, None, :], out=tmp), ones)   # (B, q, E)
            g_B[:, sl] = torch.matmul(w[:, sl, None, :], lam).squeeze(-2)
            g_x[:, sl] = r * dt[:, sl]
            # a_t = exp(dt_t A + log_decay) multiplies h_{t-1}: dL/d(dt_t A) = lam_t a_t h_{t-1}.
            torch.mul(a[:, 0], h_start, out=ah[:, 0])
            torch.mul(a[:, 1:], hs[:, :-1], out=ah[:, 1:])
            gda = ah.mul_(lam)                                                 # (B, q, E, N)
            g_dt[:, sl] = _sum_state(torch.mul(gda, A, out=tmp), ones).addcmul_(r, x[:, sl])
            g_A += torch.mul(gda, dt[:, sl, :, None], out=tmp).sum((0, 1))
            carry = a[:, 0] * lam[:, 0]  # dL/dh at the end of the previous chunk
        if not starts:   # empty sequence: h passes straight through
            carry = gh
        return g_dt, g_A, g_B, g_C, g_x, carry, None, None


def _log_decays(dt: Tensor, A: Tensor, log_decay: float, out: Tensor | None = None) -> Tensor:
    """dt_t A (+ log_decay): (B, q, E) x (E, N) -> (B, q, E, N), the log of each token's decay.

    The step computes the same ops in the same order, so both faces round alike.
    With log_decay 0 (decay_scale 1) no addition is made and the default is bit-for-bit
    what it was before the option existed.
    """
    a = torch.mul(dt[..., None], A, out=out)
    return a.add_(log_decay) if log_decay else a


def selective_scan(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor, h0: Tensor,
                   chunk_size: int, log_decay: float = 0.0) -> tuple[Tensor, Tensor]:
    """The Mamba-1 scan without the D skip, chunked along time.

    Args:
        dt: (batch, L, E) positive step sizes.
        A: (E, N) negative continuous-time decay rates.
        B, C: (batch, L, N) input and output projections of the state.
        x: (batch, L, E) inputs.
        h0: (batch, E, N) the state before the first token.
        chunk_size: tokens per chunk; changes speed and memory only.
        log_decay: log λ <= 0, added to every log-decay (``MambaConfig.decay_scale``).

    Returns:
        ``y``: (batch, L, E) with y_t = C_t · h_t, and the final state (batch, E, N),
        where h_t = λ exp(dt_t A) ⊙ h_{t-1} + dt_t x_t B_tᵀ.

    Example:
        >>> y, h = selective_scan(dt, A, B, C, x, torch.zeros(2, 8, 4), chunk_size=16)
    """
    return _SelectiveScan.apply(dt, A, B, C, x, h0, chunk_size, float(log_decay))


def clip_state_norm(h: Tensor, bound: float | Tensor) -> Tensor:
    """Each channel's state row scaled down to norm ``bound`` where it is longer.

    h: (..., E, N) -> h[..., e, :] · min(1, bound_e / ||h[..., e, :]||), with ``bound`` a
    float or (E, 1) per-channel bounds. Rows within the bound are multiplied by exactly
    1 (bound / bound), so they pass unchanged.
    """
    norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True)               # (..., E, 1)
    return h * (bound / norm.clamp(min=bound))


def clipped_scan(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor, h0: Tensor,
                 bound: float | Tensor, log_decay: float = 0.0, block: int = 64) -> tuple[Tensor, Tensor]:
    """``selective_scan`` with each state clipped to channel norm ``bound`` after its update.

    h_t = clip(λ exp(dt_t A) ⊙ h_{t-1} + dt_t x_t B_tᵀ), y_t = C_t · h_t. The clip depends
    on the state, so the recurrence is no longer a linear scan and is run token by token:
    decays and inputs are formed ``block`` tokens at a time, the recurrence is a Python
    loop, and autograd differentiates through it (O(L·E·N) saved states). This is the
    parallel face of ``MambaConfig.state_norm``; it is chosen by that option, never by
    the input.

    Args: as ``selective_scan``, plus ``bound``: a float > 0 or (E, 1) per-channel bounds;
        ``block`` changes speed and memory only.

    Returns:
        ``y``: (batch, L, E) and the final state (batch, E, N).
    """
    length = x.shape[1]
    w = dt * x                                                         # (B, L, E)
    h, ys = h0, []
    for c in range(0, length, block):
        sl = slice(c, c + block)
        a = _log_decays(dt[:, sl], A, log_decay).exp()                 # (B, q, E, N)
        u = w[:, sl, :, None] * B[:, sl, None, :]                      # (B, q, E, N)
        hs = []
        for i in range(a.shape[1]):
            h = clip_state_norm(torch.addcmul(u[:, i], a[:, i], h), bound)
            hs.append(h)
        ys.append(torch.matmul(torch.stack(hs, 1), C[:, sl, :, None]).squeeze(-1))  # (B, q, E)
    if length == 0:
        return x.new_zeros(x.shape), h0.clone()
    return torch.cat(ys, 1), h


class _CausalConv(torch.autograd.Function):
    """Depthwise causal conv in (B, T, E) layout: y_t = bias + sum_j w[:, j] ⊙ xpad_{t+j}.

    xpad: (B, K - 1 + L, E) holds the K - 1 earlier inputs first; weight: (E, K).
    Written out with its backward: on CPU, conv + SiLU forward and backward took 1.8x
    as long through autograd over K shifted multiply-adds, and 1.4x through F.conv1d
    with the two transposes it needs.
    """

    @staticmethod
    def forward(ctx, xpad, weight, bias):
        k = weight.shape[1] - 1
        length = xpad.shape[1] - k
        y = xpad[:, k:] * weight[:, k]                               # (B, L, E)
        for j in range(k):
            y.addcmul_(xpad[:, j:j + length], weight[:, j])
        if bias is not None:
            y += bias
        ctx.save_for_backward(xpad, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        xpad, weight = ctx.saved_tensors
        k, length = weight.shape[1] - 1, gy.shape[1]
        g_xpad = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_xpad = torch.empty_like(xpad)
            g_xpad[:, :k] = 0
            torch.mul(gy, weight[:, k], out=g_xpad[:, k:])
            for j in range(k):
                g_xpad[:, j:j + length].addcmul_(gy, weight[:, j])
        if ctx.needs_input_grad[1]:
            g_w = torch.stack([(gy * xpad[:, j:j + length]).sum((0, 1)) for j in range(k + 1)], 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = gy.sum((0, 1))
        return g_xpad, g_w, g_b


# -- the mixer -------------------------------------------------------------------------


@register("mamba")
class Mamba(Mixer):
    """Mamba-1 block: in_proj -> short conv + SiLU -> selective SSM -> gate -> out_proj.

    Args:
        dim: model width.
        cfg: a :class:`MambaConfig`.

    Example:
        >>> m = seqlab.mixers.build("mamba", dim=32, d_state=8)
        >>> y, s = m(torch.randn(2, 10, 32))
        >>> s.h.shape, s.conv.shape
        (torch.Size([2, 64, 8]), torch.Size([2, 64, 3]))
    """

    no_weight_decay = ("A_log", "D")

    Config = MambaConfig
    State = MambaState
    # chunk_size 5 with the suite's T = 23 leaves a ragged last chunk; d_state 4 keeps it quick.
    example_options = {"d_state": 4, "chunk_size": 5}
    cost = ("parallel: O(L·E·N) time, O(L·E + (L/chunk + chunk)·E·N) memory (E = expand·dim, "
            "N = d_state; scan='cpp' kernel: O(L·E + L/64·E·N); state_norm: a per-token loop, "
            "L sequential O(E·N) steps, O(L·E·N) memory under autograd); step: O(E·N + dim·E); "
            "state: E·(N + d_conv - 1), constant in L")

    def __init__(self, dim: int, cfg: MambaConfig):
        super().__init__(dim, cfg)
        d_inner = cfg.expand * dim
        dt_rank = cfg.dt_rank if cfg.dt_rank is not None else math.ceil(dim / 16)
        self.d_inner, self.dt_rank = d_inner, dt_rank
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=cfg.bias)            # -> x, z
        # Depthwise causal conv kept as plain parameters (E, K) so that the step can
        # apply it as one dot product with the rolled window; init as nn.Conv1d does.
        bound = 1 / math.sqrt(cfg.d_conv)
        self.conv_weight = nn.Parameter(torch.empty(d_inner, cfg.d_conv).uniform_(-bound, bound))
        self.conv_bias = (nn.Parameter(torch.empty(d_inner).uniform_(-bound, bound))
                          if cfg.conv_bias else None)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * cfg.d_state, bias=False)  # -> dt, B, C
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        # dt_proj: weights scaled to the rank, bias = softplus^{-1}(dt) with dt
        # log-uniform in [dt_min, dt_max], so each channel starts at its own timescale.
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
                       + math.log(cfg.dt_min)).clamp(min=_DT_INIT_FLOOR)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real init A = -(1, 2, ..., N) per channel; stored as log so A stays negative.
        A = torch.arange(1, cfg.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))                            # (E, N)
        self.D = nn.Parameter(torch.ones(d_inner))                          # skip x -> y
        self.out_proj = nn.Linear(d_inner, dim, bias=cfg.bias)
        if isinstance(cfg.state_norm, tuple) and len(cfg.state_norm) != d_inner:
            raise ConfigError(
                f"MambaConfig.state_norm has {len(cfg.state_norm)} bounds but this mixer has "
                f"d_inner = expand * dim = {cfg.expand} * {dim} = {d_inner} channels: give "
                f"one number for all channels or a tuple of {d_inner}")

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MambaState:
        device, dtype = self._state_device(device), self._state_dtype(dtype)
        k = self.cfg.d_conv - 1
        return MambaState(
            conv=torch.zeros(batch_size, self.d_inner, k, device=device, dtype=dtype),
            h=torch.zeros(batch_size, self.d_inner, self.cfg.d_state, device=device, dtype=dtype))

    def state_size(self, seq_len: int) -> int:
        return self.d_inner * (self.cfg.d_conv - 1) + self.d_inner * self.cfg.d_state

    @staticmethod
    def _scan_dtype(dtype: torch.dtype) -> torch.dtype:
        # The scan multiplies hundreds of decays; bf16/fp16 lose it, so they scan in fp32.
        return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype

    def _ssm_inputs(self, xc: Tensor, sdtype: torch.dtype):
        """dt (softplus), A, B, C from the conv output ``xc``: (..., E)."""
        n = self.cfg.d_state
        dt_in, Bm, Cm = self.x_proj(xc).split([self.dt_rank, n, n], dim=-1)
        dt = F.softplus(self.dt_proj(dt_in).to(sdtype))                    # (..., E)
        A = -torch.exp(self.A_log.to(sdtype))                              # (E, N)
        Bm = Bm.to(sdtype)
        if self.cfg.input_scale != 1.0:   # Stuffed Mamba's "remember less"
            Bm = Bm * self.cfg.input_scale
        return dt, A, Bm, Cm.to(sdtype)

    def _state_bound(self, like: Tensor) -> float | Tensor:
        """``state_norm`` as clip_state_norm takes it: a float, or (E, 1) in ``like``'s dtype."""
        bound = self.cfg.state_norm
        if isinstance(bound, tuple):
            return torch.tensor(bound, dtype=like.dtype, device=like.device)[:, None]
        return bound

    @property
    def _log_decay(self) -> float:
        """log(decay_scale), added to every log-decay dt_t A; 0 when off."""
        return math.log(self.cfg.decay_scale)

    def mix(self, x: Tensor, state: MambaState | None) -> tuple[Tensor, MambaState]:
        batch = x.shape[0]
        if state is None:
            state = self.init_state(batch, device=x.device)
        k = self.cfg.d_conv - 1
        sdtype = self._scan_dtype(x.dtype)
        xi, z = self.in_proj(x).chunk(2, dim=-1)                           # (B, L, E) each
        # The short conv runs over [carried inputs, x], so a chunk continues the last one.
        xpad = torch.cat([state.conv.transpose(1, 2).to(xi.dtype), xi], dim=1)  # (B, k + L, E)
        bias = self.conv_bias.to(xi.dtype) if self.conv_bias is not None else None
        xc = F.silu(_CausalConv.apply(xpad, self.conv_weight.to(xi.dtype), bias))  # (B, L, E)
        dt, A, Bm, Cm = self._ssm_inputs(xc, sdtype)
        xs = xc.to(sdtype)
        if self.cfg.state_norm is not None:   # nonlinear in h: the explicit per-token loop
            y, h = clipped_scan(dt, A, Bm, Cm, xs, state.h.to(sdtype), self._state_bound(xs),
                                self._log_decay)
        elif self.cfg.scan == "cpp":          # the config refuses cpp with decay_scale != 1
            y, h = selective_scan_cpu(dt, A, Bm, Cm, xs, state.h.to(sdtype))
        else:
            y, h = selective_scan(dt, A, Bm, Cm, xs, state.h.to(sdtype), self.cfg.chunk_size,
                                  self._log_decay)
        y = (y + xs * self.D.to(sdtype)).to(x.dtype) * F.silu(z)           # (B, L, E)
        # Copied out, so that the state does not keep all of xpad alive.
        conv = xpad[:, xpad.shape[1] - k:].transpose(1, 2).to(state.conv.dtype).contiguous()
        return self.out_proj(y), MambaState(conv=conv, h=h.to(state.h.dtype))

    def step_unchecked(self, x_t: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        sdtype = self._scan_dtype(x_t.dtype)
        xi, z = self.in_proj(x_t).chunk(2, dim=-1)                         # (B, E) each
        window = torch.cat([state.conv.to(xi.dtype), xi[:, :, None]], dim=-1)  # (B, E, K)
        xc = (window * self.conv_weight.to(xi.dtype)).sum(-1)              # (B, E)
        if self.conv_bias is not None:
            xc = xc + self.conv_bias.to(xi.dtype)
        xc = F.silu(xc)
        dt, A, Bm, Cm = self._ssm_inputs(xc, sdtype)                       # (B, E), (E, N), (B, N)
        xs = xc.to(sdtype)
        u = (dt * xs)[:, :, None] * Bm[:, None, :]                         # (B, E, N)
        h = torch.addcmul(u, _log_decays(dt, A, self._log_decay).exp(), state.h.to(sdtype))
        if self.cfg.state_norm is not None:
            h = clip_state_norm(h, self._state_bound(h))
        y = torch.matmul(h, Cm[:, :, None]).squeeze(-1) + xs * self.D.to(sdtype)  # (B, E)
        y = y.to(x_t.dtype) * F.silu(z)
        new = MambaState(conv=window[:, :, 1:].to(state.conv.dtype), h=h.to(state.h.dtype))
        return self.out_proj(y), new

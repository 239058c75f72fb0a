"""Prefix linear attention (PLA), the mixer of JRT-RNN: "Just read twice: closing the recall gap
for recurrent language models" (Arora et al. 2024), https://arxiv.org/abs/2407.05483

The first M tokens (the prompt prefix) are read by an encoder with keys/values of its own,
without a causal mask; every token i then attends to that whole prefix plus, causally, to
tokens j <= i. Per head, with Based's Taylor feature map φ (below) and [v; 1] for the
normaliser:
    S_i = sum_{j<M} φ(ke_j) [ve_j; 1]ᵀ + sum_{j<=i} φ(k_j) [v_j; 1]ᵀ;   [n_i; z_i] = S_iᵀ φ(q_i);   o_i = n_i / z_i
So the prefix only adds the encoder's state to the start state: after it, the recurrent
face is causal linear attention on S (one (F, Dv + 1) matrix per head, constant in L).

The prefix length: ``prefix`` in the config is the default; ``m(x, prefix=n)`` or
``m.init_state(batch, prefix=n)`` sets it for one sequence. The state records how many
tokens the next call still reads as its prefix (0 once read). The prefix must arrive in one
call: that call reads its first min(prefix, T) tokens as the prefix (a shorter prompt is the
whole prefix, as JRT-RNN does at inference), and every later call is causal. So with
``prefix`` > 1, feeding the prompt in pieces gives other outputs than feeding it whole, by
design; continuing after the prefix, in chunks of any size or token by token, is exact.
The default is 0 (no prefix: causal Based linear attention), so that a model built with
default options keeps the stream contract every model-level test relies on.

Feature map (Based, Arora et al. 2024, arXiv:2402.18668): q and k are projected to d =
``feature_dim`` per head and φ(x) = [1, x / d^(1/4), vec(x xᵀ) / sqrt(2 d)] (F = 1 + d + d²),
so φ(q)·φ(k) = 1 + s + s²/2 with s = q·k / sqrt(d), the 2nd-order Taylor series of exp(s).
It is >= 1/2 for every pair, so z_i >= (number of keys) / 2 > 0 and needs no epsilon.

Example:
    >>> m = seqlab.mixers.build("prefix_linear_attention", dim=64, heads=4, feature_dim=8)
    >>> y, s = m(torch.randn(2, 100, 64), prefix=40)   # tokens 0..39: the non-causal prefix
    >>> y_t, s = m.step(torch.randn(2, 64), s)         # decoding after it is causal
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, ConfigError, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer, heads_divide
from seqlab.mixers.linear_attention import chunk_linear_attention
from seqlab.state import State


@dataclasses.dataclass(frozen=True)
class PrefixLinearAttentionConfig(Config):
    """Options of the ``prefix_linear_attention`` mixer.

    Attributes:
        heads: number of heads; must divide ``dim`` (Dv = dim // heads).
        feature_dim: d, the per-head width of q and k before the Taylor map
            (F = 1 + d + d² features; JRT-RNN and Based use 16).
        prefix: default prefix length M for a sequence started without an explicit
            one: the first min(M, T) tokens of the first call are read non-causally.
            0 (the default) makes the mixer causal; JRT-RNN trains with 1024.
        chunk_size: tokens per chunk of the causal part's parallel face; changes
            only speed and memory (O(L * chunk_size)), never the result.
    """

    heads: int = 4
    feature_dim: int = 16
    prefix: int = 0
    chunk_size: int = 64

    def validate(self) -> None:
        require(self.heads >= 1, self, "heads", "a positive int")
        require(self.feature_dim >= 1, self, "feature_dim", "a positive int")
        require(self.prefix >= 0, self, "prefix", "an int >= 0 (0: no prefix, causal)")
        require(self.chunk_size >= 1, self, "chunk_size", "a positive int")


@dataclasses.dataclass(frozen=True)
class PrefixLinearAttentionState(State):
    """The linear attention state and the prefix still to be read.

    Attributes:
        S: (B, H, F, Dv + 1) sum of φ(k) [v; 1]ᵀ over the prefix encoder and all tokens
            so far; the last column is the normaliser sum φ(k).
        prefix: tokens the next call reads as the non-causal prefix; 0 once it is read.
    """

    S: Tensor
    prefix: int = 0


def taylor_features(x: Tensor) -> Tensor:
    """Based's feature map, (..., d) -> (..., 1 + d + d²): φ(q)·φ(k) = 1 + s + s²/2, s = q·k/sqrt(d)."""
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).flatten(-2)              # (..., d²)
    return torch.cat([torch.ones_like(x[..., :1]), x * d ** -0.25, outer / math.sqrt(2 * d)], -1)


@register("prefix_linear_attention")
class PrefixLinearAttention(Mixer):
    """JRT-RNN's prefix linear attention: a non-causal prefix encoder, then causal linear attention.

    y = o_proj(o), o from the recurrence in the module docstring with q = W_q x, k = W_k x,
    v = W_v x for every token and ke = W_ke x, ve = W_ve x for the prefix tokens.
    """

    Config = PrefixLinearAttentionConfig
    State = PrefixLinearAttentionState
    # prefix 1 exercises the encoder path (and its gradients) in the shared suite while
    # keeping any chunking of the sequence exact; a prefix > 1 must arrive in one call,
    # which model-level tests that feed every mixer ragged chunks cannot know. The
    # non-causal prefix is tested in tests/mixers/test_prefix_linear_attention.py.
    example_options = {"heads": 2, "feature_dim": 4, "prefix": 1, "chunk_size": 5}
    cost = ("parallel O(L·C·F·d) time, O(L·C) memory (chunkwise, C = chunk_size, F = 1 + "
            "f + f², f = feature_dim); the prefix adds O(M·F·d); step O(F·d); state "
            "H·F·(Dv + 1) = F·(d + H), constant in L")

    def __init__(self, dim: int, cfg: PrefixLinearAttentionConfig):
        super().__init__(dim, cfg)
        self.heads = cfg.heads
        self.head_dim = heads_divide(dim, cfg.heads)
        self.features = 1 + cfg.feature_dim + cfg.feature_dim ** 2
        qk = cfg.heads * cfg.feature_dim
        self.q_proj = nn.Linear(dim, qk, bias=False)
        self.k_proj = nn.Linear(dim, qk, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        # The prefix encoder's own keys and values (JRT-RNN's k_enc, v_enc).
        self.k_enc_proj = nn.Linear(dim, qk, bias=False)
        self.v_enc_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    # -- state ------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None,
                   prefix: int | None = None) -> PrefixLinearAttentionState:
        """Zero state whose next call reads ``prefix`` tokens (default: the config's) as its prefix.

        Raises:
            ConfigError: ``prefix`` is not an int >= 0.
        """
        prefix = self.cfg.prefix if prefix is None else self._checked_prefix(prefix)
        S = torch.zeros(batch_size, self.heads, self.features, self.head_dim + 1,
                        device=self._state_device(device), dtype=self._state_dtype(dtype))
        return PrefixLinearAttentionState(S=S, prefix=prefix)

    def state_size(self, seq_len: int) -> int:
        return self.heads * self.features * (self.head_dim + 1)

    # -- faces ------------------------------------------------------------------
    def forward(self, x: Tensor, state: PrefixLinearAttentionState | None = None, *,
                prefix: int | None = None) -> tuple[Tensor, PrefixLinearAttentionState]:
        """Parallel face; ``prefix`` (only when starting, i.e. without a state) sets M for this sequence.

        Example:
            >>> y, s = m(prompt, prefix=prompt.shape[1])   # the whole prompt is the prefix
            >>> y2, s = m(more, s)                          # causal from here on

        Raises:
            ValueError: ``prefix`` is given together with a state (put it in
                ``init_state(batch, prefix=n)`` instead).
            ConfigError: ``prefix`` is not an int >= 0.
        """
        if prefix is not None:
            if state is not None:
                raise ValueError(
                    f"{self.name}: prefix = {prefix!r} was given with a state; the prefix length "
                    "belongs to the start of a sequence: use init_state(batch, prefix=n) or call "
                    "without a state")
            self.check_input(x, rank=3)
            state = self.init_state(x.shape[0], device=x.device, prefix=self._checked_prefix(prefix))
        return super().forward(x, state)

    def mix(self, x: Tensor, state: PrefixLinearAttentionState | None
            ) -> tuple[Tensor, PrefixLinearAttentionState]:
        if state is None:
            state = self.init_state(x.shape[0], device=x.device)
        B, T, _ = x.shape
        if T == 0:   # nothing read: the prefix (if any) is still to come
            return x.new_zeros(B, 0, self.dim), state
        q, k, v = self._qkv(x)                                           # (B, H, T, F|F|Dv+1)
        S0 = state.S.to(q.dtype)
        if state.prefix:
            S0 = S0 + self._encode(x[:, :state.prefix], q.dtype)
        o, S = chunk_linear_attention(q, k, v, None, S0, self.cfg.chunk_size)
        return self._output(o, x.dtype), PrefixLinearAttentionState(S=S.to(state.S.dtype), prefix=0)

    def step_unchecked(self, x_t: Tensor, state: PrefixLinearAttentionState
                       ) -> tuple[Tensor, PrefixLinearAttentionState]:
        if state.prefix:   # a one-token prefix: the encoder path of mix
            return super().step_unchecked(x_t, state)
        q, k, v = self._qkv(x_t[:, None])                                # (B, H, 1, F|F|Dv+1)
        S = state.S.to(q.dtype) + k[:, :, 0, :, None] * v[:, :, 0, None, :]   # + φ(k) [v; 1]ᵀ
        o = q @ S                                                        # (B, H, 1, Dv + 1)
        y = self._output(o, x_t.dtype)[:, 0]
        return y, PrefixLinearAttentionState(S=S.to(state.S.dtype), prefix=0)

    # -- shared parts of both faces ----------------------------------------------
    def _heads(self, t: Tensor, width: int, work: torch.dtype) -> Tensor:
        """(B, T, H * width) -> (B, H, T, width) in the compute dtype."""
        B, T, _ = t.shape
        return t.view(B, T, self.heads, width).transpose(1, 2).to(work)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """φ(q), φ(k) and [v; 1], heads first, in at least float32 (bf16 sums drift)."""
        work = torch.promote_types(x.dtype, torch.float32)
        f = self.cfg.feature_dim
        q = taylor_features(self._heads(self.q_proj(x), f, work))
        k = taylor_features(self._heads(self.k_proj(x), f, work))
        v = self._heads(self.v_proj(x), self.head_dim, work)
        return q, k, F.pad(v, (0, 1), value=1.0)

    def _encode(self, x_prefix: Tensor, work: torch.dtype) -> Tensor:
        """The prefix encoder's state sum_j φ(ke_j) [ve_j; 1]ᵀ: (B, H, F, Dv + 1)."""
        k = taylor_features(self._heads(self.k_enc_proj(x_prefix), self.cfg.feature_dim, work))
        v = F.pad(self._heads(self.v_enc_proj(x_prefix), self.head_dim, work), (0, 1), value=1.0)
        return k.transpose(-1, -2) @ v

    def _output(self, o: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, H, T, Dv + 1) numerators and normaliser -> (B, T, dim) through o_proj."""
        B, H, T, _ = o.shape
        o = o[..., :-1] / o[..., -1:]                                    # z >= (keys) / 2 > 0
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.dim).to(dtype))

    def _checked_prefix(self, prefix) -> int:
        if isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 0:
            raise ConfigError(f"{self.name}: prefix = {prefix!r} is not allowed: expected an int >= 0 "
                              "(the number of leading tokens read without a causal mask)")
        return prefix

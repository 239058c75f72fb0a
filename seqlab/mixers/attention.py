"""Causal multi-head softmax attention with rotary positions, grouped-query
heads and an optional sliding window (Vaswani et al. arXiv:1706.03762;
RoFormer arXiv:2104.09864; GQA arXiv:2305.13245; Mistral's window arXiv:2310.06825).

    y_t = W_o · concat_h softmax(q_t,h · K_h[:t]ᵀ / √d) V_h[:t]

As an RNN, attention's state is the key/value cache, which grows by one
entry per token. The cache here is a preallocated buffer plus one length per
batch row, so rows may sit at different positions (ragged prompts, rows of a
speculative batch that accepted different numbers of tokens) and rewinding a
row is setting its length back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer, heads_divide
from seqlab.nn.norm import RMSNorm
from seqlab.nn.rotary import apply_rotary, rotary_angles
from seqlab.state import State, StateError

# enable_gqa arrived in torch 2.5; older versions get the kv heads repeated.
_TORCH_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)
_SELECT_SLACK = 32  # free slots a selected cache keeps (see KVCache.select)


class KVBuffer:
    """The storage behind KV caches: ``(B, H_kv, capacity, Dh)`` keys and values, and who wrote them.

    Caches that share a buffer are values only if nobody writes where another still reads.
    The buffer records, per row, how far it has been written (``written``), a counter bumped
    at every write (``version``) and every rewrite -- a write that started below ``written``
    -- as ``(version, start)``. A cache made by a write carries the row versions it saw, and
    ``KVCache.truncate`` keeps them, so a cache is the *tip* of a row when no write came after
    it. Continuing a cache then (``Attention._append``):

    * past everything written, or from the tip (a rollback): in place;
    * from an older cache whose row another continuation has written past (two branches of
      one state): copy-on-write, a fresh buffer;
    * from a cache whose own entries a rewrite has since replaced: ``StateError``.
    """

    __slots__ = ("k", "v", "written", "version", "rewrites")

    def __init__(self, k: Tensor, v: Tensor, written: Sequence[int]):
        self.k, self.v = k, v
        self.written = list(written)
        self.version = [0] * len(self.written)
        self.rewrites: dict[int, list[tuple[int, int]]] = {}   # row -> (version, start), rare

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def stale_row(self, lengths: Sequence[int], versions: Sequence[int]) -> int | None:
        """The first row whose entries below ``lengths`` were rewritten after ``versions``."""
        for b, marks in sorted(self.rewrites.items()):
            n, ver = lengths[b], versions[b]
            for at, start in reversed(marks):
                if at <= ver:
                    break
                if start < n:
                    return b
        return None

    def owns(self, lengths: Sequence[int], versions: Sequence[int]) -> bool:
        """Whether a cache at ``lengths``/``versions`` may write in place past its lengths."""
        return all(w <= n or ver == cur for n, ver, w, cur
                   in zip(lengths, versions, self.written, self.version))

    def wrote(self, starts: Sequence[int], ends: Sequence[int]) -> tuple[int, ...]:
        """Record writes of rows ``[starts[b], ends[b])``; returns the new row versions."""
        for b, (s0, e) in enumerate(zip(starts, ends)):
            if e == s0:
                continue
            self.version[b] += 1
            if s0 < self.written[b]:
                self.rewrites.setdefault(b, []).append((self.version[b], s0))
            self.written[b] = max(self.written[b], e)
        return tuple(self.version)


@dataclass(frozen=True, eq=False)
class KVCache(State):
    """Key/value cache: a shared ``KVBuffer`` and per-row lengths (and the row versions seen).

    Row ``b`` holds valid entries at ``[:, :lengths[b]]``; the rest of the buffer is scratch.
    A forward call writes its new keys at each row's length and returns a state with longer
    lengths that shares the buffer, so the earlier state is still a valid snapshot and
    ``truncate`` rewinds by lowering lengths. The buffer knows how far it was written, so two
    continuations of one state never overwrite each other: the second copies (see
    ``KVBuffer``). ``select``, ``clone`` and ``cat`` always copy.
    """

    buf: KVBuffer
    lengths: tuple[int, ...]
    versions: tuple[int, ...]

    can_truncate: ClassVar[bool] = True

    @classmethod
    def fresh(cls, k: Tensor, v: Tensor, lengths: Sequence[int]) -> "KVCache":
        """A cache over a new buffer holding ``k``, ``v`` (B, H_kv, capacity, Dh)."""
        lengths = tuple(int(n) for n in lengths)
        buf = KVBuffer(k, v, lengths)
        return cls(buf, lengths, tuple(buf.version))

    @property
    def k(self) -> Tensor:
        return self.buf.k

    @property
    def v(self) -> Tensor:
        return self.buf.v

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return self.buf.capacity

    def check_fresh(self) -> None:
        """Raise StateError if a rewrite replaced entries this cache still reads."""
        b = self.buf.stale_row(self.lengths, self.versions)
        if b is not None:
            raise StateError(
                f"row {b} of this attention cache was overwritten: a shorter state rewound from "
                "it (truncate, keep) has since been continued in place. To continue both, "
                "clone the longer state before rewinding it (state.clone())")

    def live_tensors(self):
        """The valid cache entries, row by row (for comparisons and accounting)."""
        for b, n in enumerate(self.lengths):
            yield self.k[b, :, :n]
            yield self.v[b, :, :n]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.live_tensors())

    def _map_tensors(self, fn) -> "KVCache":
        hi = max(self.lengths, default=0)
        return KVCache.fresh(fn(self.k[:, :, :hi]), fn(self.v[:, :, :hi]), self.lengths)

    def select(self, index) -> "KVCache":
        self.check_fresh()
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        # Keep some free slots past the longest row: decoding selects and then appends a few
        # tokens (beam search, draft trees), and a full buffer would be reallocated at once.
        # The slots copied past a row's length are zeros or stale keys, never read unmasked.
        hi = min(self.capacity, max((self.lengths[i] for i in idx), default=0) + _SELECT_SLACK)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.k.device)
        lengths = tuple(self.lengths[i] for i in idx)
        return KVCache.fresh(self.k[:, :, :hi].index_select(0, t),
                             self.v[:, :, :hi].index_select(0, t), lengths)

    def clone(self) -> "KVCache":
        self.check_fresh()
        hi = max(self.lengths, default=0)
        return KVCache.fresh(self.k[:, :, :hi].clone(), self.v[:, :, :hi].clone(), self.lengths)

    def truncate(self, length: int | Sequence[int]) -> "KVCache":
        """Rewind every row to ``length`` tokens (an int, or one int per row)."""
        new = (length,) * self.batch_size if isinstance(length, int) else tuple(int(n) for n in length)
        if len(new) != self.batch_size:
            raise StateError(f"truncate got {len(new)} lengths for a cache of {self.batch_size} rows")
        for b, (n, old) in enumerate(zip(new, self.lengths)):
            if not 0 <= n <= old:
                raise StateError(f"cannot truncate row {b} of length {old} to {n}: "
                                 "a cache can only rewind to a length between 0 and its own")
        return dataclasses.replace(self, lengths=new)

    def writable(self, capacity: int = 0, contiguous: bool = False) -> "KVCache":
        """This cache if it may write past its lengths in place and holds ``capacity`` slots
        (in contiguous tensors if asked), else a copy of its live entries in a new buffer of at
        least ``capacity`` slots (zeros past them: masked scratch must not hold NaN)."""
        self.check_fresh()
        if (capacity <= self.capacity and self.buf.owns(self.lengths, self.versions)
                and (not contiguous or (self.k.is_contiguous() and self.v.is_contiguous()))):
            return self
        live = max(self.lengths, default=0)
        cap = max(capacity, self.capacity, 64)
        B, H, _, D = self.k.shape
        k = self.k.new_zeros(B, H, cap, D)
        v = self.v.new_zeros(B, H, cap, D)
        k[:, :, :live] = self.k[:, :, :live]
        v[:, :, :live] = self.v[:, :, :live]
        return KVCache.fresh(k, v, self.lengths)

    def keep(self, start: Sequence[int], index: Sequence[Sequence[int]]) -> "KVCache":
        """Keep, per row b, only entries ``start[b] + index[b][i]`` past ``start[b]``, moved to
        ``start[b] + i`` (tree verification keeps the accepted path). Moves entries inside the
        buffer when this cache owns it (copies it first otherwise), so states longer than
        ``start`` made before are refused afterwards."""
        if any(s0 + len(idx) > n for s0, idx, n in zip(start, index, self.lengths)):
            raise StateError("keep: an index reaches past a row's length")
        cache = self.writable()
        k, v = cache.k, cache.v
        moved_from = list(cache.lengths)
        for b, (s0, idx) in enumerate(zip(start, index)):
            if list(idx) != list(range(len(idx))):
                pos = torch.as_tensor([s0 + i for i in idx], device=k.device)
                k[b, :, s0:s0 + len(idx)] = k[b, :, pos]
                v[b, :, s0:s0 + len(idx)] = v[b, :, pos]
                moved_from[b] = s0
        lengths = tuple(s0 + len(idx) for s0, idx in zip(start, index))
        versions = cache.buf.wrote(moved_from, [max(e, m) for e, m in zip(lengths, moved_from)])
        return KVCache(cache.buf, lengths, versions)

    @classmethod
    def cat(cls, states: Sequence["KVCache"]) -> "KVCache":
        if not states:
            raise StateError("KVCache.cat needs at least one cache")
        for s in states:
            s.check_fresh()
        hi = max(max(s.lengths, default=0) for s in states)
        ks, vs = [], []
        for s in states:
            pad = hi - min(s.capacity, hi)
            ks.append(F.pad(s.k[:, :, :hi], (0, 0, 0, pad)))
            vs.append(F.pad(s.v[:, :, :hi], (0, 0, 0, pad)))
        return KVCache.fresh(torch.cat(ks), torch.cat(vs), sum((s.lengths for s in states), ()))


@dataclass(frozen=True)
class AttentionConfig(Config):
    heads: int = 4
    kv_heads: int | None = None       # None: as many as heads (plain multi-head)
    window: int | None = None         # sliding window: attend to the last `window` tokens
    rotary: bool = True
    rope_theta: float = 10000.0
    rope_scale: float = 1.0           # linear position interpolation: angles of position / scale
    bias: bool = False                # biases on the q/k/v projections (Qwen-style)
    scale: float | None = None        # None: 1/sqrt(head_dim)
    head_dim: int | None = None       # None: dim / heads; Gemma 3 sets it apart from the width
    qk_norm: bool = False             # RMSNorm over each head's q and k before rotary (Gemma 3)
    qk_norm_eps: float = 1e-6

    def validate(self) -> None:
        require(self.heads > 0, self, "heads", "a positive int")
        require(self.kv_heads is None or (self.kv_heads > 0 and self.heads % self.kv_heads == 0),
                self, "kv_heads", f"a positive divisor of heads = {self.heads}")
        require(self.window is None or self.window > 0, self, "window", "a positive int or None")
        require(self.rope_theta > 0, self, "rope_theta", "a positive number")
        require(self.rope_scale > 0, self, "rope_scale", "a positive number")
        require(self.scale is None or self.scale > 0, self, "scale", "a positive number or None")
        require(self.head_dim is None or self.head_dim > 0, self, "head_dim",
                "a positive int or None (dim / heads)")
        require(self.qk_norm_eps > 0, self, "qk_norm_eps", "a positive number")


@register("attention")
class Attention(Mixer):
    Config = AttentionConfig
    State = KVCache
    example_options = {"heads": 4, "kv_heads": 2}
    cost = ("parallel O(L^2) time, O(L) memory (fused SDPA); step O(L) time; "
            "state 2*kv_heads*head_dim*L (grows with L)")

    def __init__(self, dim: int, cfg: AttentionConfig):
        super().__init__(dim, cfg)
        self.head_dim = cfg.head_dim or heads_divide(dim, cfg.heads)
        if cfg.rotary and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim; dim = {dim} / heads = "
                             f"{cfg.heads} gives {self.head_dim}")
        self.heads = cfg.heads
        self.kv_heads = cfg.kv_heads or cfg.heads
        self.inner = self.heads * self.head_dim  # the width of q and of the heads' output
        kv_dim = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(dim, self.inner, bias=cfg.bias)
        self.k_proj = nn.Linear(dim, kv_dim, bias=cfg.bias)
        self.v_proj = nn.Linear(dim, kv_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(self.inner, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.qk_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.qk_norm_eps) if cfg.qk_norm else None
        self.qkv_proj: nn.Module | None = None  # q, k, v rows in one layer (fuse_qkv)
        self.scale = cfg.scale if cfg.scale is not None else self.head_dim ** -0.5
        self._inv_freq: Tensor | None = None

    def fuse_qkv(self, qkv_proj: nn.Module) -> None:
        """Replace q_proj, k_proj, v_proj by one layer whose outputs are theirs side by side
        (one matrix product instead of three; quantized models use it)."""
        del self.q_proj, self.k_proj, self.v_proj
        self.qkv_proj = qkv_proj

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> KVCache:
        shape = (batch_size, self.kv_heads, 0, self.head_dim)
        dev, dt = self._state_device(device), self._state_dtype(dtype)
        return KVCache.fresh(torch.empty(shape, device=dev, dtype=dt),
                             torch.empty(shape, device=dev, dtype=dt), (0,) * batch_size)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.kv_heads * self.head_dim * seq_len

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Projections split into heads: q (B, H, T, Dh), k and v (B, Hkv, T, Dh)."""
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            kv = self.kv_heads * self.head_dim
            q, k, v = self.qkv_proj(x).split([self.inner, kv, kv], -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(B, T, self.heads, self.head_dim)
        k = k.reshape(B, T, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.reshape(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    # -- the C++ step of quantized layers -------------------------------------------
    @property
    def quantized(self) -> bool:
        """Whether the projections are block-quantized: then a step runs the C++ kernel
        ``seqlab.ops.decode_cpu.attend_step`` (float32 on the CPU)."""
        from seqlab.nn.quant import QuantLinear

        projections = [self.qkv_proj] if self.qkv_proj is not None else [self.q_proj, self.k_proj,
                                                                            self.v_proj]
        return all(isinstance(p, QuantLinear) for p in projections)

    def step_unchecked(self, x_t: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        if not self.quantized or (torch.is_grad_enabled() and x_t.requires_grad):
            return super().step_unchecked(x_t, state)  # autograd needs the torch ops
        from seqlab.ops import decode_cpu

        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x_t)
        else:
            qkv = torch.cat([self.q_proj(x_t), self.k_proj(x_t), self.v_proj(x_t)], -1)
        if self.q_norm is not None:  # normed here; the C++ step rotates and attends
            qkv = self._norm_qk_flat(qkv)
        cache = self.cache_for_step(state)
        y = decode_cpu.attend_step(qkv.float().contiguous(), cache.k, cache.v,
                                   torch.tensor(cache.lengths), self.heads, self.kv_heads,
                                   self.inv_freq(), self.scale, self.cfg.window)
        return self.o_proj(y.to(x_t.dtype)), self.cache_after_step(cache)

    def _norm_qk_flat(self, qkv: Tensor) -> Tensor:
        """``qkv (B, (heads + 2 kv_heads) head_dim)`` with q and k normed per head."""
        kv = self.kv_heads * self.head_dim
        q, k, v = qkv.split([self.inner, kv, kv], -1)
        q = self.q_norm(q.unflatten(-1, (self.heads, self.head_dim))).flatten(-2)
        k = self.k_norm(k.unflatten(-1, (self.kv_heads, self.head_dim))).flatten(-2)
        return torch.cat([q, k, v], -1)

    def cache_for_step(self, state: KVCache, tokens: int = 1) -> KVCache:
        """``state`` ready for the C++ step to write ``tokens`` per row in place: float32,
        contiguous, owned, with the free slots (doubling when full)."""
        need = max(state.lengths) + tokens
        if state.k.dtype != torch.float32:
            state = state.to(torch.float32)
        return state.writable(need if need <= state.capacity else max(need, 2 * state.capacity),
                              contiguous=True)

    @staticmethod
    def cache_after_step(cache: KVCache, tokens: int = 1) -> KVCache:
        """The cache ``tokens`` longer per row, after the C++ step wrote them."""
        ends = tuple(n + tokens for n in cache.lengths)
        return KVCache(cache.buf, ends, cache.buf.wrote(cache.lengths, ends))

    def inv_freq(self) -> Tensor | None:
        """Rotary frequencies (head_dim / 2,) in float32, computed as ``rotary_angles`` does."""
        if not self.cfg.rotary:
            return None
        if self._inv_freq is None:
            half = self.head_dim // 2
            self._inv_freq = (self.cfg.rope_theta ** (-torch.arange(0, half, dtype=torch.float32) / half)
                              / self.cfg.rope_scale)
        return self._inv_freq

    def mix(self, x: Tensor, state: KVCache | None) -> tuple[Tensor, KVCache]:
        B, T, _ = x.shape
        q, k, v = self._qkv(x)
        fresh = state is None or max(state.lengths, default=0) == 0
        lengths = (0,) * B if state is None else state.lengths
        if self.cfg.rotary:
            pos = torch.arange(T, device=x.device)[None]  # (1, T): shared by every row
            if not fresh:
                pos = pos + torch.tensor(lengths, device=x.device)[:, None]
            cos, sin = rotary_angles(pos, self.head_dim, self.cfg.rope_theta, dtype=q.dtype,
                                     scale=self.cfg.rope_scale)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        if fresh:
            # The training path: plain causal attention, the cache is k and v as they are.
            mask = None if self.cfg.window is None else self._mask(lengths, T, 0, T, x.device)
            y = self._sdpa(q, k, v, mask, is_causal=mask is None and T > 1)
            new_state = KVCache.fresh(k, v, (T,) * B)
        else:
            new_state = self._append(state, k, v)
            lo = 0 if self.cfg.window is None else max(0, min(lengths) - self.cfg.window + 1)
            hi = max(lengths) + T
            uniform_step = T == 1 and self.cfg.window is None and min(lengths) == max(lengths)
            mask = None if uniform_step else self._mask(lengths, T, lo, hi, x.device)
            y = self._sdpa(q, new_state.k[:, :, lo:hi], new_state.v[:, :, lo:hi], mask, is_causal=False)
        y = y.transpose(1, 2).reshape(B, T, self.inner)
        return self.o_proj(y), new_state

    def mix_prefix(self, x: Tensor, prefix: Tensor, **tokens: Tensor) -> tuple[Tensor, KVCache]:
        """Non-causal face by mask: query i of row b sees key j iff j <= i or both lie in the
        row's prefix (i, j < prefix[b]), and |i - j| < window with a window. The cache holds
        all T keys, so decoding continues causally after them."""
        B, T, _ = x.shape
        q, k, v = self._qkv(x)
        if self.cfg.rotary:
            cos, sin = rotary_angles(torch.arange(T, device=x.device)[None], self.head_dim,
                                     self.cfg.rope_theta, dtype=q.dtype, scale=self.cfg.rope_scale)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        i = torch.arange(T, device=x.device)
        inside = i[None] < prefix.to(x.device)[:, None]                            # (B, T)
        ok = (i[None, :, None] >= i[None, None, :]) | (inside[:, :, None] & inside[:, None, :])
        if self.cfg.window is not None:
            ok = ok & ((i[:, None] - i[None, :]).abs() < self.cfg.window)
        y = self._sdpa(q, k, v, ok[:, None], is_causal=False)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.inner)), KVCache.fresh(k, v, (T,) * B)

    @property
    def supports_tree(self) -> bool:
        return self.cfg.window is None

    def mix_tree(self, x: Tensor, state: KVCache, depth: Tensor, visible: Tensor
                 ) -> tuple[Tensor, KVCache]:
        """Tree attention: ``x (B, T, D)`` holds the nodes of a token tree after each cached row.

        depth: (B, T) each node's position counted from where the tree begins (the row's
            length minus P);
        visible: (B, T, P + T) bool, node t sees node s (its ancestors and itself), where the
        first P columns are the last P cache entries of each row (nodes of the same tree fed
        by an earlier call); every older cache entry is seen by every node. The new state
        holds all T nodes; ``KVCache.keep`` then keeps a path.
        """
        if self.cfg.window is not None:
            raise ValueError("tree attention does not support a sliding window")
        B, T, _ = x.shape
        q, k, v = self._qkv(x)
        lens = torch.tensor(state.lengths, device=x.device)
        S = visible.shape[2]  # P tree nodes already in the cache, then the T new ones
        start = lens - (S - T)  # where the tree begins in each row
        if self.cfg.rotary:
            cos, sin = rotary_angles(start[:, None] + depth, self.head_dim, self.cfg.rope_theta,
                                     dtype=q.dtype, scale=self.cfg.rope_scale)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        new_state = self._append(state, k, v)
        hi = max(state.lengths) + T
        rel = torch.arange(hi, device=x.device)[None] - start[:, None]          # (B, hi)
        new = (rel >= 0) & (rel < S)
        seen = visible.gather(2, rel.clamp(0, S - 1)[:, None, :].expand(B, T, hi))
        mask = (rel < 0)[:, None, :] | (seen & new[:, None, :])                # (B, T, hi)
        y = self._sdpa(q, new_state.k[:, :, :hi], new_state.v[:, :, :hi], mask[:, None],
                       is_causal=False)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.inner)), new_state

    def _sdpa(self, q, k, v, mask, is_causal):
        if self.kv_heads != self.heads and not _TORCH_HAS_GQA:
            rep = self.heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                  scale=self.scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                              scale=self.scale,
                                              enable_gqa=self.kv_heads != self.heads)

    def _mask(self, lengths, T, lo, hi, device) -> Tensor:
        """Boolean (B, 1, T, hi-lo): query t of row b sees key j iff j <= len_b + t (and inside the window)."""
        qpos = torch.tensor(lengths, device=device)[:, None] + torch.arange(T, device=device)  # (B, T)
        kpos = torch.arange(lo, hi, device=device)                                              # (S,)
        ok = kpos[None, None, :] <= qpos[:, :, None]
        if self.cfg.window is not None:
            ok = ok & (kpos[None, None, :] > qpos[:, :, None] - self.cfg.window)
        return ok[:, None]

    @staticmethod
    def _append(state: KVCache, k: Tensor, v: Tensor) -> KVCache:
        """Write new keys/values at each row's length, in place where ``state`` may (see
        ``KVBuffer``); copy-on-write for a branch, a new buffer when full."""
        B, _, T, _ = k.shape
        lengths = state.lengths
        need = max(lengths) + T
        ends = tuple(n + T for n in lengths)
        if torch.is_grad_enabled() and (k.requires_grad or state.k.requires_grad):
            # Training through a carried cache: build new tensors, no in-place writes
            # into tensors autograd has saved.
            state.check_fresh()
            if min(lengths) == max(lengths):
                n = lengths[0]
                return KVCache.fresh(torch.cat([state.k[:, :, :n], k], 2),
                                     torch.cat([state.v[:, :, :n], v], 2), ends)
            rows_k, rows_v = [], []
            for b, n in enumerate(lengths):
                pad = need - n - T
                rows_k.append(F.pad(torch.cat([state.k[b, :, :n], k[b]], 1), (0, 0, 0, pad)))
                rows_v.append(F.pad(torch.cat([state.v[b, :, :n], v[b]], 1), (0, 0, 0, pad)))
            return KVCache.fresh(torch.stack(rows_k), torch.stack(rows_v), ends)
        if state.k.dtype != k.dtype:
            state = state.to(k.dtype)
        # a full buffer doubles, so appending token by token copies O(L) times in all
        state = state.writable(need if need <= state.capacity else max(need, 2 * state.capacity))
        kbuf, vbuf = state.k, state.v
        if min(lengths) == max(lengths):
            n = lengths[0]
            kbuf[:, :, n:n + T] = k
            vbuf[:, :, n:n + T] = v
        else:
            for b, n in enumerate(lengths):
                kbuf[b, :, n:n + T] = k[b]
                vbuf[b, :, n:n + T] = v[b]
        return KVCache(state.buf, ends, state.buf.wrote(lengths, ends))

"""The n-gram layer: attention hard-wired to in-context n-gram statistics (Akyürek, Wang,
Kim & Andreas 2024, "In-Context Language Learning: Architectures and Algorithms",
arXiv:2401.12973: the "n-gram head" that trained Transformers learn, built in).

Position i attends to the positions j that follow an earlier occurrence of the (n-1)-gram
ending at i, and reads the layer's input there (with one-hot token embeddings as x, the
average is the in-context n-gram estimate of the next token):

    M_ij = [j <= i] · Π_{k=0}^{n-2} [tok_{j-1-k} = tok_{i-k}]           (tok_{<0} matches nothing)
    A_ij = M_ij / Σ_j M_ij   (uniform; 0 when no j matches)   or   softmax over {j: M_ij} of q_i·k_j/√d_k
    y_i  = W_s x_i + b + Σ_{n'} W_{n'} Σ_j A^{(n')}_ij x_j       (n' = n_min .. n; just n by default)

The term on the position's own input (W_s x_i + b) is in the authors' layer too (their
code, berlino/seq_icl, adds two biased linear maps; one bias is the same function). One
layer may combine several orders (``n_min``), each with its own projection. j = i is
included: when the (n-1)-gram ending at i-1 equals the one ending at i (a run such as
"a a a"), token i is an observed continuation of it; the authors' code stops at j < i.
n = 1 matches no tokens: the uniform average of all x_j, j <= i.

The layer reads the token ids (``needs_tokens``): the LM passes them, and called directly
it is ``m(x, state, tokens=ids)``. As an RNN its state grows like attention's: the ids and
inputs seen so far (and the keys, with softmax scores), one length per row so that rows may
be rewound to different lengths (``truncate``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.state import State, StateError


@dataclass(frozen=True, eq=False)
class NGramCache(State):
    """The ids and inputs seen so far: row ``b`` is valid at ``[:lengths[b]]``.

    Past a row's length the tensors hold scratch (zeros, or entries a ``truncate`` rewound
    past) that no query reads. Every call returns a new cache built from new tensors, so a
    kept cache is a snapshot and two continuations of it never see each other. That copy
    costs O(L * dim) per call, the order of what a step reads anyway (attention's cache
    avoids it with a shared buffer written in place).
    """

    tokens: Tensor            # (B, C) int64
    values: Tensor            # (B, C, D): the layer's inputs x
    keys: Tensor              # (B, C, Dk): learned keys (Dk = 0 with uniform scores)
    lengths: tuple[int, ...]

    can_truncate: ClassVar[bool] = True

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    def live_tensors(self):
        """The valid entries, row by row (for comparisons and accounting)."""
        for b, n in enumerate(self.lengths):
            yield self.tokens[b, :n]
            yield self.values[b, :n]
            yield self.keys[b, :n]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.live_tensors())

    def _map_tensors(self, fn) -> "NGramCache":
        # fn may cast (State.to(dtype)): the ids stay int64 and only follow to the device.
        values, keys = fn(self.values), fn(self.keys)
        return dataclasses.replace(self, tokens=self.tokens.to(values.device), values=values,
                                   keys=keys)

    def select(self, index: Tensor | Sequence[int]) -> "NGramCache":
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        hi = max((self.lengths[i] for i in idx), default=0)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.tokens.device)
        return NGramCache(self.tokens[:, :hi].index_select(0, t),
                          self.values[:, :hi].index_select(0, t),
                          self.keys[:, :hi].index_select(0, t), tuple(self.lengths[i] for i in idx))

    def clone(self) -> "NGramCache":
        hi = max(self.lengths, default=0)
        return NGramCache(self.tokens[:, :hi].clone(), self.values[:, :hi].clone(),
                          self.keys[:, :hi].clone(), self.lengths)

    def truncate(self, length: int | Sequence[int]) -> "NGramCache":
        """Rewind every row to ``length`` tokens (an int, or one int per row)."""
        new = (length,) * self.batch_size if isinstance(length, int) else tuple(int(n) for n in length)
        if len(new) != self.batch_size:
            raise StateError(f"truncate got {len(new)} lengths for a cache of {self.batch_size} rows")
        for b, (n, old) in enumerate(zip(new, self.lengths)):
            if not 0 <= n <= old:
                raise StateError(f"cannot truncate row {b} of length {old} to {n}: "
                                 "a cache can only rewind to a length between 0 and its own")
        return dataclasses.replace(self, lengths=new)

    @classmethod
    def cat(cls, states: Sequence["NGramCache"]) -> "NGramCache":
        if not states:
            raise StateError("NGramCache.cat needs at least one cache")
        hi = max(max(s.lengths, default=0) for s in states)

        def padded(t: Tensor) -> Tensor:  # (B, C, ...) -> (B, hi, ...)
            t = t[:, :hi]
            return F.pad(t, (0, 0) * (t.dim() - 2) + (0, hi - t.shape[1]))

        return NGramCache(torch.cat([padded(s.tokens) for s in states]),
                          torch.cat([padded(s.values) for s in states]),
                          torch.cat([padded(s.keys) for s in states]),
                          sum((s.lengths for s in states), ()))

    def append(self, tokens: Tensor, values: Tensor, keys: Tensor) -> "NGramCache":
        """A new cache with ``tokens (B, T)``, ``values (B, T, D)`` and ``keys (B, T, Dk)``
        written after each row's length; this one is left as it is."""
        B, T = tokens.shape
        lo, hi = min(self.lengths, default=0), max(self.lengths, default=0)
        old_v, old_k = self.values[:, :hi].to(values.dtype), self.keys[:, :hi].to(keys.dtype)
        ends = tuple(n + T for n in self.lengths)
        if lo == hi:
            return NGramCache(torch.cat([self.tokens[:, :hi], tokens], 1),
                              torch.cat([old_v, values], 1), torch.cat([old_k, keys], 1), ends)
        # Rows at different lengths (rewound per row by speculative decoding): each row's new
        # entries go after its own length, in a padded copy.
        at = torch.tensor(self.lengths, device=tokens.device)[:, None] + torch.arange(T, device=tokens.device)
        tok = F.pad(self.tokens[:, :hi], (0, T)).scatter(1, at, tokens)
        val = F.pad(old_v, (0, 0, 0, T)).scatter(1, at[..., None].expand_as(values), values)
        key = F.pad(old_k, (0, 0, 0, T)).scatter(1, at[..., None].expand_as(keys), keys)
        return NGramCache(tok, val, key, ends)


@dataclass(frozen=True)
class NGramConfig(Config):
    """Options of the n-gram layer.

    Attributes:
        n: the order: position i matches the n-1 tokens ending at it (2: the previous
            occurrences of the current token, as an induction head).
        n_min: None for order n alone, else every order ``n_min .. n``, each with its own
            output projection, summed.
        score: ``"uniform"`` (the paper: the average over the matching positions) or
            ``"softmax"`` (a learned score q_i·k_j over the matching positions only).
        key_dim: width of the query and key of ``"softmax"`` scores.
    """

    n: int = 2
    n_min: int | None = None
    score: Literal["uniform", "softmax"] = "uniform"
    key_dim: int = 16

    def validate(self) -> None:
        require(self.n >= 1, self, "n", "an int >= 1 (the order: n - 1 tokens are matched)")
        require(self.n_min is None or 1 <= self.n_min <= self.n, self, "n_min",
                f"None or an int between 1 and n = {self.n}")
        require(self.key_dim > 0, self, "key_dim", "a positive int")


@register("ngram")
class NGram(Mixer):
    Config = NGramConfig
    State = NGramCache
    needs_tokens = True
    example_options = {"n": 3, "n_min": 2, "score": "softmax", "key_dim": 8}
    cost = ("parallel O(L^2 (n + dim)) time, O(L^2) memory (the match masks); step O(L (n + dim)) "
            "time; state (1 + dim) * L, (1 + dim + key_dim) * L with softmax scores (grows with L)")

    def __init__(self, dim: int, cfg: NGramConfig):
        super().__init__(dim, cfg)
        self.orders = tuple(range(cfg.n if cfg.n_min is None else cfg.n_min, cfg.n + 1))
        self.self_proj = nn.Linear(dim, dim)                                # W_s x_i + b
        self.out_proj = nn.Linear(len(self.orders) * dim, dim, bias=False)  # the W_n' side by side
        self.key_dim = cfg.key_dim if cfg.score == "softmax" else 0
        self.q_proj = nn.Linear(dim, self.key_dim, bias=False) if self.key_dim else None
        self.k_proj = nn.Linear(dim, self.key_dim, bias=False) if self.key_dim else None

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> NGramCache:
        dev, dt = self._state_device(device), self._state_dtype(dtype)
        return NGramCache(torch.zeros(batch_size, 0, dtype=torch.long, device=dev),
                          torch.zeros(batch_size, 0, self.dim, dtype=dt, device=dev),
                          torch.zeros(batch_size, 0, self.key_dim, dtype=dt, device=dev),
                          (0,) * batch_size)

    def state_size(self, seq_len: int) -> int:
        return (1 + self.dim + self.key_dim) * seq_len

    def mix(self, x: Tensor, state: NGramCache | None,
            tokens: Tensor | None = None) -> tuple[Tensor, NGramCache]:
        if tokens is None:
            raise ValueError(f"{self.name} reads the token ids as well as x: call it with "
                             "tokens=ids (batch, length)")
        B, T, _ = x.shape
        if state is None:
            state = self.init_state(B, device=x.device, dtype=x.dtype)
        keys = self.k_proj(x) if self.k_proj is not None else x.new_zeros(B, T, 0)
        new = state.append(tokens.long(), x, keys)
        match = self.matches(new.tokens, state.lengths, T)                  # (B, K, T, W)
        weights = self.weights(match, None if self.q_proj is None else self.q_proj(x), new.keys)
        h = torch.einsum("bktw,bwd->btkd", weights, new.values)             # (B, T, K, D)
        return self.self_proj(x) + self.out_proj(h.reshape(B, T, -1)), new

    def matches(self, tokens: Tensor, lengths: Sequence[int], T: int) -> Tensor:
        """``(B, K, T, W)`` bool, one mask per order: query t of row b (position
        ``lengths[b] + t`` of ``tokens (B, W)``) matches position j.

        One comparison of shifted ids per matched token (n - 1 in all), never a loop over
        positions; order n' is the mask after its n' - 1 comparisons.
        """
        dev = tokens.device
        qpos = torch.tensor(list(lengths), device=dev)[:, None] + torch.arange(T, device=dev)  # (B, T)
        kpos = torch.arange(tokens.shape[1], device=dev)                                      # (W,)
        match = kpos[None, None, :] <= qpos[:, :, None]                                       # j <= i
        out = []
        for k in range(self.cfg.n):
            if k + 1 in self.orders:
                out.append(match)
            if k + 1 == self.cfg.n:
                break
            # The k-th id back from each: tok[i - k] against tok[j - 1 - k]. A j with
            # j - 1 - k < 0 matches nothing; i - k >= 0 whenever such a j <= i is left, so
            # the clamp on the query side only touches rows that match nothing anyway.
            tq = tokens.gather(1, (qpos - k).clamp(min=0))                  # (B, T)
            kj = kpos - 1 - k
            tk = tokens[:, kj.clamp(min=0)]                                 # (B, W)
            match = match & (tq[:, :, None] == tk[:, None, :]) & (kj >= 0)
        return torch.stack(out, 1)

    def weights(self, match: Tensor, q: Tensor | None, keys: Tensor) -> Tensor:
        """Attention ``(B, K, T, W)`` over the matching positions; a row with none is zero."""
        if q is None:
            m = match.to(keys.dtype)
            return m / m.sum(-1, keepdim=True).clamp(min=1)
        scores = torch.einsum("btc,bwc->btw", q, keys) * self.key_dim ** -0.5
        scores = scores[:, None].masked_fill(~match, float("-inf"))
        top = scores.amax(-1, keepdim=True).detach()                        # softmax is shift-free
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # rows with no match
        e = torch.exp(scores - top)                                         # 0 off the matches
        return e / e.sum(-1, keepdim=True).clamp(min=1)  # a matched row sums to >= 1 (its max)

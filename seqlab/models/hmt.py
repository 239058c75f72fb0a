"""Hierarchical Memory Transformer (He et al. 2024, arXiv:2405.06067): a fixed window plus a
memory of past segments, around any LM.

The sequence is read in segments of ``S = segment`` tokens. Before segment n the backbone
(any :class:`~seqlab.models.lm.LM`, including an imported SmolLM2) sees only

    [P_n, e(last k tokens of segment n-1), e(segment n tokens)]

where ``P_n`` is recalled from the memory: a summary of recent text is the query of an
attention over the cached memory embeddings ``M_{n-N} .. M_{n-1}`` (N = ``memories``).
When segment n is full, the backbone reads a learned summary vector ``T`` after it; its
output there is ``M_n``, appended to the cache. So the window costs the same at any
length, and what lies beyond it arrives through ``P_n``, one vector per segment.

A second change from the paper: ``P_n = P_0 + g * W_p rms(recalled)`` (``recall_in="residual"``),
with ``P_0`` the learned vector a window gets before any memory exists, ``rms`` a division by
the root mean square, ``W_p`` started at the identity and the per-channel gate ``g`` at zero.
An untuned HMT is then exactly the window model, and the memory, a final hidden state of
another scale than an embedding, is mapped into the input space as tuning finds it useful.
``recall_in="direct"`` feeds the recalled memory itself.

One change from the paper, for causality: HMT's query summarises the *first* tokens of
segment n (``T`` after them), which the tokens of segment n then depend on; a decoder
cannot know them before it writes them. Here the query summarises the last ``query``
tokens of segment n-1, which are known when segment n starts.

The model implements the decoding protocol. Its state (the backbone's state over the
window, the memory cache, the current segment's tokens) cannot rewind; speculative
strategies roll it back by snapshots. A fresh sequence runs segment by segment, each
segment in parallel; a chunk after a state runs token by token (exact).

Example:
    >>> model = HMT(HMTConfig(backbone=LMConfig(dim=64, layers="attention*2"), segment=32))
    >>> logits, state = model(torch.randint(0, 256, (2, 100)))      # (2, 100, 256)
    >>> wrapped = HMT.wrap(seqlab.models.load_pretrained("smollm2"), segment=256)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from seqlab.config import Config, ConfigError, require
from seqlab.models.base import SequenceModel
from seqlab.models.lm import LM, LMConfig, LMState, check_token_ids
from seqlab.models.pattern import LayerSpec
from seqlab.models.stack import check_state, step_through
from seqlab.state import State, StateError


@dataclass(frozen=True)
class HMTConfig(Config):
    """Options of the Hierarchical Memory Transformer.

    Attributes:
        backbone: the wrapped LM's config (its vocabulary is the model's).
        segment: tokens per segment, the window the backbone reads at once (S).
        sensory: tokens of the previous segment read again before a segment (k <= S).
        query: tokens of the previous segment whose summary queries the memory (<= S).
        memories: memory embeddings kept and recalled over (N); 0 is the ablation without
            memory (every window starts from the same learned vector).
        recall_dim: width of the recall attention's queries and keys.
        recall_in: how the recalled memory enters the window. "residual":
            ``P = P_0 + g * W_p rms(recalled)`` (rms: divided by its root mean square; W_p
            started at the identity, the per-channel gate g at zero), so an untuned HMT reads
            exactly as the window without memory and tuning adds the memory as far as it
            helps. "direct": ``P = recalled``, as the paper writes it; a memory is a final
            hidden state, which in SmolLM2 is about 19 times an embedding's norm, and after a
            40-step tuning that input made SmolLM2 worse than no memory (docs/results.md).
        max_length: the longest sequence the model accepts (None: no limit).
    """

    backbone: LMConfig = field(default_factory=lambda: LMConfig(dim=128, layers=("attention",) * 4))
    segment: int = 64
    sensory: int = 8
    query: int = 8
    memories: int = 32
    recall_dim: int = 64
    recall_in: Literal["residual", "direct"] = "residual"
    max_length: int | None = None

    def validate(self) -> None:
        require(self.segment > 0, self, "segment", "a positive int")
        require(0 <= self.sensory <= self.segment, self, "sensory",
                f"an int in 0..segment ({self.segment})")
        require(1 <= self.query <= self.segment, self, "query",
                f"an int in 1..segment ({self.segment})")
        require(self.memories >= 0, self, "memories", "an int >= 0 (0: no memory)")
        require(self.recall_dim > 0, self, "recall_dim", "a positive int")
        require(self.max_length is None or self.max_length > 0, self, "max_length",
                "a positive int or None")

    @property
    def vocab_size(self) -> int:
        return self.backbone.vocab_size

    def with_vocab_size(self, vocab_size: int) -> "HMTConfig":
        backbone = LMConfig.from_dict({**self.backbone.to_dict(), "vocab_size": vocab_size})
        return dataclasses.replace(self, backbone=backbone)

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        return {"backbone": (self.backbone.dim, self.backbone.layers)}


@dataclass(frozen=True, eq=False)
class HMTState(State):
    """Where an HMT is: the backbone's state over ``[P_n, sensory tokens, tokens of this
    segment read so far]``, the memory cache (the newest ``count[b]`` rows of
    ``memory[b]`` are real, oldest first), and the segment's tokens
    ``pending[b, :filled[b]]``."""

    lm: LMState
    memory: Tensor                  # (B, N, D), right-aligned
    count: Tensor                   # (B,) int64, memories held (<= N)
    pending: Tensor                 # (B, S) int64
    filled: tuple[int, ...]         # tokens of the current segment read, per row (< S)

    @property
    def batch_size(self) -> int:
        return len(self.filled)

    def select(self, index) -> "HMTState":
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.pending.device)
        return HMTState(self.lm.select(t), self.memory[t], self.count[t], self.pending[t],
                        tuple(self.filled[i] for i in idx))

    def clone(self) -> "HMTState":
        return HMTState(self.lm.clone(), self.memory.clone(), self.count.clone(),
                        self.pending.clone(), self.filled)

    def nbytes(self) -> int:
        return self.lm.nbytes() + sum(t.numel() * t.element_size()
                                      for t in (self.memory, self.count, self.pending))

    def detach(self) -> "HMTState":
        return HMTState(self.lm.detach(), self.memory.detach(), self.count, self.pending,
                        self.filled)

    @classmethod
    def cat(cls, states) -> "HMTState":
        if not states:
            raise StateError("HMTState.cat needs at least one state")
        return HMTState(LMState.cat([s.lm for s in states]),
                        torch.cat([s.memory for s in states]), torch.cat([s.count for s in states]),
                        torch.cat([s.pending for s in states]), sum((s.filled for s in states), ()))


class HMT(SequenceModel):
    """The Hierarchical Memory Transformer around an LM; see the module docstring."""

    kind = "hmt"

    def __init__(self, cfg: HMTConfig, backbone: LM | None = None):
        super().__init__()
        self.cfg = cfg
        self.lm = backbone if backbone is not None else LM(cfg.backbone)
        readers = [b.mixer.name for b in self.lm.blocks if b.mixer.needs_tokens]
        if readers:
            raise ConfigError(f"HMTConfig.backbone has {', '.join(readers)} layers, which read "
                              "token ids; HMT feeds the backbone memory vectors as well as tokens: "
                              "use mixers that read only vectors")
        D, std = cfg.backbone.dim, cfg.backbone.init_std
        self.summary = nn.Parameter(torch.randn(D) * std)     # T, read after a full segment
        self.no_memory = nn.Parameter(torch.randn(D) * std)   # P before any memory exists
        self.recall_q = nn.Linear(D, cfg.recall_dim, bias=False)
        self.recall_k = nn.Linear(D, cfg.recall_dim, bias=False)
        for lin in (self.recall_q, self.recall_k):
            nn.init.normal_(lin.weight, std=D ** -0.5)
        if cfg.recall_in == "residual":      # P = P_0 + g * W_p rms(recalled); g starts at 0
            # A gate per channel rather than W_p at zero: Adam moves every entry of a zero
            # matrix by about lr at once, which summed over D inputs made a 2-step tuning of
            # SmolLM2 worse than no memory. The gate's first steps move P by about lr.
            self.recall_out = nn.Linear(D, D, bias=False)
            nn.init.eye_(self.recall_out.weight)
            self.recall_gate = nn.Parameter(torch.zeros(D))

    @classmethod
    def wrap(cls, lm: LM, **options: Any) -> "HMT":
        """HMT around an existing LM (its weights shared, not copied), e.g. a pretrained one."""
        return cls(HMTConfig(backbone=lm.cfg, **options), backbone=lm)

    # -- the decoding protocol -------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> HMTState:
        """Before any token: the backbone has read ``P_0`` (no memory yet)."""
        dtype = dtype or self.summary.dtype
        device = self.device if device is None else device
        B, D = batch_size, self.cfg.backbone.dim
        _, lm_state = self.lm.features_of_vectors(self.no_memory.to(dtype).expand(B, 1, D))
        return HMTState(lm_state, torch.zeros(B, self.cfg.memories, D, dtype=dtype, device=device),
                        torch.zeros(B, dtype=torch.long, device=device),
                        torch.zeros(B, self.cfg.segment, dtype=torch.long, device=device),
                        (0,) * B)

    def forward(self, tokens: Tensor, state: HMTState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, HMTState]:
        """``tokens (B, T)`` -> logits ``(B, T, V)`` (position p predicts token p + 1), or
        ``(B, V)`` with ``last_only``, and the state after them.

        A fresh sequence runs a segment at a time; a chunk after a state runs step by step.
        """
        check_token_ids(tokens, 2, self.vocab_size)
        if state is not None:
            self._check_state(state, tokens.shape[0])
            return step_through(self._step, tokens, state, last_only)
        hidden, state = self._parallel(tokens)
        return self.lm.logits(hidden[:, -1] if last_only else hidden), state

    def step(self, token: Tensor, state: HMTState) -> tuple[Tensor, HMTState]:
        """One token ``(B,)`` -> logits ``(B, V)`` for the next, and the new state."""
        check_token_ids(token, 1, self.vocab_size)
        self._check_state(state, token.shape[0])
        return self._step(token, state)

    # -- the parts -------------------------------------------------------------------------
    def _recall(self, recent: Tensor, memory: Tensor, count: Tensor) -> Tensor:
        """``P``: the summary of ``recent`` tokens ``(B, q)`` attends over the held memories
        ``(B, N, D)``; rows without a memory get ``no_memory``."""
        B, N, D = memory.shape
        if N == 0:
            return self.no_memory.to(memory.dtype).expand(B, D)
        x = torch.cat([self.lm._embed(recent), self.summary.to(memory.dtype).expand(B, 1, D)], 1)
        query = self.lm.features_of_vectors(x)[0][:, -1]
        scores = (self.recall_q(query)[:, None] * self.recall_k(memory)).sum(-1)
        scores = scores / math.sqrt(self.cfg.recall_dim)
        held = torch.arange(N, device=memory.device)[None] >= N - count[:, None]
        # A row with nothing held attends over zeros and is replaced below: no -inf rows.
        scores = scores.masked_fill(~(held | (count == 0)[:, None]), float("-inf"))
        recalled = (scores.softmax(-1)[..., None] * memory).sum(1)
        start = self.no_memory.to(memory.dtype)
        if self.cfg.recall_in == "residual":
            unit = recalled * torch.rsqrt(recalled.pow(2).mean(-1, keepdim=True) + 1e-6)
            recalled = start + self.recall_gate.to(memory.dtype) * self.recall_out(unit)
        return torch.where((count > 0)[:, None], recalled, start)

    def _window(self, recalled: Tensor, previous: Tensor | None) -> Tensor:
        """``[P, e(sensory tokens of the previous segment)]`` as ``(B, 1 + k, D)``."""
        k = self.cfg.sensory
        parts = [recalled[:, None]]
        if previous is not None and k:
            parts.append(self.lm._embed(previous[:, previous.shape[1] - k:]))
        return torch.cat(parts, 1)

    @staticmethod
    def _push(memory: Tensor, count: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``new (B, D)`` as the newest memory, dropping the oldest when full."""
        return (torch.cat([memory[:, 1:], new[:, None]], 1),
                (count + 1).clamp(max=memory.shape[1]))

    def _parallel(self, tokens: Tensor) -> tuple[Tensor, HMTState]:
        B, T = tokens.shape
        S, q, D = self.cfg.segment, self.cfg.query, self.cfg.backbone.dim
        dtype = self.summary.dtype
        memory = torch.zeros(B, self.cfg.memories, D, dtype=dtype, device=tokens.device)
        count = torch.zeros(B, dtype=torch.long, device=tokens.device)
        summary = self.summary.expand(B, 1, D)
        recalled, previous, hidden = self.no_memory.expand(B, D), None, []
        for start in range(0, T, S):
            seg = tokens[:, start:start + S]
            window = self._window(recalled, previous)
            full = seg.shape[1] == S
            # A full segment also reads T (its memory); T comes last, so it changes nothing
            # before it.
            x = torch.cat([window, self.lm._embed(seg)]
                          + ([summary] if full and self.cfg.memories else []), 1)
            h, lm_state = self.lm.features_of_vectors(x)
            first = window.shape[1]
            hidden.append(h[:, first:first + seg.shape[1]])
            if not full:
                pending = torch.nn.functional.pad(seg, (0, S - seg.shape[1]))
                return torch.cat(hidden, 1), HMTState(lm_state, memory, count, pending,
                                                      (seg.shape[1],) * B)
            if self.cfg.memories:
                memory, count = self._push(memory, count, h[:, -1])
            recalled, previous = self._recall(seg[:, S - q:], memory, count), seg
        # The sequence ended with a full segment: the state is the next segment's window.
        _, lm_state = self.lm.features_of_vectors(self._window(recalled, previous))
        pending = torch.zeros(B, S, dtype=torch.long, device=tokens.device)
        return torch.cat(hidden, 1), HMTState(lm_state, memory, count, pending, (0,) * B)

    def _step(self, token: Tensor, state: HMTState) -> tuple[Tensor, HMTState]:
        B, S, q = token.shape[0], self.cfg.segment, self.cfg.query
        h, lm_state = self.lm.features_of_vectors(self.lm._embed(token), state.lm)
        filled = torch.tensor(state.filled, device=token.device)
        pending = state.pending.scatter(1, filled[:, None], token[:, None])
        done = [f + 1 == S for f in state.filled]
        memory, count = state.memory, state.count
        if any(done):
            # Rows whose segment is now full: read T (their new memory), recall for the next
            # segment and start its window; the other rows keep their state.
            rows = torch.tensor([b for b in range(B) if done[b]], device=token.device)
            mem_rows, count_rows = memory[rows], count[rows]
            if self.cfg.memories:
                new_memory, _ = self.lm.features_of_vectors(
                    self.summary.to(h.dtype).expand(len(rows), -1), lm_state.select(rows))
                mem_rows, count_rows = self._push(mem_rows, count_rows, new_memory)
            seg = pending[rows]
            window = self._window(self._recall(seg[:, S - q:], mem_rows, count_rows), seg)
            _, fresh = self.lm.features_of_vectors(window)
            where = {int(r): i for i, r in enumerate(rows)}
            index = torch.tensor([B + where[b] if done[b] else b for b in range(B)])
            lm_state = LMState.cat([lm_state, fresh]).select(index)
            memory, count = memory.clone(), count.clone()
            memory[rows], count[rows] = mem_rows, count_rows
        new = HMTState(lm_state, memory, count, pending,
                       tuple(0 if d else f + 1 for d, f in zip(done, state.filled)))
        return self.lm.logits(h), new

    # -- facts and checks ------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        own = sum(p.numel() for name, p in self.named_parameters() if not name.startswith("lm."))
        return self.lm.num_parameters(exclude_embeddings) + own

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of decode state per sequence after ``seq_len`` tokens: the window's backbone
        state, the memory cache and the segment's tokens (the same at every length)."""
        cfg, elem = self.cfg, torch.empty((), dtype=dtype).element_size()
        window = 1 + (cfg.sensory if seq_len >= cfg.segment else 0) + seq_len % cfg.segment
        return (self.lm.state_bytes(window, dtype) + cfg.memories * cfg.backbone.dim * elem
                + 8 * (cfg.segment + 1))

    def _check_state(self, state: Any, batch_size: int) -> None:
        check_state(state, HMTState, batch_size, "HMT", "an HMTState")


__all__ = ["HMT", "HMTConfig", "HMTState"]

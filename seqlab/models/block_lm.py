"""Block Transformer (Ho et al. 2024, arXiv:2406.02657): global-to-local language modelling.

Tokens are grouped into blocks of ``L = block_size``. The embedder concatenates a block's
token embeddings and projects them to one block embedding; a global model runs causally
over block embeddings; a local model decodes each block's tokens from that block's
context, attending only inside the block:

    g_0 = start,   g_{i+1} = W_e [E t_{iL}; ...; E t_{iL+L-1}]        (block i embedded)
    c_i = global(g_0, ..., g_i)                                       (context of block i)
    local(P c_i, e t_{iL}, ..., e t_{iL+L-2})  ->  logits of t_{iL}, ..., t_{iL+L-1}

Both inner models are stacks of registered mixers (attention by default, any mixer works).
Decoding is why: the global state grows by one entry per block, 1/L of a plain LM's KV
cache, and the local state holds at most L entries and is reset at every block, so at a
long context a step reads far less state (``benchmarks/block_lm.py``).

With ``block_size = 1`` every block is one token: the model is a plain LM (the global
model over token embeddings) whose output head is the local model run on one position per
token (attention over a single entry is a position-wise map), tested in
``tests/models/test_block_lm.py``.

The model implements the decoding protocol (``seqlab/decoding/protocol.py``): ``model(tokens,
state)`` and ``step``. Its state cannot rewind (the tokens of finished blocks are not
kept), so speculative strategies roll it back by snapshots, like a recurrent model's. A
chunk after a state runs token by token (exact); a fresh sequence runs in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.models.base import SequenceModel
from seqlab.models.lm import LMConfig, LMState, check_token_ids
from seqlab.models.pattern import LayerSpec, parse_layers
from seqlab.models.stack import Stack, check_state, per_row, step_through
from seqlab.state import State, StateError


@dataclass(frozen=True)
class BlockLMConfig(Config):
    """Options of the Block Transformer.

    Attributes:
        vocab_size: number of token ids (256 = bytes).
        block_size: tokens per block (L).
        embed_dim: width of each token's embedding inside the embedder; a block embedding
            is a linear map of the L concatenated embeddings to ``dim``.
        dim, layers: width and layer pattern of the global model (over blocks).
        local_dim, local_layers: width and layer pattern of the local model (in a block).
        mlp_hidden: hidden width of every block's MLP (None: 8/3 of each model's width).
        norm_eps, init_std: as in :class:`~seqlab.models.lm.LMConfig`.
        tie_embeddings: the output head reuses the local model's token embedding.
        max_length: the longest sequence the model accepts (None: no limit).
    """

    vocab_size: int = 256
    block_size: int = 4
    embed_dim: int = 64
    dim: int = 128
    layers: tuple[LayerSpec, ...] = ("attention",) * 4
    local_dim: int = 128
    local_layers: tuple[LayerSpec, ...] = ("attention",) * 2
    mlp_hidden: int | None = None
    norm_eps: float = 1e-5
    init_std: float = 0.02
    tie_embeddings: bool = True
    max_length: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers, "BlockLMConfig.layers"))
        object.__setattr__(self, "local_layers",
                           parse_layers(self.local_layers, "BlockLMConfig.local_layers"))
        super().__post_init__()

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "embed_dim", "dim", "local_dim"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        require(self.mlp_hidden is None or self.mlp_hidden >= 0, self, "mlp_hidden",
                "None, 0 (no MLP) or a positive int")
        require(self.norm_eps > 0, self, "norm_eps", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")
        require(self.max_length is None or self.max_length > 0, self, "max_length",
                "a positive int or None")

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        """The global model over blocks and the local model in a block: (width, layers)."""
        return {"global": (self.dim, self.layers), "local": (self.local_dim, self.local_layers)}

    def stack_config(self, which: str) -> LMConfig:
        """The LMConfig of the ``"global"`` or ``"local"`` stack."""
        dim, layers = (self.dim, self.layers) if which == "global" else (self.local_dim,
                                                                           self.local_layers)
        return LMConfig(vocab_size=1, dim=dim, layers=layers, mlp_hidden=self.mlp_hidden,
                        norm_eps=self.norm_eps, init_std=self.init_std)


@dataclass(frozen=True, eq=False)
class BlockLMState(State):
    """Where a Block Transformer is: its global state (one entry per finished block plus the
    start), its local state (the block's context and the tokens read in this block), and
    those tokens, ``pending[b, :filled[b]]``, which become the next block embedding."""

    global_: LMState
    local: LMState
    pending: Tensor                 # (B, L) int64
    filled: tuple[int, ...]         # tokens of the current block read, per row (< L)
    blocks: tuple[int, ...]         # global entries per row (finished blocks + 1)

    @property
    def batch_size(self) -> int:
        return len(self.filled)

    def select(self, index) -> "BlockLMState":
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.pending.device)
        return BlockLMState(self.global_.select(t), self.local.select(t), self.pending[t],
                            tuple(self.filled[i] for i in idx), tuple(self.blocks[i] for i in idx))

    def clone(self) -> "BlockLMState":
        return BlockLMState(self.global_.clone(), self.local.clone(), self.pending.clone(),
                            self.filled, self.blocks)

    def nbytes(self) -> int:
        return (self.global_.nbytes() + self.local.nbytes()
                + self.pending.numel() * self.pending.element_size())

    def detach(self) -> "BlockLMState":
        return BlockLMState(self.global_.detach(), self.local.detach(), self.pending,
                            self.filled, self.blocks)

    @classmethod
    def cat(cls, states) -> "BlockLMState":
        if not states:
            raise StateError("BlockLMState.cat needs at least one state")
        return BlockLMState(LMState.cat([s.global_ for s in states]),
                            LMState.cat([s.local for s in states]),
                            torch.cat([s.pending for s in states]),
                            sum((s.filled for s in states), ()), sum((s.blocks for s in states), ()))


class BlockLM(SequenceModel):
    """The Block Transformer; see the module docstring.

    Example:
        >>> model = BlockLM(BlockLMConfig(block_size=4, dim=64, layers="attention*2",
        ...                               local_dim=64, local_layers="attention*2"))
        >>> logits, state = model(torch.randint(0, 256, (2, 10)))      # (2, 10, 256)
        >>> logits, state = model.step(logits[:, -1].argmax(-1), state)
    """

    kind = "block"

    def __init__(self, cfg: BlockLMConfig):
        super().__init__()
        self.cfg = cfg
        L, std = cfg.block_size, cfg.init_std
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.block_proj = nn.Linear(L * cfg.embed_dim, cfg.dim, bias=False)
        self.start = nn.Parameter(torch.randn(cfg.dim) * std)
        self.global_ = Stack(cfg.stack_config("global"))
        self.ctx_proj = nn.Linear(cfg.dim, cfg.local_dim, bias=False)
        self.local_embed = nn.Embedding(cfg.vocab_size, cfg.local_dim)
        self.local = Stack(cfg.stack_config("local"))
        self.head = nn.Linear(cfg.local_dim, cfg.vocab_size, bias=False)
        for emb in (self.tok_embed, self.local_embed):
            nn.init.normal_(emb.weight, std=std)
        if cfg.tie_embeddings:
            self.head.weight = self.local_embed.weight
        else:
            nn.init.normal_(self.head.weight, std=std)

    # -- the decoding protocol -----------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> BlockLMState:
        """The state before any token: the global model has read the start embedding and the
        local model the first block's context."""
        dtype = dtype or self.start.dtype
        g = self.start.to(dtype).expand(batch_size, 1, -1)
        ctx, gstate = self.global_(g, self.global_.init_state(batch_size, device=device,
                                                               dtype=dtype))
        _, lstate = self.local(self.ctx_proj(ctx), self.local.init_state(
            batch_size, device=device, dtype=dtype))
        pending = torch.zeros(batch_size, self.cfg.block_size, dtype=torch.long,
                              device=self.device if device is None else device)
        return BlockLMState(gstate, lstate, pending, (0,) * batch_size, (1,) * batch_size)

    def forward(self, tokens: Tensor, state: BlockLMState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, BlockLMState]:
        """``tokens (B, T)`` -> logits ``(B, T, V)`` (position p predicts token p + 1), or
        ``(B, V)`` with ``last_only``, and the state after them.

        A fresh sequence runs in parallel; a chunk after a state runs step by step.
        """
        self._check_tokens(tokens, 2)
        if state is not None:
            self._check_state(state, tokens.shape[0])
            return step_through(self._step, tokens, state, last_only)
        hidden, state = self._parallel(tokens)
        return self.head(hidden[:, -1] if last_only else hidden), state

    def step(self, token: Tensor, state: BlockLMState) -> tuple[Tensor, BlockLMState]:
        """One token ``(B,)`` -> logits ``(B, V)`` for the next, and the new state."""
        self._check_tokens(token, 1)
        self._check_state(state, token.shape[0])
        return self._step(token, state)

    # -- the two faces ---------------------------------------------------------------------
    def _embed_blocks(self, blocks: Tensor) -> Tensor:
        """Token ids ``(B, n, L)`` -> block embeddings ``(B, n, dim)``."""
        B, n, L = blocks.shape
        return self.block_proj(self.tok_embed(blocks).reshape(B, n, L * self.cfg.embed_dim))

    def _parallel(self, tokens: Tensor) -> tuple[Tensor, BlockLMState]:
        B, T = tokens.shape
        L = self.cfg.block_size
        nf, rem = divmod(T, L)
        g = torch.cat([self.start.expand(B, 1, -1),
                       self._embed_blocks(tokens[:, :nf * L].reshape(B, nf, L))], 1)
        ctx, gstate = self.global_(g)                                     # (B, nf + 1, dim)
        prefix = self.ctx_proj(ctx)                                       # (B, nf + 1, Dl)
        # Local sequences i = 0..nf: [P c_i, e t_{iL}, ..., e t_{iL+L-2}], all in one batch.
        padded = torch.nn.functional.pad(tokens, (0, (nf + 1) * L - T)).reshape(B, nf + 1, L)
        x = torch.cat([prefix[:, :, None], self.local_embed(padded[:, :, :L - 1])], 2)
        h, _ = self.local(x.reshape(B * (nf + 1), L, -1))
        hidden = h.reshape(B, (nf + 1) * L, -1)[:, 1:T + 1]              # position p -> p + 1
        # The state: the last block's local model over its context and the rem tokens read.
        last = torch.cat([prefix[:, nf:], self.local_embed(tokens[:, nf * L:])], 1)
        _, lstate = self.local(last)
        pending = torch.nn.functional.pad(tokens[:, nf * L:], (0, L - rem))
        return hidden, BlockLMState(gstate, lstate, pending, (rem,) * B, (nf + 1,) * B)

    def _step(self, token: Tensor, state: BlockLMState) -> tuple[Tensor, BlockLMState]:
        B, L = token.shape[0], self.cfg.block_size
        filled = torch.tensor(state.filled, device=token.device)
        pending = state.pending.scatter(1, filled[:, None], token[:, None])
        done = [f + 1 == L for f in state.filled]                  # rows that finish a block
        gstate, local = state.global_, state.local
        x = self.local_embed(token)
        if any(done):
            ctx, new_g = self.global_.step(self._embed_blocks(pending[:, None])[:, 0], gstate)
            gstate = per_row(done, gstate, new_g,
                              [n + d for n, d in zip(state.blocks, done)])
            local = per_row(done, local, self.local.init_state(B, device=token.device,
                                                                 dtype=x.dtype))
            x = torch.where(torch.tensor(done, device=x.device)[:, None], self.ctx_proj(ctx), x)
        h, local = self.local.step(x, local)
        new = BlockLMState(gstate, local, pending,
                           tuple(0 if d else f + 1 for d, f in zip(done, state.filled)),
                           tuple(n + d for n, d in zip(state.blocks, done)))
        return self.head(h), new

    # -- facts and checks ------------------------------------------------------------------
    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.tok_embed.weight, self.local_embed.weight]

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of decode state per sequence after ``seq_len`` tokens (at most a block's
        worth of local entries)."""
        elem = torch.empty((), dtype=dtype).element_size()
        blocks = seq_len // self.cfg.block_size + 1
        local = seq_len % self.cfg.block_size + 1
        return elem * (sum(b.mixer.state_size(blocks) for b in self.global_.blocks)
                       + sum(b.mixer.state_size(local) for b in self.local.blocks))

    def _check_tokens(self, tokens: Any, rank: int) -> None:
        check_token_ids(tokens, rank, self.cfg.vocab_size)

    def _check_state(self, state: Any, batch_size: int) -> None:
        check_state(state, BlockLMState, batch_size, "Block Transformer", "a BlockLMState")


__all__ = ["BlockLM", "BlockLMConfig", "BlockLMState"]

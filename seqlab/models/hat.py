"""Hierarchical Autoregressive Transformer (Neitemeier et al. 2025, arXiv:2501.10322): bytes
in, words in the middle, bytes out.

The bytes are split into words by the bytes themselves (:func:`split_words`). A small
encoder reads each word's bytes and then a learned summary token; its output there is the
word's vector. A backbone runs causally over the word vectors; a small decoder spells each
word from the backbone's output for the words before it, attending only inside the word:

    v_k = W_v encoder(e b_{k,0}, ..., e b_{k,n-1}, cls)[n]            (word k, n bytes)
    c_k = backbone(start, v_0, ..., v_{k-1})[k]                       (context of word k)
    decoder(P c_k, d b_{k,0}, ..., d b_{k,n-2})  ->  logits of b_{k,0}, ..., b_{k,n-1}

All three are stacks of registered mixers (attention by default, any mixer works). The
backbone takes one step per word, so its state (a KV cache) grows about 7.7 times slower
than a byte LM's on the standard library's source (its words' mean length, measured by
``benchmarks/hat_lm.py --quick``); the encoder and decoder only ever hold one word. The
paper's case for it is robustness: a misspelt word is still read byte by byte, where a BPE
tokenizer cuts it into other tokens (measured in ``benchmarks/hat_lm.py``).

A word ends after a whitespace byte that follows some other byte of the word, or at
``max_word`` bytes; leading whitespace (indentation, blank lines) joins the word after it.
So ``"    return x\\n"`` is ``"    return "``, ``"x\\n"``. The end of a word is known once its
last byte is read, which keeps the model causal: the first byte of word k + 1 is predicted
from a context that has read all of word k. The cap bounds the padded training tensors and
splits long runs without spaces.

The model implements the decoding protocol (``seqlab/decoding/protocol.py``). Its state
cannot rewind (finished words are not kept as bytes), so speculative strategies roll it
back by snapshots. A chunk after a state runs byte by byte (exact); a fresh sequence runs
in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.models.base import SequenceModel
from seqlab.models.lm import LMConfig, LMState, check_token_ids
from seqlab.models.pattern import LayerSpec, parse_layers
from seqlab.models.stack import Stack, check_state, per_row, step_through
from seqlab.state import State, StateError

WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")   # what bytes.isspace() and re's \s accept


def word_positions(row: Sequence[int], max_word: int) -> tuple[list[int], list[int], bool]:
    """Where each byte of ``row`` falls: its word and its index in that word, for every byte
    and for the byte after the last (the one the last logits predict), and whether the
    current word has read a byte other than whitespace.

    Example:
        >>> word_positions(b"ab cd", 16)
        ([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2], True)
    """
    word, index, w, i, text = [], [], 0, 0, False
    for b in row:
        word.append(w)
        index.append(i)
        space = b in WHITESPACE
        ends = space and text
        text = not ends and (text or not space)   # a cut at max_word keeps it: same word
        if ends or i + 1 == max_word:
            w, i = w + 1, 0
        else:
            i += 1
    return word + [w], index + [i], text


def split_words(data: bytes | Sequence[int], max_word: int = 16) -> list[bytes]:
    """``data`` as the model splits it into words (the last may be unfinished).

    Example:
        >>> split_words(b"    return x\\n\\n    def", 16)
        [b'    return ', b'x\\n', b'\\n    def']
    """
    word, _, _ = word_positions(data, max_word)
    words: list[bytearray] = [bytearray() for _ in range(word[-1] + 1)]
    for w, b in zip(word, data):
        words[w].append(b)
    return [bytes(w) for w in words if w]


@dataclass(frozen=True)
class HATConfig(Config):
    """Options of the Hierarchical Autoregressive Transformer.

    Attributes:
        vocab_size: must be 256: words are split at whitespace bytes.
        max_word: the most bytes in a word; a longer one is cut into pieces of this size.
        encoder_dim, encoder_layers: width and layer pattern of the encoder (in a word).
        dim, layers: width and layer pattern of the backbone (over words).
        decoder_dim, decoder_layers: width and layer pattern of the decoder (in a word).
        mlp_hidden: hidden width of every block's MLP (None: 8/3 of each model's width).
        norm_eps, init_std: as in :class:`~seqlab.models.lm.LMConfig`.
        tie_embeddings: the output head reuses the decoder's byte embedding.
        max_length: the longest sequence the model accepts (None: no limit).
    """

    vocab_size: int = 256
    max_word: int = 16
    encoder_dim: int = 128
    encoder_layers: tuple[LayerSpec, ...] = ("attention",) * 2
    dim: int = 256
    layers: tuple[LayerSpec, ...] = ("attention",) * 4
    decoder_dim: int = 128
    decoder_layers: tuple[LayerSpec, ...] = ("attention",) * 2
    mlp_hidden: int | None = None
    norm_eps: float = 1e-5
    init_std: float = 0.02
    tie_embeddings: bool = True
    max_length: int | None = None

    def __post_init__(self) -> None:
        for name in ("encoder_layers", "layers", "decoder_layers"):
            object.__setattr__(self, name, parse_layers(getattr(self, name), f"HATConfig.{name}"))
        super().__post_init__()

    def validate(self) -> None:
        require(self.vocab_size == 256, self, "vocab_size",
                "256: HAT splits words at whitespace bytes, so it reads bytes "
                "(data.tokenizer: bytes)")
        for name in ("max_word", "encoder_dim", "dim", "decoder_dim"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        require(self.mlp_hidden is None or self.mlp_hidden >= 0, self, "mlp_hidden",
                "None, 0 (no MLP) or a positive int")
        require(self.norm_eps > 0, self, "norm_eps", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")
        require(self.max_length is None or self.max_length > 0, self, "max_length",
                "a positive int or None")

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        """The encoder (in a word), the backbone (over words), the decoder: (width, layers)."""
        return {"encoder": (self.encoder_dim, self.encoder_layers),
                "backbone": (self.dim, self.layers),
                "decoder": (self.decoder_dim, self.decoder_layers)}

    def stack_config(self, which: str) -> LMConfig:
        """The LMConfig of the ``"encoder"``, ``"backbone"`` or ``"decoder"`` stack."""
        dim, layers = self.layer_groups()[which]
        return LMConfig(vocab_size=1, dim=dim, layers=layers, mlp_hidden=self.mlp_hidden,
                        norm_eps=self.norm_eps, init_std=self.init_std)


@dataclass(frozen=True, eq=False)
class HATState(State):
    """Where a HAT is: its backbone state (one entry per finished word plus the start), its
    decoder state (the word's context and the bytes read in this word), and those bytes,
    ``pending[b, :filled[b]]``, which the encoder reads once the word ends."""

    backbone: LMState
    decoder: LMState
    pending: Tensor                 # (B, max_word) int64
    filled: tuple[int, ...]         # bytes of the current word read, per row (< max_word)
    text: tuple[bool, ...]          # the current word has read a byte other than whitespace
    words: tuple[int, ...]          # backbone entries per row (finished words + 1)

    @property
    def batch_size(self) -> int:
        return len(self.filled)

    def select(self, index) -> "HATState":
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.pending.device)
        return HATState(self.backbone.select(t), self.decoder.select(t), self.pending[t],
                        tuple(self.filled[i] for i in idx), tuple(self.text[i] for i in idx),
                        tuple(self.words[i] for i in idx))

    def clone(self) -> "HATState":
        return HATState(self.backbone.clone(), self.decoder.clone(), self.pending.clone(),
                        self.filled, self.text, self.words)

    def nbytes(self) -> int:
        return (self.backbone.nbytes() + self.decoder.nbytes()
                + self.pending.numel() * self.pending.element_size())

    def detach(self) -> "HATState":
        return HATState(self.backbone.detach(), self.decoder.detach(), self.pending,
                        self.filled, self.text, self.words)

    @classmethod
    def cat(cls, states) -> "HATState":
        if not states:
            raise StateError("HATState.cat needs at least one state")
        return HATState(LMState.cat([s.backbone for s in states]),
                        LMState.cat([s.decoder for s in states]),
                        torch.cat([s.pending for s in states]),
                        sum((s.filled for s in states), ()), sum((s.text for s in states), ()),
                        sum((s.words for s in states), ()))


class HAT(SequenceModel):
    """The Hierarchical Autoregressive Transformer; see the module docstring.

    Example:
        >>> model = HAT(HATConfig(encoder_dim=32, encoder_layers="attention(heads=2)",
        ...                       dim=64, layers="attention*2", decoder_dim=32,
        ...                       decoder_layers="attention(heads=2)*2"))
        >>> logits, state = model(torch.tensor([list(b"def f(x):\\n    return")]))
        >>> logits, state = model.step(logits[:, -1].argmax(-1), state)
    """

    kind = "hat"

    def __init__(self, cfg: HATConfig):
        super().__init__()
        self.cfg = cfg
        std = cfg.init_std
        self.enc_embed = nn.Embedding(cfg.vocab_size, cfg.encoder_dim)
        self.cls = nn.Parameter(torch.randn(cfg.encoder_dim) * std)   # read after a word's bytes
        self.encoder = Stack(cfg.stack_config("encoder"))
        self.word_proj = nn.Linear(cfg.encoder_dim, cfg.dim, bias=False)
        self.start = nn.Parameter(torch.randn(cfg.dim) * std)
        self.backbone = Stack(cfg.stack_config("backbone"))
        self.ctx_proj = nn.Linear(cfg.dim, cfg.decoder_dim, bias=False)
        self.dec_embed = nn.Embedding(cfg.vocab_size, cfg.decoder_dim)
        self.decoder = Stack(cfg.stack_config("decoder"))
        self.head = nn.Linear(cfg.decoder_dim, cfg.vocab_size, bias=False)
        for emb in (self.enc_embed, self.dec_embed):
            nn.init.normal_(emb.weight, std=std)
        if cfg.tie_embeddings:
            self.head.weight = self.dec_embed.weight
        else:
            nn.init.normal_(self.head.weight, std=std)

    # -- the decoding protocol -----------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> HATState:
        """The state before any byte: the backbone has read the start vector and the decoder
        the first word's context."""
        dtype = dtype or self.start.dtype
        g = self.start.to(dtype).expand(batch_size, 1, -1)
        ctx, bstate = self.backbone(g, self.backbone.init_state(batch_size, device=device,
                                                                 dtype=dtype))
        _, dstate = self.decoder(self.ctx_proj(ctx), self.decoder.init_state(
            batch_size, device=device, dtype=dtype))
        pending = torch.zeros(batch_size, self.cfg.max_word, dtype=torch.long,
                              device=self.device if device is None else device)
        return HATState(bstate, dstate, pending, (0,) * batch_size, (False,) * batch_size,
                        (1,) * batch_size)

    def forward(self, tokens: Tensor, state: HATState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, HATState]:
        """``tokens (B, T)`` bytes -> logits ``(B, T, 256)`` (position p predicts byte p + 1),
        or ``(B, 256)`` with ``last_only``, and the state after them.

        A fresh sequence runs in parallel; a chunk after a state runs byte by byte.
        """
        check_token_ids(tokens, 2, self.cfg.vocab_size)
        if state is not None:
            self._check_state(state, tokens.shape[0])
            return step_through(self._step, tokens, state, last_only)
        if tokens.shape[1] == 0:
            raise ValueError("the model was given an empty sequence of tokens")
        hidden, state = self._parallel(tokens)
        return self.head(hidden[:, -1] if last_only else hidden), state

    def step(self, token: Tensor, state: HATState) -> tuple[Tensor, HATState]:
        """One byte ``(B,)`` -> logits ``(B, 256)`` for the next, and the new state."""
        check_token_ids(token, 1, self.cfg.vocab_size)
        self._check_state(state, token.shape[0])
        return self._step(token, state)

    # -- the two faces ---------------------------------------------------------------------
    def _encode(self, words: Tensor, lengths: Tensor) -> Tensor:
        """Words ``(N, max_word)`` of ``lengths (N,)`` bytes -> word vectors ``(N, dim)``: the
        encoder's output at the summary token, read right after each word's last byte (the
        encoder is causal, so what stands after it in the row does not matter)."""
        n = int(lengths.max()) + 1                               # columns that matter
        x = F.pad(self.enc_embed(words), (0, 0, 0, 1))[:, :n]    # (N, n, E)
        at = torch.arange(n, device=x.device) == lengths[:, None]
        x = torch.where(at[..., None], self.cls.to(x.dtype), x)
        h, _ = self.encoder(x)
        return self.word_proj(h[torch.arange(len(words), device=h.device), lengths])

    def _parallel(self, tokens: Tensor) -> tuple[Tensor, HATState]:
        tokens = tokens.long()
        B, T = tokens.shape
        W = self.cfg.max_word
        dev = tokens.device
        # Word and index of every byte and of the byte each last logit predicts (Python per
        # row: the split is a sequential scan, and cheap next to the model).
        pos = [word_positions(row, W) for row in tokens.tolist()]
        word = torch.tensor([p[0] for p in pos], device=dev)             # (B, T + 1)
        index = torch.tensor([p[1] for p in pos], device=dev)
        done = [p[0][-1] for p in pos]                                   # finished words per row
        M = max(done)
        slot = word * W + index                                          # place in (M + 1, W)
        grid = tokens.new_zeros(B, (M + 1) * W).scatter(1, slot[:, :T], tokens)
        grid = grid.reshape(B, M + 1, W)                                 # the bytes of each word
        lengths = torch.zeros(B, M + 1, dtype=torch.long, device=dev).scatter_add(
            1, word[:, :T], torch.ones_like(tokens))
        # Encoder over the finished words' slots (a row's later slots are padding or its
        # unfinished word: the causal backbone reads them only after its real words).
        g = self.start.expand(B, 1, -1)
        if M:
            vecs = self._encode(grid[:, :M].reshape(B * M, W), lengths[:, :M].reshape(-1))
            g = torch.cat([g, vecs.reshape(B, M, -1)], 1)
        ctx, bstate = _ragged(self.backbone, g, [n + 1 for n in done])   # (B, M + 1, dim)
        # Decoder sequences k = 0..M: [P c_k, d b_{k,0}, ..., d b_{k,W-2}], all in one batch.
        x = torch.cat([self.ctx_proj(ctx)[:, :, None], self.dec_embed(grid[:, :, :W - 1])], 2)
        h, _ = self.decoder(x.reshape(B * (M + 1), W, -1))
        h = h.reshape(B, (M + 1) * W, -1)
        hidden = h.gather(1, slot[:, 1:, None].expand(-1, -1, h.shape[-1]))   # (B, T, Dd)
        # The state: the current word's decoder over its context and the bytes read so far.
        rows = torch.arange(B, device=dev)
        current = torch.tensor(done, device=dev)
        _, dstate = _ragged(self.decoder, x[rows, current], [p[1][-1] + 1 for p in pos])
        state = HATState(bstate, dstate, grid[rows, current], tuple(p[1][-1] for p in pos),
                         tuple(p[2] for p in pos), tuple(n + 1 for n in done))
        return hidden, state

    def _step(self, token: Tensor, state: HATState) -> tuple[Tensor, HATState]:
        token = token.long()
        B, W = token.shape[0], self.cfg.max_word
        filled = torch.tensor(state.filled, device=token.device)
        pending = state.pending.scatter(1, filled[:, None], token[:, None])
        space = [b in WHITESPACE for b in token.tolist()]
        ends_text = [s and t for s, t in zip(space, state.text)]
        done = [e or f + 1 == W for e, f in zip(ends_text, state.filled)]   # rows that end a word
        bstate, dstate = state.backbone, state.decoder
        x = self.dec_embed(token)
        if any(done):
            ctx, new_b = self.backbone.step(self._encode(pending, filled + 1), bstate)
            bstate = per_row(done, bstate, new_b, [n + d for n, d in zip(state.words, done)])
            dstate = per_row(done, dstate, self.decoder.init_state(B, device=token.device,
                                                                   dtype=x.dtype))
            x = torch.where(torch.tensor(done, device=x.device)[:, None], self.ctx_proj(ctx), x)
        h, dstate = self.decoder.step(x, dstate)
        new = HATState(bstate, dstate, pending,
                       tuple(0 if d else f + 1 for d, f in zip(done, state.filled)),
                       tuple(not e and (t or not s)
                             for e, t, s in zip(ends_text, state.text, space)),
                       tuple(n + d for n, d in zip(state.words, done)))
        return self.head(h), new

    # -- facts and checks ------------------------------------------------------------------
    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.enc_embed.weight, self.dec_embed.weight]

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32,
                    bytes_per_word: float = 7.7) -> int:
        """Bytes of decode state per sequence after ``seq_len`` bytes of text whose words
        average ``bytes_per_word`` bytes (7.7 on the standard library's source) and the
        decoder holds a full word (``max_word`` entries)."""
        elem = torch.empty((), dtype=dtype).element_size()
        words = int(seq_len / bytes_per_word) + 1
        return elem * (sum(b.mixer.state_size(words) for b in self.backbone.blocks)
                       + sum(b.mixer.state_size(self.cfg.max_word) for b in self.decoder.blocks))

    def _check_state(self, state: Any, batch_size: int) -> None:
        check_state(state, HATState, batch_size, "HAT model", "a HATState")


def _ragged(stack: Stack, x: Tensor, lengths: list[int]) -> tuple[Tensor, LMState]:
    """``stack`` over ``x (B, T, D)`` whose row b is real up to ``lengths[b]``: the outputs
    (exact at the real positions, the stack being causal) and each row's state after its
    real positions. A cache rewinds per row; a recurrent state cannot, so rows of each
    length run again (only when the lengths differ: a byte prompt's rows do)."""
    out, state = stack(x[:, :max(lengths)])
    if len(set(lengths)) == 1:
        return out, state
    if state.can_truncate:
        return out, state.truncate(lengths)
    parts = {n: [b for b, m in enumerate(lengths) if m == n] for n in sorted(set(lengths))}
    order = [b for rows in parts.values() for b in rows]
    states = [stack(x[rows, :n])[1] for n, rows in parts.items()]
    inverse = [0] * len(lengths)
    for i, b in enumerate(order):
        inverse[b] = i
    return out, LMState.cat(states).select(inverse)


__all__ = ["HAT", "HATConfig", "HATState", "split_words", "word_positions"]

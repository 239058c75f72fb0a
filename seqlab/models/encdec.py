"""Encoder-decoder (Vaswani et al. 2017, arXiv:1706.03762; T5, arXiv:1910.10683) in the small
form "Return of the Encoder" (Elfeki et al. 2025, arXiv:2501.16273) argues for: the source is
read once, bidirectionally, and the decoder attends to it from every step.

    e = norm(encoder(E src))                      bidirectional inside each row's length
    x = E y_<t;  per decoder block:  x += mixer(norm x);  x += cross(norm x, e);  x += mlp(norm x)
    p(y_t | y_<t, src) = softmax(E^T norm(x_t))   (one embedding for source, target and head)

Encoder and decoder are stacks of registered mixers (attention by default, any mixer works):
the encoder runs each mixer's non-causal face (``Mixer.mix_prefix`` with the row's length as
the prefix, so padding after a source is never seen), the decoder its causal faces. Blocks
``0, k, 2k, ...`` of the decoder (``cross_every = k``; 1: all) hold a cross-attention
(:class:`seqlab.nn.cross_attention.CrossAttention`).

Decoding: ``model.condition(source, lengths)`` encodes a batch and projects every cross
layer's keys and values once; the state holds them beside the decoder mixers' states, so a
decode step reads the source's keys and never recomputes them. The engine
(``seqlab.decoding.generate``, every strategy) starts from those states through its
``cached`` rows, each prompt being ``source + [start_id]`` as a decoder-only model would read
it, the source already in the state (:func:`decode`). The state counts the source's tokens
(``EncDecState.offset``), so a rewind to the engine's lengths lands on the decoder's own.
``init_state`` is the empty source.

Vocabulary: bytes 0..255, then ``start_id`` (256; the decoder's first input, and a
decoder-only model's separator between source and target) and ``end_id`` (257).

Example:
    >>> model = EncDec(EncDecConfig(dim=64, encoder_layers="attention*2",
    ...                             decoder_layers="attention*2"))
    >>> src, lengths = pad_rows([list(b"def f(x): return x"), list(b"pass")])
    >>> state = model.condition(src, lengths)
    >>> logits, state = model(torch.tensor([[256, 82], [256, 68]]), state)  # teacher-forced
    >>> decode(model, src, lengths, "beam", 40, num_beams=4).tokens          # end with 257
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

import seqlab.mixers as mixers
from seqlab.config import Config, require
from seqlab.decoding.protocol import Capabilities
from seqlab.models.base import SequenceModel
from seqlab.models.lm import Block, LMConfig, LMState, check_token_ids
from seqlab.models.pattern import LayerSpec, parse_layers
from seqlab.models.stack import check_state
from seqlab.nn import GatedMLP, RMSNorm
from seqlab.nn.cross_attention import CrossAttention
from seqlab.state import State, StateError


@dataclass(frozen=True)
class EncDecConfig(Config):
    """Options of the encoder-decoder.

    Attributes:
        vocab_size: token ids, shared by source and target (258: bytes, start, end).
        start_id: the decoder's first input (a decoder-only model's separator).
        end_id: the end of a target.
        dim: width of encoder, decoder and cross-attention.
        encoder_layers, decoder_layers: layer patterns of registered mixers
            (:mod:`seqlab.models.pattern`).
        cross_heads: heads of every cross-attention.
        cross_every: decoder blocks 0, k, 2k, ... attend to the source (1: every block).
        mlp_hidden: hidden width of every block's MLP (None: 8/3 dim rounded up to 64; 0: none).
        norm_eps, init_std, tie_embeddings: as in :class:`~seqlab.models.lm.LMConfig`.
        max_length: the longest prompt plus generation accepted (None: no limit).
    """

    vocab_size: int = 258
    start_id: int = 256
    end_id: int = 257
    dim: int = 128
    encoder_layers: tuple[LayerSpec, ...] = ("attention",) * 3
    decoder_layers: tuple[LayerSpec, ...] = ("attention",) * 3
    cross_heads: int = 4
    cross_every: int = 1
    mlp_hidden: int | None = None
    norm_eps: float = 1e-5
    init_std: float = 0.02
    tie_embeddings: bool = True
    max_length: int | None = None

    def __post_init__(self) -> None:
        for name in ("encoder_layers", "decoder_layers"):
            object.__setattr__(self, name, parse_layers(getattr(self, name),
                                                        f"EncDecConfig.{name}"))
        super().__post_init__()

    def validate(self) -> None:
        require(self.vocab_size > 0, self, "vocab_size", "a positive int")
        for name in ("start_id", "end_id"):
            require(0 <= getattr(self, name) < self.vocab_size, self, name,
                    f"an id in [0, vocab_size = {self.vocab_size})")
        require(self.end_id != self.start_id, self, "end_id",
                f"an id other than start_id = {self.start_id}")
        require(self.dim > 0, self, "dim", "a positive int")
        require(len(self.encoder_layers) > 0, self, "encoder_layers", "at least one layer")
        require(len(self.decoder_layers) > 0, self, "decoder_layers", "at least one layer")
        require(self.cross_heads > 0 and self.dim % self.cross_heads == 0, self, "cross_heads",
                f"a positive divisor of dim = {self.dim}")
        require(1 <= self.cross_every <= len(self.decoder_layers), self, "cross_every",
                f"an int in [1, {len(self.decoder_layers)}] (the decoder's layers), so that "
                "some block reads the source")
        require(self.mlp_hidden is None or self.mlp_hidden >= 0, self, "mlp_hidden",
                "None, 0 (no MLP) or a positive int")
        require(self.norm_eps > 0, self, "norm_eps", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")
        require(self.max_length is None or self.max_length > 0, self, "max_length",
                "a positive int or None")

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        """The encoder and the decoder: (width, layers)."""
        return {"encoder": (self.dim, self.encoder_layers),
                "decoder": (self.dim, self.decoder_layers)}

    def block_config(self, mlp: bool = True) -> LMConfig:
        """The LMConfig the blocks are built from (its vocabulary is not used)."""
        return LMConfig(vocab_size=1, dim=self.dim, layers=self.decoder_layers,
                        mlp_hidden=self.mlp_hidden if mlp else 0, norm_eps=self.norm_eps,
                        init_std=self.init_std)

    @property
    def mlp_width(self) -> int:
        return self.block_config().mlp_width

    def has_cross(self, i: int) -> bool:
        """Whether decoder block ``i`` attends to the source."""
        return i % self.cross_every == 0


@dataclass(frozen=True, eq=False)
class CrossMemory(State):
    """The source as the decoder reads it: per cross layer, keys and values (B, H, S, Dh)
    projected once, and ``valid (B, S)``, the positions inside each row's source.
    Rows of other sources join (``cat``) padded to the longest, the padding not valid."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    valid: Tensor

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    @classmethod
    def cat(cls, states: Sequence["CrossMemory"]) -> "CrossMemory":
        if not states:
            raise StateError("CrossMemory.cat needs at least one state")
        S = max(s.valid.shape[1] for s in states)

        def pad(t: Tensor, dim: int) -> Tensor:
            shape = list(t.shape)
            shape[dim] = S - shape[dim]
            return torch.cat([t, t.new_zeros(shape)], dim)

        layers = range(len(states[0].keys))
        return CrossMemory(tuple(torch.cat([pad(s.keys[i], 2) for s in states]) for i in layers),
                           tuple(torch.cat([pad(s.values[i], 2) for s in states]) for i in layers),
                           torch.cat([pad(s.valid, 1) for s in states]))


@dataclass(frozen=True, eq=False)
class EncDecState(State):
    """Where an encoder-decoder is: the source (``memory``), the decoder mixers' states, and
    per row ``offset``, the tokens the source counts for in the engine's lengths (its length
    after ``condition``, 0 for ``init_state``'s empty source)."""

    memory: CrossMemory
    decoder: LMState
    offset: tuple[int, ...]

    @property
    def can_truncate(self) -> bool:  # type: ignore[override]
        return self.decoder.can_truncate

    @property
    def batch_size(self) -> int:
        return len(self.offset)

    def select(self, index) -> "EncDecState":
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.memory.valid.device)
        return EncDecState(self.memory.select(t), self.decoder.select(t),
                           tuple(self.offset[i] for i in idx))

    def clone(self) -> "EncDecState":
        return EncDecState(self.memory.clone(), self.decoder.clone(), self.offset)

    def detach(self) -> "EncDecState":
        return EncDecState(self.memory.detach(), self.decoder.detach(), self.offset)

    def nbytes(self) -> int:
        return self.memory.nbytes() + self.decoder.nbytes()

    def truncate(self, length: int | Sequence[int]) -> "EncDecState":
        """Rewind every row to ``length`` tokens counted as the engine does (source included)."""
        lengths = [length] * self.batch_size if isinstance(length, int) else list(length)
        if len(lengths) != self.batch_size:
            raise StateError(f"truncate got {len(lengths)} lengths for a state of "
                             f"{self.batch_size} rows")
        own = [n - o for n, o in zip(lengths, self.offset)]
        if min(own) < 0:
            b = own.index(min(own))
            raise StateError(f"cannot truncate row {b} to {lengths[b]} tokens: its source counts "
                             f"{self.offset[b]}, and the source is not rewound (condition anew)")
        return replace(self, decoder=self.decoder.truncate(own))

    @classmethod
    def cat(cls, states: Sequence["EncDecState"]) -> "EncDecState":
        if not states:
            raise StateError("EncDecState.cat needs at least one state")
        return EncDecState(CrossMemory.cat([s.memory for s in states]),
                           LMState.cat([s.decoder for s in states]),
                           sum((s.offset for s in states), ()))


class DecoderBlock(nn.Module):
    """``x + mixer(norm x)``, then ``x + cross(norm x, memory)`` where the block has a
    cross-attention, then ``x + mlp(norm x)``."""

    def __init__(self, cfg: EncDecConfig, mixer: mixers.Mixer, cross: bool):
        super().__init__()
        self.self_block = Block(cfg.block_config(mlp=False), mixer)   # the mixer's residual only
        self.cross_norm = RMSNorm(cfg.dim, cfg.norm_eps) if cross else None
        self.cross = CrossAttention(cfg.dim, cfg.cross_heads) if cross else None
        width = cfg.mlp_width
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps) if width else None
        self.mlp = GatedMLP(cfg.dim, width) if width else None

    def forward(self, x: Tensor, state: State, tokens: Tensor, memory) -> tuple[Tensor, State]:
        """``x (B, T, D)`` and its ids ``tokens (B, T)``; ``memory``: (keys, values, valid)."""
        x, state = self.self_block(x, state, tokens)
        return self._rest(x, memory), state

    def step(self, x: Tensor, state: State, token: Tensor, memory) -> tuple[Tensor, State]:
        x, state = self.self_block.step(x, state, token)
        return self._rest(x, memory), state

    def _rest(self, x: Tensor, memory) -> Tensor:
        if self.cross is not None:
            x = x + self.cross(self.cross_norm(x), *memory)
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class EncDec(SequenceModel):
    """The encoder-decoder; see the module docstring."""

    def __init__(self, cfg: EncDecConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.embed = nn.Embedding(cfg.vocab_size, D)
        block_cfg = cfg.block_config()
        self.encoder = nn.ModuleList(Block(block_cfg, _build(cfg, "encoder_layers", i))
                                     for i in range(len(cfg.encoder_layers)))
        self.encoder_norm = RMSNorm(D, cfg.norm_eps)
        self.decoder = nn.ModuleList(
            DecoderBlock(cfg, _build(cfg, "decoder_layers", i), cfg.has_cross(i))
            for i in range(len(cfg.decoder_layers)))
        # decoder block i reads memory.keys[cross_slot[i]] (None: no cross-attention)
        slots = [i for i in range(len(cfg.decoder_layers)) if cfg.has_cross(i)]
        self.cross_slot = [slots.index(i) if i in slots else None
                           for i in range(len(cfg.decoder_layers))]
        self.norm = RMSNorm(D, cfg.norm_eps)
        self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _init_weights(self) -> None:
        # As the LM: mixers keep their papers' initialisation; residual outputs shrink with
        # depth (GPT-2), counted over all residual branches of the stack they sit in.
        std = self.cfg.init_std
        nn.init.normal_(self.embed.weight, std=std)
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.head.weight, std=std)
        for stack in (self.encoder, self.decoder):
            for block in stack:
                if block.mlp is not None:
                    block.mlp.init_weights(std, len(stack))

    # -- the decoding protocol -----------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> EncDecState:
        """The empty source (nothing to attend to; cross-attention adds zeros)."""
        device = device or self.device
        source = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        return self.condition(source, dtype=dtype)

    @property
    def capabilities(self) -> Capabilities:
        """Prompts are sources (``source_prompts``), so the CLI and server encode them."""
        return Capabilities(source=True)

    @property
    def end_id(self) -> int:
        """The id that ends a target: the engine's ``eos_id`` for this model."""
        return self.cfg.end_id

    @torch.no_grad()
    def source_prompts(self, sources: Sequence[Sequence[int]]
                       ) -> tuple[list[list[int]], list[tuple[int, EncDecState] | None]]:
        """The engine's prompts and ``cached`` rows for a batch of sources: what every caller
        of ``seqlab.decoding.generate`` (``decode``, ``seqlab generate``, ``seqlab serve``)
        does with a prompt that is a source rather than the start of the text to continue.

        Row b's prompt is ``sources[b] + [start_id]``, its first ``len(sources[b])`` tokens
        already run: they are the source encoded into its state (None for an empty source,
        which is the initial state)."""
        source, lengths = pad_rows(sources)
        state = self.condition(source.to(self.device), lengths)
        rows = [list(s) + [self.cfg.start_id] for s in sources]
        return rows, [(len(s), state.select([b])) if len(s) else None
                      for b, s in enumerate(sources)]

    def condition(self, source: Tensor, lengths: Tensor | Sequence[int] | None = None, *,
                  dtype=None) -> EncDecState:
        """Encode a batch of sources: the state before the first target token.

        Args:
            source: (B, S) int64 ids; row b's source is ``source[b, :lengths[b]]`` (what
                follows is padding, never seen).
            lengths: (B,) source lengths (None: S for every row).
            dtype: the state's float dtype (default: the model's).

        Returns:
            The state, whose ``offset`` counts each row's source tokens: the engine's prompt
            for row b is ``source[b, :lengths[b]] + [start_id]`` with the first
            ``lengths[b]`` tokens cached in this state (see :func:`decode`).

        Raises:
            ValueError: ids outside the vocabulary, or lengths outside [0, S].

        Example:
            >>> state = model.condition(*pad_rows([list(b"def f(): pass"), list(b"x = 1")]))
        """
        check_token_ids(source, 2, self.cfg.vocab_size)
        B, S = source.shape
        n = torch.full((B,), S) if lengths is None else torch.as_tensor(lengths).reshape(-1)
        if n.shape[0] != B or (n < 0).any() or (n > S).any():
            raise ValueError(f"lengths must give one source length in [0, {S}] per row of the "
                             f"{B} sources; got {n.tolist()}")
        n = n.to(device=source.device, dtype=torch.long)
        dtype = dtype or self.norm.weight.dtype
        valid = torch.arange(S, device=source.device)[None] < n[:, None]             # (B, S)
        keys, values = [], []
        enc = self.embed(source).to(dtype)
        if S:   # an empty source (init_state) has nothing to encode; not every mixer takes T = 0
            for block in self.encoder:
                enc, _ = block.forward_prefix(enc, n, source)
            enc = self.encoder_norm(enc)                                              # (B, S, D)
        for block in self.decoder:
            if block.cross is not None:
                k, v = block.cross.memory(enc)
                keys.append(k)
                values.append(v)
        decoder = LMState(tuple(b.self_block.mixer.init_state(B, device=source.device, dtype=dtype)
                                for b in self.decoder))
        return EncDecState(CrossMemory(tuple(keys), tuple(values), valid), decoder,
                           tuple(n.tolist()))

    def forward(self, tokens: Tensor, state: EncDecState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, EncDecState]:
        """Parallel (teacher-forced) face: target tokens ``(B, T)`` (``start_id`` first) after
        ``state`` (None: the empty source) -> logits ``(B, T, V)`` (``(B, V)`` with
        ``last_only``) and the state after them.

        Raises:
            ValueError: ids outside the vocabulary.
            StateError: a state from another model or of another batch size.
        """
        hidden, state = self.features(tokens, state)
        return self.head(hidden[:, -1] if last_only else hidden), state

    def features(self, tokens: Tensor, state: EncDecState | None = None
                 ) -> tuple[Tensor, EncDecState]:
        """The parallel face without the head: ``hidden (B, T, dim)`` after the final norm."""
        check_token_ids(tokens, 2, self.cfg.vocab_size)
        if state is None:
            state = self.init_state(tokens.shape[0])
        self._check_state(state, tokens.shape[0])
        x = self.embed(tokens)
        new = []
        for block, s, mem in zip(self.decoder, state.decoder.layers, self._memories(state)):
            x, s = block(x, s, tokens, mem)
            new.append(s)
        return self.norm(x), replace(state, decoder=LMState(tuple(new)))

    def step(self, token: Tensor, state: EncDecState) -> tuple[Tensor, EncDecState]:
        """Recurrent face: one target token ``(B,)`` -> logits ``(B, V)`` of the next."""
        check_token_ids(token, 1, self.cfg.vocab_size)
        self._check_state(state, token.shape[0])
        x = self.embed(token)
        new = []
        for block, s, mem in zip(self.decoder, state.decoder.layers, self._memories(state)):
            x, s = block.step(x, s, token, mem)
            new.append(s)
        return self.head(self.norm(x)), replace(state, decoder=LMState(tuple(new)))

    # -- facts ---------------------------------------------------------------------------
    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embed.weight]

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of decoding state per sequence for a source of ``seq_len`` tokens (the cross
        keys and values, one flag per position) after ``seq_len`` target tokens (the decoder
        mixers' states)."""
        elem = torch.empty((), dtype=dtype).element_size()
        cross = sum(2 * self.cfg.dim * seq_len for b in self.decoder if b.cross is not None)
        own = sum(b.self_block.mixer.state_size(seq_len) for b in self.decoder)
        return (cross + own) * elem + seq_len

    # -- parts ---------------------------------------------------------------------------
    def _memories(self, state: EncDecState) -> list[tuple[Tensor, Tensor, Tensor] | None]:
        m = state.memory
        return [None if j is None else (m.keys[j], m.values[j], m.valid) for j in self.cross_slot]

    def _check_state(self, state: EncDecState, batch_size: int) -> None:
        check_state(state, EncDecState, batch_size, "encoder-decoder",
                    "an EncDecState made by model.condition(source)")
        if (len(state.decoder.layers) != len(self.decoder)
                or len(state.memory.keys) != sum(s is not None for s in self.cross_slot)):
            raise StateError("the state belongs to another model (its layers differ from this "
                             "encoder-decoder's)")
        for i, (block, s) in enumerate(zip(self.decoder, state.decoder.layers)):
            try:
                block.self_block.mixer.check_state(s, batch_size)
            except StateError as e:
                raise StateError(f"decoder layer {i}: {e}") from None


def _build(cfg: EncDecConfig, field: str, i: int) -> mixers.Mixer:
    """Layer ``i`` of ``cfg.<field>``; a width its options cannot take is named with the layer."""
    spec = getattr(cfg, field)[i]
    try:
        return spec.build(cfg.dim)
    except ValueError as e:  # ConfigError included: e.g. dim not divisible by heads
        raise type(e)(f"EncDecConfig.{field}[{i}] = {spec}: {e}") from None


def pad_rows(rows: Sequence[Sequence[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    """Rows of ids of any lengths as ``(tokens (B, max length) int64, lengths (B,))``, padded
    after each row with ``pad`` (a source's padding is never read)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), max((len(r) for r in rows), default=0)), pad, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out, lengths


def decode(model: EncDec, source: Tensor, lengths: Tensor | Sequence[int] | None = None,
           strategy: str = "greedy", max_new_tokens: int = 64, **options):
    """Decode a batch of sources with the engine (``seqlab.decoding.generate``).

    Row b's prompt is ``source[b, :lengths[b]] + [start_id]``, as a decoder-only model reads
    it; its source is already in its conditioned state (``generate``'s ``cached``), so only
    the start id runs before the first new token. Decoding stops at ``end_id`` or after
    ``max_new_tokens``.

    Args:
        model: an EncDec.
        source, lengths: as in :meth:`EncDec.condition`.
        strategy, max_new_tokens, options: as in ``generate`` (e.g. ``"beam", num_beams=4``).

    Returns:
        generate's GenerateOutput; ``tokens[b]`` are row b's new ids (ending with end_id
        when it ended).
    """
    from seqlab.decoding import generate

    n = source.shape[0] if lengths is None else None
    rows = ([source[b].tolist() for b in range(n)] if n is not None else
            [source[b, :int(k)].tolist() for b, k in enumerate(torch.as_tensor(lengths))])
    rows, cached = model.source_prompts(rows)
    return generate(model, rows, strategy, max_new_tokens, eos_id=model.end_id, cached=cached,
                    **options)


__all__ = ["CrossMemory", "DecoderBlock", "EncDec", "EncDecConfig", "EncDecState", "decode",
           "pad_rows"]

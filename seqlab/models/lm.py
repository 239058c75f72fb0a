"""The decoder language model: ``embed -> blocks -> norm -> head``.

A block is ``x + mixer(norm(x))`` then ``x + mlp(norm(x))`` (pre-norm,
RMSNorm, SwiGLU MLP: the Llama layout, so pretrained checkpoints map onto
it). Gemma's variations are config fields: a GeGLU MLP (``mlp_activation``),
norms on the mixer's and the MLP's outputs too (``post_norms``) and embeddings
scaled by ``embed_scale``. The layer pattern names one registered mixer per layer, so a hybrid is a
list such as ``["mamba", "mamba", "attention"] * 4``. The model has the same
two faces as its mixers: ``model(tokens, state)`` runs a whole chunk in
parallel and ``model.step(token, state)`` advances one token. The token ids also reach
the mixers that declare ``needs_tokens`` (the n-gram layer matches them), through the blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from typing import Any

import torch
from torch import Tensor, nn

import seqlab.mixers as mixers
from seqlab.config import Config, ConfigError, require
from seqlab.mixers.bidirectional import check_prefix
from seqlab.models.base import SequenceModel
from seqlab.models.pattern import LayerSpec, parse_layers
from seqlab.decoding.protocol import Capabilities
from seqlab.models.block_step import block_step
from seqlab.nn import GatedMLP, RMSNorm
from seqlab.nn.mlp import ACTIVATIONS
from seqlab.state import State, StateError


@dataclass(frozen=True)
class LMConfig(Config):
    """Options of the decoder LM.

    Attributes:
        vocab_size: number of token ids (256 = bytes).
        dim: model width.
        layers: one :class:`~seqlab.models.pattern.LayerSpec` (mixer name plus
            its own options) per layer. Accepted as a pattern string
            (``"mamba*2+attention(window=512)"``), or a list of mixer names,
            patterns and mappings (``{"mixer": "attention", "window": 512}``);
            see :mod:`seqlab.models.pattern`.
        mixer_options: model-wide defaults per mixer name, e.g.
            ``{"attention": {"heads": 8, "kv_heads": 2}}``, filled into every
            layer of that mixer under the layer's own options (which win).
            Construction-only: the defaults are folded into ``layers``, so a
            saved config holds them there, and the attribute reads None.
        mlp_hidden: hidden width of each block's gated MLP; None picks
            Llama's 8/3·dim rounded up to a multiple of 64; 0 removes the MLP
            (Mamba-style blocks).
        mlp_activation: the MLP gate's activation: ``"silu"`` (SwiGLU, Llama) or
            ``"gelu_tanh"`` (GeGLU, Gemma).
        post_norms: also normalise the mixer's and the MLP's outputs before each
            residual add (Gemma 2/3: ``x + norm(mixer(norm(x)))``).
        embed_scale: the embeddings are multiplied by this (Gemma: sqrt(dim)).
        norm_eps: RMSNorm epsilon.
        tie_embeddings: the output head reuses the embedding matrix.
        init_std: standard deviation of embedding and MLP weights.
        max_length: the longest sequence (prompt plus generation) the model
            accepts, e.g. a pretrained model's context; None = no limit.

    Example:
        >>> cfg = LMConfig(dim=64, layers="attention(window=128)*3+attention",
        ...                mixer_options={"attention": {"heads": 4}})
        >>> [str(s) for s in cfg.layers[-2:]]
        ['attention(heads=4,window=128)', 'attention(heads=4)']
    """

    vocab_size: int = 256
    dim: int = 128
    layers: tuple[LayerSpec, ...] = ("attention", "mamba", "mamba")
    mixer_options: InitVar[dict | None] = None
    mlp_hidden: int | None = None
    mlp_activation: str = "silu"
    post_norms: bool = False
    embed_scale: float = 1.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    max_length: int | None = None

    def __post_init__(self, mixer_options: dict | None = None) -> None:
        # Before the type check: names, patterns and mappings become LayerSpecs here.
        layers = parse_layers(self.layers, "LMConfig.layers")
        if mixer_options is not None:
            layers = _with_defaults(layers, mixer_options)
        object.__setattr__(self, "layers", layers)
        super().__post_init__()

    @classmethod
    def field_names(cls) -> list[str]:
        # mixer_options is an init-only field: accepted from plain data, never stored.
        return super().field_names() + ["mixer_options"]

    def validate(self) -> None:
        require(self.vocab_size > 0, self, "vocab_size", "a positive int")
        require(self.dim > 0, self, "dim", "a positive int")
        require(self.mlp_hidden is None or self.mlp_hidden >= 0, self, "mlp_hidden",
                "None, 0 (no MLP) or a positive int")
        require(self.norm_eps > 0, self, "norm_eps", "a positive number")
        require(self.mlp_activation in ACTIVATIONS, self, "mlp_activation",
                " or ".join(map(repr, ACTIVATIONS)))
        require(self.embed_scale > 0, self, "embed_scale", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")
        require(self.max_length is None or self.max_length > 0, self, "max_length",
                "a positive int or None")

    @property
    def mlp_width(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return -(-int(8 * self.dim / 3) // 64) * 64

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        """Each stack of mixers by name: (width, layers). One here; other families have more."""
        return {"layers": (self.dim, self.layers)}


def _with_defaults(layers: tuple[LayerSpec, ...], defaults: Any) -> tuple[LayerSpec, ...]:
    """``layers`` with ``mixer_options`` defaults under each layer's own options."""
    if not isinstance(defaults, dict):
        raise ConfigError(f"LMConfig.mixer_options = {defaults!r} is not allowed: expected a "
                          "mapping of mixer name to options, e.g. {'attention': {'heads': 4}}")
    used = {s.mixer for s in layers}
    for name, opts in defaults.items():
        if name not in used:
            raise ConfigError(f"LMConfig.mixer_options has options for {name!r}, which is not in "
                              f"layers {sorted(used)}; remove it or add a {name} layer")
        if not isinstance(opts, dict):
            raise ConfigError(f"LMConfig.mixer_options[{name!r}] = {opts!r} is not allowed: "
                              "expected a mapping of option names to values")
    out = []
    for i, spec in enumerate(layers):
        try:
            out.append(spec.with_defaults(defaults.get(spec.mixer, {})))
        except ConfigError as e:
            raise ConfigError(f"LMConfig.mixer_options[{spec.mixer!r}] (layer {i}): {e}") from None
    return tuple(out)


@dataclass(frozen=True)
class LMState(State):
    """The model's state: one state per layer, in layer order."""

    layers: tuple[State, ...]

    @property
    def can_truncate(self) -> bool:  # type: ignore[override]
        return all(s.can_truncate for s in self.layers)

    @property
    def batch_size(self) -> int:
        return self.layers[0].batch_size

    def select(self, index) -> "LMState":
        if not isinstance(index, Tensor):
            index = torch.as_tensor(list(index), dtype=torch.long)
        return LMState(tuple(s.select(index) for s in self.layers))

    def clone(self) -> "LMState":
        return LMState(tuple(s.clone() for s in self.layers))

    def detach(self) -> "LMState":
        return LMState(tuple(s.detach() for s in self.layers))

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.layers)

    def truncate(self, length) -> "LMState":
        stuck = sorted({type(s).__name__ for s in self.layers if not s.can_truncate})
        if stuck:
            raise StateError(f"this model's state cannot rewind: its {', '.join(stuck)} layers are "
                             "recurrent. Keep the earlier state (a snapshot) and recompute instead.")
        return LMState(tuple(s.truncate(length) for s in self.layers))

    def keep(self, start, index) -> "LMState":
        """Per row, keep the entries ``start[b] + index[b]`` (attention caches only)."""
        return LMState(tuple(s.keep(start, index) for s in self.layers))

    @classmethod
    def cat(cls, states: Sequence["LMState"]) -> "LMState":
        if not states:
            raise StateError("LMState.cat needs at least one state")
        n = len(states[0].layers)
        return LMState(tuple(type(states[0].layers[i]).cat([s.layers[i] for s in states])
                             for i in range(n)))


class Block(nn.Module):
    """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: LMConfig, mixer: mixers.Mixer):
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mixer = mixer
        width = cfg.mlp_width
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps) if width else None
        self.mlp = GatedMLP(cfg.dim, width, activation=cfg.mlp_activation) if width else None
        post = cfg.post_norms
        self.mixer_post_norm = RMSNorm(cfg.dim, cfg.norm_eps) if post else None
        self.mlp_post_norm = RMSNorm(cfg.dim, cfg.norm_eps) if post and width else None
        # Set for quantized Llama blocks (seqlab.models.quantize.fuse_projections): steps run
        # seqlab.models.block_step, one C++ call.
        self.fused_step = False

    def forward(self, x: Tensor, state: State | None, tokens: Tensor | None = None
                ) -> tuple[Tensor, State]:
        """``x (B, T, dim)``; ``tokens (B, T)``, the ids at x's positions, reach mixers that
        declare ``needs_tokens`` (as do those of ``step`` and ``forward_tree``)."""
        if (self.fused_step and state is not None and max(state.lengths, default=0) > 0
                and not (torch.is_grad_enabled() and x.requires_grad)):
            return block_step(self, x, state)  # a chunk after a cache
        h, state = self.mixer.mix(self.mixer_norm(x), state, **self._tokens(tokens))
        return self._residuals(x, h), state

    def forward_prefix(self, x: Tensor, prefix: Tensor, tokens: Tensor | None = None
                       ) -> tuple[Tensor, State]:
        """The block with its mixer's non-causal face (``Mixer.mix_prefix``) from a fresh state."""
        h, state = self.mixer.mix_prefix(self.mixer_norm(x), prefix, **self._tokens(tokens))
        return self._residuals(x, h), state

    def forward_tree(self, x: Tensor, state: State, depth: Tensor, visible: Tensor,
                     tokens: Tensor | None = None):
        h, state = self.mixer.mix_tree(self.mixer_norm(x), state, depth, visible,
                                       **self._tokens(tokens))
        return self._residuals(x, h), state

    def step(self, x: Tensor, state: State, tokens: Tensor | None = None) -> tuple[Tensor, State]:
        if self.fused_step and not (torch.is_grad_enabled() and x.requires_grad):
            return block_step(self, x, state)
        h, state = self.mixer.step_unchecked(self.mixer_norm(x), state, **self._tokens(tokens))
        return self._residuals(x, h), state

    def _tokens(self, tokens: Tensor | None) -> dict[str, Tensor]:
        """The ``tokens=`` keyword for a mixer that declares ``needs_tokens``; none for the others."""
        if not self.mixer.needs_tokens:
            return {}
        if tokens is None:
            raise ValueError(f"this block's {self.mixer.name} mixer reads the token ids, and its "
                             "caller passed none: run it inside a token model (build_lm), which "
                             "passes them")
        return {"tokens": tokens}

    def _residuals(self, x: Tensor, h: Tensor) -> Tensor:
        """``x`` plus the mixer's output ``h``, then plus the MLP (each output normed first
        when the block has post norms)."""
        if self.mixer_post_norm is not None:
            h = self.mixer_post_norm(h)
        x = x + h
        if self.mlp is not None:
            h = self.mlp(self.mlp_norm(x))
            x = x + (h if self.mlp_post_norm is None else self.mlp_post_norm(h))
        return x


class LM(SequenceModel):
    """Decoder LM built from a layer pattern of registered mixers.

    Example:
        >>> model = build_lm(vocab_size=256, dim=64, layers=["attention", "mamba"])
        >>> logits, state = model(torch.randint(0, 256, (2, 10)))
        >>> logits, state = model(torch.randint(0, 256, (2, 3)), state)   # continue
        >>> next_logits, state = model.step(logits[:, -1].argmax(-1), state)
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, _build_mixer(cfg, i)) for i in range(len(cfg.layers)))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _init_weights(self) -> None:
        # Only the LM's own parts: each mixer keeps the initialisation its paper prescribes.
        std = self.cfg.init_std
        nn.init.normal_(self.embed.weight, std=std)
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.head.weight, std=std)
        for block in self.blocks:
            if block.mlp is not None:
                block.mlp.init_weights(std, len(self.blocks))

    # -- the two faces ------------------------------------------------------
    def forward(self, tokens: Tensor, state: LMState | None = None, *,
                last_only: bool = False, prefix=None) -> tuple[Tensor, LMState]:
        """Parallel face: ``tokens: (B, T)`` int64 -> ``logits: (B, T, vocab)`` and the new state.

        ``last_only`` applies the head at the last position only and returns ``(B, vocab)``:
        a prompt's other positions need no logits, and for SmolLM2 (vocabulary 49,152) the
        head over a 160-token prompt cost as much as the 30 layers below it.

        ``prefix`` (an int or one per row) chooses the mask for this call, from a fresh state
        (UniXcoder's modes in one model; ``seqlab.mixers.bidirectional``): positions before a
        row's prefix length see the whole prefix, later ones the past. None or 0 is the causal
        decoder, T the bidirectional encoder (an MLM), between them a prefix LM whose state
        continues causally after the call.

        Raises:
            ValueError: tokens of the wrong rank, dtype or range; a prefix outside [0, T] or
                with a state.
            StateError: a state from another model or of another batch size.
        """
        hidden, state = self.features(tokens, state, prefix=prefix)
        return self.head(hidden[:, -1] if last_only else hidden), state

    def _embed(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        # Gemma multiplies in the weights' dtype: sqrt(dim) rounded to it, as transformers does.
        return x if self.cfg.embed_scale == 1.0 else x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)

    def logits(self, hidden: Tensor) -> Tensor:
        """The vocabulary head on hidden states from ``features``."""
        return self.head(hidden)

    # -- the decoding protocol (seqlab/decoding/protocol.py) ------------------------
    @property
    def device(self) -> torch.device:
        return self.norm.weight.device  # always float (the embedding may be quantized)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(tree=self.supports_tree, features=True)

    def features(self, tokens: Tensor, state: LMState | None = None, *,
                 prefix=None) -> tuple[Tensor, LMState]:
        """The parallel face without the head: ``hidden: (B, T, dim)`` after the final norm
        (``prefix``: the mask, as in ``forward``).

        ``self.head(hidden)`` gives ``forward``'s logits. Applying the head only
        at the positions that matter (the scored tokens of a probe, the last
        token of a prompt) skips most of a large vocabulary's matmul.

        Example:
            >>> hidden, state = model.features(tokens)
            >>> logits = model.head(hidden[targets != -100])     # (N, vocab)
            >>> encoded, _ = model.features(tokens, prefix=tokens.shape[1])  # bidirectional
        """
        self._check_tokens(tokens, rank=2)
        layer_states = self._check_state(state, tokens.shape[0])
        if prefix is not None:
            return self._features_prefix(tokens, state, prefix)
        x = self._embed(tokens)
        new = []
        for block, s in zip(self.blocks, layer_states):
            x, s = block(x, s, tokens)
            new.append(s)
        return self.norm(x), LMState(tuple(new))

    def _features_prefix(self, tokens: Tensor, state: LMState | None, prefix
                         ) -> tuple[Tensor, LMState]:
        if state is not None:
            raise ValueError("a call with prefix= (a non-causal mask) starts from a fresh state: "
                             "drop the state, or call without prefix to continue causally")
        B, T = tokens.shape
        p = check_prefix(prefix, B, T, tokens.device)
        x = self._embed(tokens)
        new = []
        for block in self.blocks:
            x, s = block.forward_prefix(x, p, tokens)
            new.append(s)
        return self.norm(x), LMState(tuple(new))

    def features_of_vectors(self, x: Tensor, state: LMState | None = None
                            ) -> tuple[Tensor, LMState]:
        """``features`` on input vectors ``x (B, T, dim)`` in place of token embeddings, e.g.
        the memory and summary vectors a wrapper (``seqlab.models.hmt``) interleaves with
        tokens; ``x (B, dim)`` is one step. Mixers that read token ids cannot run here."""
        layer_states = self._check_state(state, x.shape[0])
        if x.dim() == 2:
            if state is None:
                raise StateError("a step of vectors needs a state (model.init_state)")
            new = []
            for block, s in zip(self.blocks, layer_states):
                x, s = block.step(x, s)
                new.append(s)
            return self.norm(x), LMState(tuple(new))
        new = []
        for block, s in zip(self.blocks, layer_states):
            x, s = block(x, s)
            new.append(s)
        return self.norm(x), LMState(tuple(new))

    def step(self, token: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """Recurrent face: ``token: (B,)`` -> ``logits: (B, vocab)`` and the new state."""
        self._check_tokens(token, rank=1)
        layer_states = self._check_state(state, token.shape[0])
        x = self._embed(token)
        new = []
        for block, s in zip(self.blocks, layer_states):
            x, s = block.step(x, s, token)
            new.append(s)
        return self.head(self.norm(x)), LMState(tuple(new))

    @property
    def supports_tree(self) -> bool:
        """Whether ``forward_tree`` works: every layer's mixer scores trees (``Mixer.supports_tree``)."""
        return all(b.mixer.supports_tree for b in self.blocks)

    def forward_tree(self, tokens: Tensor, state: LMState, depth: Tensor, visible: Tensor
                     ) -> tuple[Tensor, LMState]:
        """Score a token tree per row in one call (tree attention; see ``Attention.mix_tree``).

        tokens, depth: (B, T); visible: (B, T, P + T) ancestor-or-self, the first P columns
        being nodes of the same tree fed by an earlier call (the last P cache entries). Returns
        logits (B, T, vocab) and a state holding every node; keep one path with
        ``LMState.keep``.
        """
        hidden, state = self.features_tree(tokens, state, depth, visible)
        return self.head(hidden), state

    def features_tree(self, tokens: Tensor, state: LMState, depth: Tensor, visible: Tensor
                      ) -> tuple[Tensor, LMState]:
        """``forward_tree`` without the head: hidden states (B, T, dim) of the tree's nodes
        (the protocol's tree and features capabilities together; a drafter trained on the
        hidden states reads the accepted node's)."""
        if not self.supports_tree:
            raise ValueError("forward_tree needs a model whose every layer scores trees "
                             "(attention without a window); verify trees as batch rows instead")
        self._check_tokens(tokens, rank=2)
        layer_states = self._check_state(state, tokens.shape[0])
        x = self._embed(tokens)
        new = []
        for block, s in zip(self.blocks, layer_states):
            x, s = block.forward_tree(x, s, depth, visible, tokens)
            new.append(s)
        return self.norm(x), LMState(tuple(new))

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LMState:
        return LMState(tuple(b.mixer.init_state(batch_size, device=device, dtype=dtype)
                             for b in self.blocks))

    # -- facts --------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once), quantized weights included."""
        from seqlab.models.quantize import weight_count

        seen = {id(p): p for p in self.parameters()}
        n = sum(p.numel() for p in seen.values()) + weight_count(self)
        if exclude_embeddings:
            embed = self.embed
            n -= embed.num_weights if hasattr(embed, "num_weights") else embed.weight.numel()
        return n

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of recurrent state per sequence after ``seq_len`` tokens."""
        elem = torch.empty((), dtype=dtype).element_size()
        return sum(b.mixer.state_size(seq_len) for b in self.blocks) * elem

    # -- checks -------------------------------------------------------------------
    def _check_tokens(self, tokens: Tensor, rank: int) -> None:
        check_token_ids(tokens, rank, self.cfg.vocab_size)

    def _check_state(self, state: LMState | None, batch_size: int) -> Sequence[State | None]:
        if state is None:
            return [None] * len(self.blocks)
        if not isinstance(state, LMState):
            raise StateError(f"the model was given a {type(state).__name__}; it needs an LMState "
                             "(from model.init_state or an earlier call)")
        if len(state.layers) != len(self.blocks):
            raise StateError(f"the state has {len(state.layers)} layers but the model has "
                             f"{len(self.blocks)}: it belongs to another model")
        for i, (block, s) in enumerate(zip(self.blocks, state.layers)):
            try:
                block.mixer.check_state(s, batch_size)
            except StateError as e:
                raise StateError(f"layer {i}: {e}") from None
        return state.layers


def check_token_ids(tokens, rank: int, vocab_size: int) -> None:
    """Raise naming the problem unless ``tokens`` are int ids of ``rank`` dims in the vocabulary.

    Raises:
        TypeError: not a tensor.
        ValueError: another rank, a float dtype, or an id outside ``[0, vocab_size)``.
    """
    shape = "(batch, length)" if rank == 2 else "(batch,)"
    if not isinstance(tokens, Tensor):
        raise TypeError(f"the model expects token ids as a torch.Tensor {shape}, "
                        f"got {type(tokens).__name__}")
    if tokens.dim() != rank:
        hint = " (add a batch dimension with tokens[None])" if tokens.dim() == rank - 1 else ""
        raise ValueError(f"the model expects token ids of shape {shape}, got shape "
                         f"{tuple(tokens.shape)}{hint}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token ids must be int64 (or int32), got dtype {tokens.dtype}; "
                         "convert with tokens.long()")
    if tokens.numel():
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")


def grow_vocab(model: LM, vocab_size: int) -> LM:
    """A copy of ``model`` with ``vocab_size`` ids: the old rows kept, each new embedding (and
    untied head) row the mean of the old ones, so the new ids start as an average token (the
    MLM mask id a decoder gains when it goes on as an encoder).

    Raises:
        ValueError: ``vocab_size`` below the model's, or a quantized model.
    """
    old = model.cfg.vocab_size
    if vocab_size < old:
        raise ValueError(f"grow_vocab cannot shrink the vocabulary ({old} -> {vocab_size})")
    if not model.embed.weight.is_floating_point():
        raise ValueError("grow_vocab needs float weights; grow the vocabulary before quantizing")
    cfg = type(model.cfg).from_dict({**model.cfg.to_dict(), "vocab_size": vocab_size})
    grown = LM(cfg).to(device=model.device, dtype=model.embed.weight.dtype)
    state = model.state_dict()
    for name in ("embed.weight", "head.weight"):
        w = state[name]
        state[name] = torch.cat([w, w.mean(0, keepdim=True).expand(vocab_size - old, -1)])
    grown.load_state_dict(state)
    return grown


def _build_mixer(cfg: LMConfig, i: int) -> mixers.Mixer:
    """Layer ``i``'s mixer; a width its options cannot take is named with the layer."""
    spec = cfg.layers[i]
    try:
        return spec.build(cfg.dim)
    except ValueError as e:  # ConfigError included: e.g. dim not divisible by heads
        raise type(e)(f"LMConfig.layers[{i}] = {spec}: {e}") from None


def build_lm(vocab_size: int = 256, dim: int = 128,
             layers: str | Sequence[str | dict | LayerSpec] = ("attention", "mamba", "mamba"),
             **options: Any) -> LM:
    """Build a decoder LM; ``options`` are further LMConfig fields (``mixer_options`` included).

    Args:
        layers: a layer pattern or a list of layers (see :mod:`seqlab.models.pattern`).

    Example:
        >>> build_lm(dim=256, layers=["mamba", "mamba", "attention"] * 2,
        ...          mixer_options={"attention": {"heads": 4, "window": 512}})
        >>> build_lm(dim=256, layers="(attention(window=512)*3+attention)*2",
        ...          mixer_options={"attention": {"heads": 4}})      # windowed and global layers
    """
    if not isinstance(layers, str):
        layers = tuple(layers)
    cfg = LMConfig.from_dict({"vocab_size": vocab_size, "dim": dim, "layers": layers, **options})
    return LM(cfg)

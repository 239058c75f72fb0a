"""H-Net (Hwang et al. 2025, arXiv:2507.07955): dynamic chunking of bytes, learned end to end.

A byte-level encoder reads the bytes; a routing module marks a chunk boundary where two
adjacent encoder outputs differ; the main network runs causally over the chunks (one entry
per chunk, the encoder output at its first byte); a smoothing module and the upsampler
bring its outputs back to the bytes; a byte-level decoder predicts the next byte:

    x̂ = encoder(E bytes);   q_t = W_q x̂_t,  k_t = W_k x̂_t
    p_t = (1 - cos(q_t, k_{t-1})) / 2,  p_0 = 1;   b_t = [p_t >= 1/2]        (routing)
    ẑ_j = main(x̂_{t_0}, ..., x̂_{t_j})        over the boundaries t_0 < t_1 < ... (chunks)
    z_j = P_j ẑ_j + (1 - P_j) z_{j-1},  P_j = p_{t_j}                    (smoothing, an EMA)
    u_t = z_{c(t)} · STE(c_t) + W_r x̂_t       c(t): the latest chunk starting at or before t
    logits_t = head(decoder(u)_t)

``c_t = p_t`` at a boundary and ``1 - p_t`` elsewhere (the router's confidence); ``STE(c)``
is 1 in the forward pass and passes the gradient to ``c``, so the cross-entropy reaches the
router through it and through ``P`` in the EMA. A boundary at t depends on bytes <= t only,
so the model stays causal. The ratio loss pulls the share of boundaries towards
``1 / ratio_target``: with F the fraction of hard boundaries and G the mean of p per
sequence, ``N/(N-1) ((N-1) F G + (1-F)(1-G))`` (minimal at F = G = 1/N). A training forward
leaves it, already weighted by ``ratio_weight``, in ``model.aux_loss``, which the trainer adds
to the cross-entropy.

The encoder, main network and decoder are stacks of registered mixers (the paper: Mamba-2
at the byte level, a Transformer inside). The main network may be wider than the byte
level: a chunk's vector is padded with a learned vector on the way in and cut on the way
out (as the paper's code does). The step face carries the encoder's state, the router's
last key, the main network's state (advanced only at a boundary), the EMA's last value
(which is also what every byte of the current chunk is upsampled from) and the decoder's
state. Its state cannot rewind, so speculative strategies roll it back by snapshots; a
chunk after a state runs byte by byte (exact); a fresh sequence runs in parallel.
"""

from __future__ import annotations

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

# The EMA's P is kept inside [eps, 1 - eps] (the paper's code: 1e-4), so log(1 - P) is finite.
_P_EPS = 1e-4


@dataclass(frozen=True)
class HNetConfig(Config):
    """Options of the H-Net (one stage of hierarchy).

    Attributes:
        vocab_size: number of token ids (256 = bytes).
        byte_dim: width of the byte level: embedding, encoder, router, decoder, head.
        encoder_layers, decoder_layers: layer patterns of the byte-level stacks.
        byte_mlp_hidden: hidden width of their MLPs (0: none, as the paper's Mamba layers;
            None: 8/3 of byte_dim).
        dim, layers: width and layer pattern of the main network over chunks (dim >= byte_dim).
        mlp_hidden: hidden width of the main network's MLPs (None: 8/3 of dim).
        ratio_target: N, the bytes per chunk the ratio loss aims at (paper: 6 for one stage).
        ratio_weight: α, the ratio loss's weight against the cross-entropy (paper: 0.03).
        norm_eps, init_std: as in :class:`~seqlab.models.lm.LMConfig`.
        tie_embeddings: the output head reuses the byte embedding.
        max_length: the longest sequence the model accepts (None: no limit).
    """

    vocab_size: int = 256
    byte_dim: int = 128
    encoder_layers: tuple[LayerSpec, ...] = ("mamba",) * 2
    decoder_layers: tuple[LayerSpec, ...] = ("mamba",) * 2
    byte_mlp_hidden: int | None = 0
    dim: int = 256
    layers: tuple[LayerSpec, ...] = ("attention",) * 4
    mlp_hidden: int | None = None
    ratio_target: float = 6.0
    ratio_weight: float = 0.03
    norm_eps: float = 1e-5
    init_std: float = 0.02
    tie_embeddings: bool = True
    max_length: int | None = None

    def __post_init__(self) -> None:
        for name in ("encoder_layers", "layers", "decoder_layers"):
            object.__setattr__(self, name, parse_layers(getattr(self, name), f"HNetConfig.{name}"))
        super().__post_init__()

    def validate(self) -> None:
        for name in ("vocab_size", "byte_dim", "dim"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        require(self.dim >= self.byte_dim, self, "dim",
                f"at least byte_dim = {self.byte_dim} (a chunk's vector is padded up to dim)")
        for name in ("mlp_hidden", "byte_mlp_hidden"):
            value = getattr(self, name)
            require(value is None or value >= 0, self, name, "None, 0 (no MLP) or a positive int")
        require(self.ratio_target > 1, self, "ratio_target",
                "a number > 1 (bytes per chunk; the ratio loss divides by N - 1)")
        require(self.ratio_weight >= 0, self, "ratio_weight", "a number >= 0 (0: no ratio loss)")
        require(self.norm_eps > 0, self, "norm_eps", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")
        require(self.max_length is None or self.max_length > 0, self, "max_length",
                "a positive int or None")

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        """The byte-level encoder, the main network over chunks, the byte-level decoder."""
        return {"encoder": (self.byte_dim, self.encoder_layers), "main": (self.dim, self.layers),
                "decoder": (self.byte_dim, self.decoder_layers)}

    def stack_config(self, which: str) -> LMConfig:
        """The LMConfig of the ``"encoder"``, ``"main"`` or ``"decoder"`` stack."""
        dim, layers = self.layer_groups()[which]
        return LMConfig(vocab_size=1, dim=dim, layers=layers,
                        mlp_hidden=self.mlp_hidden if which == "main" else self.byte_mlp_hidden,
                        norm_eps=self.norm_eps, init_std=self.init_std)


@dataclass(frozen=True, eq=False)
class HNetState(State):
    """Where an H-Net is, per row: the encoder's state, the router's key of the last byte,
    the main network's state (one entry per chunk), ``z`` (the EMA's last value: every byte
    of the current chunk is upsampled from it), the decoder's state and the chunks so far
    (0: no byte read yet, so the next byte starts a chunk)."""

    encoder: LMState
    key: Tensor                     # (B, byte_dim), unit length (zeros before any byte)
    main: LMState
    z: Tensor                       # (B, byte_dim)
    decoder: LMState
    chunks: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return len(self.chunks)

    def select(self, index) -> "HNetState":
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.key.device)
        return HNetState(self.encoder.select(t), self.key[t], self.main.select(t), self.z[t],
                         self.decoder.select(t), tuple(self.chunks[i] for i in idx))

    def clone(self) -> "HNetState":
        return HNetState(self.encoder.clone(), self.key.clone(), self.main.clone(),
                         self.z.clone(), self.decoder.clone(), self.chunks)

    def detach(self) -> "HNetState":
        return HNetState(self.encoder.detach(), self.key.detach(), self.main.detach(),
                         self.z.detach(), self.decoder.detach(), self.chunks)

    def nbytes(self) -> int:
        return (self.encoder.nbytes() + self.main.nbytes() + self.decoder.nbytes()
                + (self.key.numel() + self.z.numel()) * self.z.element_size())

    @classmethod
    def cat(cls, states) -> "HNetState":
        if not states:
            raise StateError("HNetState.cat needs at least one state")
        return HNetState(LMState.cat([s.encoder for s in states]),
                         torch.cat([s.key for s in states]),
                         LMState.cat([s.main for s in states]),
                         torch.cat([s.z for s in states]),
                         LMState.cat([s.decoder for s in states]),
                         sum((s.chunks for s in states), ()))


class HNet(SequenceModel):
    """The H-Net; see the module docstring.

    Example:
        >>> model = HNet(HNetConfig(byte_dim=64, encoder_layers="mamba", dim=96,
        ...                         layers="attention*2", decoder_layers="mamba"))
        >>> logits, state = model(torch.randint(0, 256, (2, 10)))      # (2, 10, 256)
        >>> logits, state = model.step(logits[:, -1].argmax(-1), state)
        >>> p, boundary = model.boundaries(torch.randint(0, 256, (2, 10)))  # (2, 10) each
    """

    kind = "hnet"

    def __init__(self, cfg: HNetConfig):
        super().__init__()
        self.cfg = cfg
        D, std = cfg.byte_dim, cfg.init_std
        self.embed = nn.Embedding(cfg.vocab_size, D)
        self.encoder = Stack(cfg.stack_config("encoder"))
        # The router starts as the plain cosine of adjacent encoder outputs (the paper's init).
        self.router_q = nn.Linear(D, D, bias=False)
        self.router_k = nn.Linear(D, D, bias=False)
        self.pad = nn.Parameter(torch.zeros(cfg.dim - D)) if cfg.dim > D else None
        self.main = Stack(cfg.stack_config("main"))
        # Zero at init, so that the decoder first learns from the chunks (the paper's init).
        self.residual = nn.Linear(D, D, bias=False)
        self.decoder = Stack(cfg.stack_config("decoder"))
        self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=std)
        with torch.no_grad():
            for lin in (self.router_q, self.router_k):
                lin.weight.copy_(torch.eye(D))
        nn.init.zeros_(self.residual.weight)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=std)
        # The ratio loss of the last training forward (weighted), else None; see the docstring.
        self.aux_loss: Tensor | None = None

    # -- the decoding protocol -----------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> HNetState:
        """The state before any byte."""
        device = self.device if device is None else device
        dtype = dtype or self.embed.weight.dtype
        zeros = torch.zeros(batch_size, self.cfg.byte_dim, device=device, dtype=dtype)
        return HNetState(self.encoder.init_state(batch_size, device=device, dtype=dtype), zeros,
                         self.main.init_state(batch_size, device=device, dtype=dtype), zeros,
                         self.decoder.init_state(batch_size, device=device, dtype=dtype),
                         (0,) * batch_size)

    def forward(self, tokens: Tensor, state: HNetState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, HNetState]:
        """``tokens (B, T)`` -> logits ``(B, T, V)`` (position p predicts byte p + 1), or
        ``(B, V)`` with ``last_only``, and the state after them.

        A fresh sequence runs in parallel; a chunk after a state runs byte by byte. A
        training forward (``model.train()``, fresh sequence) also sets ``self.aux_loss``.
        """
        check_token_ids(tokens, 2, self.cfg.vocab_size)
        if tokens.shape[1] == 0:
            raise ValueError("the model was given an empty chunk of tokens")
        self.aux_loss = None
        if state is not None:
            self._check_state(state, tokens.shape[0])
            return step_through(self._step, tokens, state, last_only)
        hidden, state = self._parallel(tokens)
        return self.head(hidden[:, -1] if last_only else hidden), state

    def step(self, token: Tensor, state: HNetState) -> tuple[Tensor, HNetState]:
        """One byte ``(B,)`` -> logits ``(B, V)`` for the next, and the new state."""
        check_token_ids(token, 1, self.cfg.vocab_size)
        self._check_state(state, token.shape[0])
        return self._step(token, state)

    def boundaries(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The router on ``tokens (B, T)``: boundary probabilities ``p (B, T)`` and hard
        boundaries ``b (B, T)`` (bool; ``b[:, 0]`` is always set). Runs the encoder only."""
        check_token_ids(tokens, 2, self.cfg.vocab_size)
        h, _ = self.encoder(self.embed(tokens))
        p, _ = self._route(h)
        return p, p >= 0.5

    # -- the two faces ---------------------------------------------------------------------
    def _route(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder outputs ``(B, T, D)`` -> p ``(B, T)`` and the unit keys ``(B, T, D)``."""
        q = F.normalize(self.router_q(h), dim=-1)
        k = F.normalize(self.router_k(h), dim=-1)
        p = ((1 - (q[:, 1:] * k[:, :-1]).sum(-1)) / 2).clamp(0, 1)
        return F.pad(p, (1, 0), value=1.0), k                  # p_0 = 1: a chunk starts at 0

    def _to_main(self, x: Tensor) -> Tensor:
        return x if self.pad is None else torch.cat([x, self.pad.expand(*x.shape[:-1], -1)], -1)

    def _parallel(self, tokens: Tensor) -> tuple[Tensor, HNetState]:
        B, T = tokens.shape
        D = self.cfg.byte_dim
        h, enc = self.encoder(self.embed(tokens))                         # (B, T, D)
        p, k = self._route(h)
        b = p >= 0.5
        counts = b.sum(1)                                                 # chunks per row
        M = int(counts.max())
        # Downsample: each row's boundary positions first, in order (then padding, which the
        # causal main network and EMA only see after a row's real chunks).
        ar = torch.arange(T, device=tokens.device)
        starts = torch.where(b, ar, ar + T).sort(1).values[:, :M] % T     # (B, M)
        xm = h.gather(1, starts[..., None].expand(-1, -1, D))
        zm, main = self._main(self._to_main(xm), counts.tolist())
        P = p.gather(1, starts).clamp(_P_EPS, 1 - _P_EPS)
        z = _smooth(zm[..., :D], P)                                       # (B, M, D)
        # Upsample: byte t reads the chunk that starts at or before it, scaled by STE(c).
        chunk = b.long().cumsum(1) - 1                                    # (B, T)
        u = z.gather(1, chunk[..., None].expand(-1, -1, D))
        c = torch.where(b, p, 1 - p)
        y, dec = self.decoder(u * _ste_one(c)[..., None] + self.residual(h))
        if self.training and self.cfg.ratio_weight > 0:
            self.aux_loss = self.cfg.ratio_weight * self.ratio_loss(p, b)
        z_last = z.gather(1, (counts - 1)[:, None, None].expand(-1, 1, D))[:, 0]
        return y, HNetState(enc, k[:, -1], main, z_last, dec, tuple(counts.tolist()))

    def _main(self, xm: Tensor, counts: list[int]) -> tuple[Tensor, LMState]:
        """The main network on ``xm (B, M, dim)``, row b's chunks at ``[:counts[b]]``; its
        state after each row's own chunks."""
        out, state = self.main(xm)
        M = xm.shape[1]
        if all(c == M for c in counts):
            return out, state
        if state.can_truncate:                  # KV caches: rewinding the padding is free
            return out, state.truncate(counts)
        # A recurrent state cannot rewind: run each group of rows of equal count again, only
        # on its chunks (one more main pass over the batch), then restore the row order.
        groups: dict[int, list[int]] = {}
        for row, c in enumerate(counts):
            groups.setdefault(c, []).append(row)
        order = [row for rows in groups.values() for row in rows]
        parts = [self.main(xm[rows, :c])[1] for c, rows in groups.items()]
        inverse = torch.empty(len(order), dtype=torch.long, device=xm.device)
        inverse[torch.tensor(order, device=xm.device)] = torch.arange(len(order), device=xm.device)
        return out, LMState.cat(parts).select(inverse)

    def _step(self, token: Tensor, state: HNetState) -> tuple[Tensor, HNetState]:
        D = self.cfg.byte_dim
        h, enc = self.encoder.step(self.embed(token), state.encoder)       # (B, D)
        q = F.normalize(self.router_q(h), dim=-1)
        k = F.normalize(self.router_k(h), dim=-1)
        first = torch.tensor([n == 0 for n in state.chunks], device=h.device)
        p = torch.where(first, 1.0, ((1 - (q * state.key).sum(-1)) / 2).clamp(0, 1))
        b = p >= 0.5
        take = b.tolist()
        chunks = tuple(n + t for n, t in zip(state.chunks, take))
        main, z = state.main, state.z
        if any(take):  # the main network and the EMA advance only in rows that start a chunk
            zm, new_main = self.main.step(self._to_main(h), main)
            P = p.clamp(_P_EPS, 1 - _P_EPS)[:, None]
            z = torch.where(b[:, None], P * zm[:, :D] + (1 - P) * z, z)
            main = per_row(take, main, new_main, list(chunks))
        c = torch.where(b, p, 1 - p)
        y, dec = self.decoder.step(z * _ste_one(c)[:, None] + self.residual(h), state.decoder)
        return self.head(y), HNetState(enc, k, main, z, dec, chunks)

    # -- the ratio loss, facts and checks ---------------------------------------------------
    def ratio_loss(self, p: Tensor, b: Tensor) -> Tensor:
        """The paper's ratio loss (unweighted), averaged over rows: with F the fraction of
        hard boundaries and G the mean probability of a row, ``N/(N-1) ((N-1) F G +
        (1-F)(1-G))``; 1 when F = G = 1/N. Only G carries a gradient."""
        N = self.cfg.ratio_target
        f, g = b.to(p.dtype).mean(1), p.mean(1)
        return (N / (N - 1) * ((N - 1) * f * g + (1 - f) * (1 - g))).mean()

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embed.weight]

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of decode state per sequence after ``seq_len`` bytes, counting the main
        network at the target ratio (``seq_len / ratio_target`` chunks; the learned ratio
        may differ)."""
        elem = torch.empty((), dtype=dtype).element_size()
        chunks = -(-seq_len // self.cfg.ratio_target)
        return elem * (sum(b.mixer.state_size(seq_len) for b in self.encoder.blocks)
                       + sum(b.mixer.state_size(int(chunks)) for b in self.main.blocks)
                       + sum(b.mixer.state_size(seq_len) for b in self.decoder.blocks)
                       + 2 * self.cfg.byte_dim)

    def _check_state(self, state: Any, batch_size: int) -> None:
        check_state(state, HNetState, batch_size, "H-Net", "an HNetState")


def _ste_one(c: Tensor) -> Tensor:
    """Exactly 1 in the forward pass, with the gradient of ``c`` (straight-through)."""
    return 1 + (c - c.detach())


def _smooth(x: Tensor, P: Tensor) -> Tensor:
    """The EMA ``z_j = P_j x_j + (1 - P_j) z_{j-1}`` (z_{-1} = 0) over ``x (B, M, D)`` as
    one matmul: ``z_j = sum_{i<=j} P_i prod_{i<k<=j} (1 - P_k) x_i``. The products are
    sums of logs per (j, i) pair, never differences of a long cumulative sum, so float32
    keeps them exact to rounding; computed in float32 at least (under bfloat16 autocast)."""
    dt = torch.promote_types(x.dtype, torch.float32)
    a = torch.log1p(-P.to(dt))                                           # (B, M)
    M = a.shape[1]
    idx = torch.arange(M, device=a.device)
    # seg[b, j, i] = sum over i < k <= j of a_k: a_k in rows k > i, summed down to row j.
    seg = torch.where(idx[:, None] > idx[None, :], a[:, :, None], 0).cumsum(1)
    w = torch.where(idx[:, None] >= idx[None, :], seg.exp(), 0) * P.to(dt)[:, None, :]
    return (w @ x.to(dt)).to(x.dtype)


__all__ = ["HNet", "HNetConfig", "HNetState"]

"""Pointer network (Vinyals et al. 2015, arXiv:1506.03134): the output vocabulary is the input.

An encoder reads the n input points; a decoder reads, at each step, the encoding of the
input it pointed at last (a learned start vector first); its output distribution is an
additive attention over the encoder outputs plus one end-of-output slot:

    e_1..e_n = enc(W_in x_1..n) (forward + backward)     d_t = dec(e_{y_{t-1}} + W_g mean(e))
    u_tj = v · tanh(W_ref e_j + W_q d_t),  j = 1..n, end     p(y_t | y_<t, x) = softmax(u_t)

Both encoder and decoder are stacks of registered mixers (``seqlab.models.stack.Stack``,
LSTMs by default). The encoder is bidirectional and still exact for any causal mixer: one
stack reads the points, a second reads them reversed inside each row's length, and the
outputs are summed.

Vocabulary and masking: token ids ``0 .. max_n - 1`` are input positions and ``max_n`` is
the end of output (as an input, the start symbol). Positions ``>= n`` of an instance get
logit -inf; with ``mask_visited`` (permutations: sort, TSP) so do positions already pointed
at, and the end token until every input has been.

Decoding: the instance lives in the state. ``model.condition(points, n)`` encodes a batch
and returns the state before the first output; the engine (``seqlab.decoding.generate``,
greedy, beam, ...) starts each row from its state through ``generate``'s ``cached`` rows,
which ``decode`` below assembles. ``init_state`` is the empty instance (n = 0: only the
end token).

Example:
    >>> model = PointerNet(PointerNetConfig(max_n=20, in_dim=2, dim=64))
    >>> state = model.condition(torch.rand(4, 8, 2))            # 4 instances of 8 points
    >>> logits, _ = model(torch.tensor([[20, 3, 1]] * 4), state)  # (4, 3, 21), teacher-forced
    >>> decode(model, torch.rand(4, 8, 2), "beam", num_beams=4).tokens   # ends with 20
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.models.base import SequenceModel
from seqlab.models.lm import LMConfig, LMState, check_token_ids
from seqlab.models.pattern import LayerSpec, parse_layers
from seqlab.models.stack import Stack
from seqlab.state import State, StateError

IGNORE = -100   # label of padded target positions (cross_entropy's ignore_index)


@dataclass(frozen=True)
class PointerNetConfig(Config):
    """Options of the pointer network.

    Attributes:
        max_n: the most inputs per instance; token ``max_n`` is the end of output, so
            ``vocab_size = max_n + 1``.
        in_dim: features per input element (1: scalars to sort, 2: planar points).
        dim: width of encoder, decoder and attention.
        encoder_layers, decoder_layers: layer patterns of registered mixers
            (:mod:`seqlab.models.pattern`); the encoder runs twice (forward, reversed).
        mlp_hidden: hidden width of every block's MLP (None: 8/3 dim; 0: none).
        mask_visited: the output is a permutation of the inputs (sort, TSP): positions
            already pointed at get no probability, and the end token only once all n have.
        norm_eps, init_std: as in :class:`~seqlab.models.lm.LMConfig`.
    """

    max_n: int = 20
    in_dim: int = 2
    dim: int = 64
    encoder_layers: tuple[LayerSpec, ...] = ("lstm",)
    decoder_layers: tuple[LayerSpec, ...] = ("lstm",)
    mlp_hidden: int | None = 0
    mask_visited: bool = False
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("encoder_layers", "decoder_layers"):
            object.__setattr__(self, name, parse_layers(getattr(self, name),
                                                        f"PointerNetConfig.{name}"))
        super().__post_init__()

    def validate(self) -> None:
        for name in ("max_n", "in_dim", "dim"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        for name in ("encoder_layers", "decoder_layers"):
            require(len(getattr(self, name)) > 0, self, name, "at least one layer")
        require(self.mlp_hidden is None or self.mlp_hidden >= 0, self, "mlp_hidden",
                "None, 0 (no MLP) or a positive int")
        require(self.norm_eps > 0, self, "norm_eps", "a positive number")
        require(self.init_std > 0, self, "init_std", "a positive number")

    @property
    def vocab_size(self) -> int:
        """Output ids: the ``max_n`` input positions and the end token."""
        return self.max_n + 1

    def layer_groups(self) -> dict[str, tuple[int, tuple[LayerSpec, ...]]]:
        """The encoder (run forward and reversed) and the decoder: (width, layers)."""
        return {"encoder": (self.dim, self.encoder_layers),
                "decoder": (self.dim, self.decoder_layers)}

    def stack_config(self, which: str) -> LMConfig:
        """The LMConfig of the ``"encoder"`` or ``"decoder"`` stack."""
        layers = self.encoder_layers if which == "encoder" else self.decoder_layers
        return LMConfig(vocab_size=1, dim=self.dim, layers=layers, mlp_hidden=self.mlp_hidden,
                        norm_eps=self.norm_eps, init_std=self.init_std)


@dataclass(frozen=True)
class PointerState(State):
    """One instance per row and where its decoding is.

    enc: (B, max_n, D) encoder outputs, zero beyond n; keys: (B, max_n + 1, D) their
    attention keys, the end slot last; summary: (B, D) the decoder's per-step context;
    valid: (B, max_n) positions < n; visited: (B, max_n) positions already pointed at
    (kept even without ``mask_visited``); dec: the decoder stack's state.
    Every field is batch-first, so the generic select / cat / clone apply.
    """

    enc: Tensor
    keys: Tensor
    summary: Tensor
    valid: Tensor
    visited: Tensor
    dec: LMState


class PointerNet(SequenceModel):
    """The pointer network; see the module docstring."""

    kind = "pointer"
    reads_text = False   # its inputs are points and its ids positions: no tokenizer applies

    def __init__(self, cfg: PointerNetConfig):
        super().__init__()
        self.cfg = cfg
        D, std = cfg.dim, cfg.init_std
        self.in_proj = nn.Linear(cfg.in_dim, D)
        self.encoder = Stack(cfg.stack_config("encoder"))
        self.encoder_rev = Stack(cfg.stack_config("encoder"))
        self.decoder = Stack(cfg.stack_config("decoder"))
        self.start = nn.Parameter(torch.randn(D) * std)
        self.end_key = nn.Parameter(torch.randn(D) * std)
        self.ctx_proj = nn.Linear(D, D, bias=False)
        self.w_ref = nn.Linear(D, D, bias=False)
        self.w_q = nn.Linear(D, D)
        self.v = nn.Parameter(torch.randn(D) / D ** 0.5)

    # -- the decoding protocol -----------------------------------------------------------
    @property
    def end_id(self) -> int:
        """The end-of-output token (as an input: the start symbol)."""
        return self.cfg.max_n

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The input projection: a pointer network's embedding of its points."""
        return list(self.in_proj.parameters())

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of decoding state per instance of ``max_n`` inputs after ``seq_len`` outputs:
        the encoder outputs and keys, the context, two flags per input, and the decoder's
        mixers' states (an output sequence is at most ``max_n + 1`` long)."""
        elem = torch.empty((), dtype=dtype).element_size()
        n, D = self.cfg.max_n, self.cfg.dim
        steps = min(seq_len, n + 1)
        own = sum(b.mixer.state_size(steps) for b in self.decoder.blocks)
        return (n * D + (n + 1) * D + D + own) * elem + 2 * n

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> PointerState:
        """The empty instance (n = 0): only the end token has probability."""
        x = torch.zeros(batch_size, 0, self.cfg.in_dim, device=device or self.device,
                        dtype=dtype or self.start.dtype)
        return self.condition(x)

    def condition(self, points: Tensor, n: Tensor | list[int] | None = None) -> PointerState:
        """Encode a batch of instances: the state before the first output.

        Args:
            points: (B, N, in_dim) float inputs, N <= max_n; row b uses its first n[b].
            n: (B,) inputs per row (None: N for every row).

        Raises:
            ValueError: points of the wrong shape, N > max_n, or n outside [0, N].
        """
        cfg = self.cfg
        if points.dim() != 3 or points.shape[-1] != cfg.in_dim:
            raise ValueError(f"points must be (batch, n, {cfg.in_dim}); got shape "
                             f"{tuple(points.shape)}")
        B, N, _ = points.shape
        if N > cfg.max_n:
            raise ValueError(f"{N} inputs per instance exceed PointerNetConfig.max_n = "
                             f"{cfg.max_n}; build the model with a larger max_n")
        n = torch.full((B,), N) if n is None else torch.as_tensor(n).reshape(-1)
        if n.shape[0] != B or (n < 0).any() or (n > N).any():
            raise ValueError(f"n must give one length in [0, {N}] per row of the {B} "
                             f"instances; got {n.tolist()}")
        n = n.to(points.device)
        pos = torch.arange(cfg.max_n, device=points.device)
        valid = pos < n[:, None]                                          # (B, max_n)
        D, dtype = cfg.dim, points.dtype
        enc = torch.zeros(B, cfg.max_n, D, device=points.device, dtype=dtype)
        if N:
            x = self.in_proj(points)                                      # (B, N, D)
            # Row b reversed inside its length: position t reads n_b - 1 - t (t < n_b); the
            # padding stays after the row, where a causal stack cannot see it.
            t = pos[:N]
            rev = torch.where(t < n[:, None], n[:, None] - 1 - t, t)       # (B, N), an involution
            rev3 = rev[..., None].expand(-1, -1, D)
            fwd, _ = self.encoder(x)
            bwd, _ = self.encoder_rev(x.gather(1, rev3))
            e = (fwd + bwd.gather(1, rev3)) * valid[:, :N, None]
            enc = torch.cat([e, enc[:, N:]], 1)
        summary = enc.sum(1) / n.clamp(min=1)[:, None].to(dtype)          # (B, D)
        keys = self.w_ref(torch.cat([enc, self.end_key.to(dtype).expand(B, 1, D)], 1))
        dec = self.decoder.init_state(B, device=points.device, dtype=dtype)
        return PointerState(enc, keys, summary, valid, torch.zeros_like(valid), dec)

    def forward(self, tokens: Tensor, state: PointerState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, PointerState]:
        """Parallel (teacher-forced) face: ``tokens (B, T)``, the previous outputs (the end id
        first) -> pointer logits ``(B, T, max_n + 1)`` (``(B, max_n + 1)`` with
        ``last_only``) and the state after them.

        Raises:
            ValueError: ids outside the vocabulary or pointing at a position >= n.
            StateError: a state of another batch size.
        """
        check_token_ids(tokens, 2, self.vocab_size)
        if state is None:
            state = self.init_state(tokens.shape[0])
        self._check(tokens, state)
        h, dec = self.decoder(self._embed(tokens, state), state.dec)      # (B, T, D)
        visited = self._visited(tokens, state.visited)                    # (B, T, max_n)
        if last_only:
            return self._logits(h[:, -1:], state, visited[:, -1:])[:, 0], \
                replace(state, visited=visited[:, -1], dec=dec)
        return self._logits(h, state, visited), replace(state, visited=visited[:, -1], dec=dec)

    def step(self, token: Tensor, state: PointerState) -> tuple[Tensor, PointerState]:
        """Recurrent face: one output ``token (B,)`` -> logits ``(B, max_n + 1)`` of the next."""
        check_token_ids(token, 1, self.vocab_size)
        # Positions are not checked against n here: beam search steps its dead beams (score
        # -inf) with whatever id filled them; their logits are never used.
        self._check(token[:, None], state, positions=False)
        x = self._embed(token[:, None], state)[:, 0]
        h, dec = self.decoder.step(x, state.dec)
        visited = self._visited(token[:, None], state.visited)
        return (self._logits(h[:, None], state, visited)[:, 0],
                replace(state, visited=visited[:, -1], dec=dec))

    # -- parts ---------------------------------------------------------------------------
    def _embed(self, tokens: Tensor, state: PointerState) -> Tensor:
        """(B, T, D) decoder inputs: the pointed input's encoding (the start vector for the
        end id), plus the instance summary."""
        B, T = tokens.shape
        idx = tokens.clamp(max=self.cfg.max_n - 1)[..., None].expand(B, T, self.cfg.dim)
        e = state.enc.gather(1, idx)
        start = (tokens == self.end_id)[..., None]
        x = torch.where(start, self.start.to(e.dtype), e)
        return x + self.ctx_proj(state.summary)[:, None]

    def _visited(self, tokens: Tensor, before: Tensor) -> Tensor:
        """(B, T, max_n): per position, the inputs pointed at up to and including it."""
        hit = F.one_hot(tokens, self.vocab_size)[..., :-1]                # end id dropped
        return before[:, None] | (hit.cumsum(1) > 0)

    def _logits(self, h: Tensor, state: PointerState, visited: Tensor) -> Tensor:
        """Additive attention of decoder outputs ``h (B, T, D)`` over the keys: (B, T, max_n + 1)
        logits, masked."""
        u = torch.tanh(state.keys[:, None] + self.w_q(h)[:, :, None]) @ self.v.to(h.dtype)
        blocked = ~state.valid[:, None]
        # The end slot: always open, or with mask_visited only once every input is used.
        end = torch.zeros_like(blocked[..., :1]).expand(*blocked.shape[:2], 1)
        if self.cfg.mask_visited:
            end = (state.valid[:, None] & ~visited).any(-1, keepdim=True)
            blocked = blocked | visited
        return u.masked_fill(torch.cat([blocked, end], -1), float("-inf"))

    def _check(self, tokens: Tensor, state: PointerState, positions: bool = True) -> None:
        if not isinstance(state, PointerState):
            raise StateError(f"a PointerNet takes a PointerState (from model.condition(points)), "
                             f"got {type(state).__name__}")
        if state.batch_size != tokens.shape[0]:
            raise StateError(f"the state holds {state.batch_size} instances and the tokens "
                             f"{tokens.shape[0]} rows; use state.select(index) to pick or "
                             "repeat rows")
        if not positions:
            return
        pos = tokens.clamp(max=self.cfg.max_n - 1)
        bad = (tokens < self.end_id) & ~state.valid.gather(1, pos)
        if bad.any():
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"token {int(tokens[b, t])} (row {b}, position {t}) points at an "
                             f"input beyond the instance's n = {int(state.valid[b].sum())}")


def teacher_forcing(targets: list[list[int]], end: int) -> tuple[Tensor, Tensor]:
    """Decoder inputs and labels for targets that end with ``end``: inputs ``[end] + t[:-1]``
    padded with ``end``, labels ``t`` padded with ``IGNORE``; both (B, max length) int64."""
    T = max(len(t) for t in targets)
    inputs = torch.full((len(targets), T), end, dtype=torch.long)
    labels = torch.full((len(targets), T), IGNORE, dtype=torch.long)
    for b, t in enumerate(targets):
        inputs[b, 1:len(t)] = torch.tensor(t[:-1], dtype=torch.long)
        labels[b, :len(t)] = torch.tensor(t, dtype=torch.long)
    return inputs, labels


def decode(model: PointerNet, points: Tensor, strategy: str = "greedy",
           n: Tensor | list[int] | None = None, **options):
    """Decode a batch of instances with the engine (``seqlab.decoding.generate``).

    Each row starts from its own conditioned state through ``generate``'s ``cached``: the
    prompt is ``[end, end]``, whose first token stands for the instance already read by
    ``condition`` and whose second is the start symbol. Decoding stops at the end token or
    after ``max_n + 1`` outputs.

    Args:
        model: a PointerNet.
        points, n: as in ``PointerNet.condition``.
        strategy, options: as in ``generate`` (e.g. ``"beam", num_beams=4``).

    Returns:
        generate's GenerateOutput; ``tokens[b]`` are row b's pointed indices, then the end id.
    """
    from seqlab.decoding import generate

    with torch.no_grad():
        state = model.condition(points.to(model.device), n)
    end = model.end_id
    rows = [[end, end] for _ in range(state.batch_size)]
    cached = [(1, state.select([b])) for b in range(state.batch_size)]
    return generate(model, rows, strategy, model.cfg.max_n + 1, eos_id=end, cached=cached,
                    **options)


__all__ = ["IGNORE", "PointerNet", "PointerNetConfig", "PointerState", "decode",
           "teacher_forcing"]

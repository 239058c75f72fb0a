"""The mixer base class: input and state checks shared by every mixer.

A mixer maps ``x: (B, T, D)`` to ``y: (B, T, D)`` and a state. Subclasses
implement ``mix`` (the parallel face, which also continues from a state),
``init_state`` and ``state_size``; ``step`` (the recurrent face for one
token) defaults to ``mix`` on a length-1 sequence and is overridden where a
dedicated single-token update is faster. The shared conformance test in
``tests/mixers/test_conformance.py`` proves both faces agree.

A mixer that reads the token ids as well as ``x`` (an n-gram layer matches
tokens, not activations) declares ``needs_tokens = True``; it is then called
``m(x, state, tokens=ids)`` and ``m.step(x_t, state, tokens=ids_t)``, and its
``mix`` takes ``tokens`` (B, T). The LM's blocks pass the ids to such mixers
only, and every other mixer refuses them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from seqlab.config import Config, ConfigError
from seqlab.mixers.bidirectional import check_prefix, prefix_run
from seqlab.state import State, StateError


def heads_divide(dim: int, heads: int, what: str = "heads") -> int:
    """Return ``dim // heads`` or raise a ConfigError naming both numbers."""
    if heads <= 0 or dim % heads:
        raise ConfigError(
            f"dim = {dim} does not divide into {what} = {heads}: choose {what} that divides "
            f"{dim} (e.g. {', '.join(str(h) for h in _divisors(dim))})")
    return dim // heads


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0][-4:]


class Mixer(nn.Module):
    """Base class of all sequence mixers.

    Class attributes set by each mixer:
        Config: its frozen, validated options dataclass.
        State: the state type it returns and accepts.
        example_options: small options the conformance test builds it with
            (small chunk sizes so that chunk edges are exercised).
        cost: one line on parallel time/memory in L, step time, state size.
    """

    # Names of this mixer's parameters that AdamW must not decay (read by
    # ``seqlab.train.optim.make_optimizer``). For state-space time scales and poles, decay toward
    # zero is not a small-weight prior but a drift of every state's time scale toward the
    # same value; the reference implementations exempt them.
    no_weight_decay: tuple[str, ...] = ()

    name: ClassVar[str] = "?"          # set by @register
    Config: ClassVar[type[Config]]
    State: ClassVar[type[State]]
    example_options: ClassVar[dict[str, Any]] = {}
    cost: ClassVar[str] = ""
    # Whether mix and step read the token ids beside x (keyword ``tokens``): declared, never
    # probed. The LM hands the ids to these mixers only (seqlab.models.lm.Block).
    needs_tokens: ClassVar[bool] = False

    def __init__(self, dim: int, cfg: Config):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ConfigError(f"dim = {dim!r} is not allowed: expected a positive int")
        self.dim = dim
        self.cfg = cfg

    # -- to implement ---------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        raise NotImplementedError

    def mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Parallel face. ``state`` None means a fresh start (zero state).

        A mixer with ``needs_tokens`` takes ``mix(x, state, tokens=ids)``, ids (B, T) int64.
        """
        raise NotImplementedError

    def state_size(self, seq_len: int) -> int:
        """Elements of state per sequence after ``seq_len`` tokens."""
        raise NotImplementedError

    def mix_prefix(self, x: Tensor, prefix: Tensor, **tokens: Tensor) -> tuple[Tensor, State]:
        """The non-causal face from a fresh state: positions ``i < prefix[b]`` of row ``b`` see
        the whole prefix, later ones only the past (``prefix`` (B,) int64; 0 = causal, the
        row's length = bidirectional). Returns ``(y, state)``, a state to continue causally
        after the T positions.

        This default runs the mixer forward and over the reversed prefix, with the same
        weights (``seqlab.mixers.bidirectional``); attention overrides it with a mask.
        """
        return prefix_run(self, x, prefix, tokens.get("tokens"))

    @property
    def supports_tree(self) -> bool:
        """Whether ``mix_tree`` (tree attention for speculative trees) works on this mixer."""
        return False

    # -- public faces -----------------------------------------------------------
    def forward(self, x: Tensor, state: State | None = None, *,
                tokens: Tensor | None = None) -> tuple[Tensor, State]:
        """Run the parallel face on ``x: (B, T, D)``, continuing from ``state``.

        ``tokens`` (B, T): the token ids at x's positions, for (and only for) a mixer with
        ``needs_tokens``. Returns ``(y, new_state)``; ``state`` itself is never modified.

        Raises:
            ValueError: ``x`` is not a floating (B, T, dim) tensor; tokens missing, of
                another shape or given to a mixer that does not read them.
            StateError: ``state`` is of another mixer's type or batch size.
        """
        self.check_input(x, rank=3)
        if state is not None:
            self.check_state(state, x.shape[0])
        return self.mix(x, state, **self.check_tokens(tokens, x))

    def encode(self, x: Tensor, prefix=None, *, tokens: Tensor | None = None
               ) -> tuple[Tensor, State]:
        """The non-causal face on ``x (B, T, D)`` from a fresh state (see ``mix_prefix``).

        ``prefix``: None = bidirectional (every row's prefix is all T positions), an int or
        one int per row = a prefix LM's split (0 = causal, equal to ``forward(x)``).

        Raises:
            ValueError: as ``forward``; or prefix lengths outside [0, T].
        """
        self.check_input(x, rank=3)
        B, T = x.shape[:2]
        p = check_prefix(T if prefix is None else prefix, B, T, x.device)
        return self.mix_prefix(x, p, **self.check_tokens(tokens, x))

    def step(self, x_t: Tensor, state: State, *,
             tokens: Tensor | None = None) -> tuple[Tensor, State]:
        """Recurrent face: one token ``x_t: (B, D)`` -> ``(y_t: (B, D), state)``
        (``tokens`` (B,) for a mixer with ``needs_tokens``)."""
        self.check_input(x_t, rank=2)
        self.check_state(state, x_t.shape[0])
        return self.step_unchecked(x_t, state, **self.check_tokens(tokens, x_t))

    def step_unchecked(self, x_t: Tensor, state: State, *,
                       tokens: Tensor | None = None) -> tuple[Tensor, State]:
        """``step`` without the checks (the model calls this in its decode loop)."""
        if tokens is None:
            y, state = self.mix(x_t.unsqueeze(1), state)
        else:
            y, state = self.mix(x_t.unsqueeze(1), state, tokens=tokens.unsqueeze(1))
        return y.squeeze(1), state

    # -- checks -------------------------------------------------------------------
    def check_input(self, x: Tensor, rank: int) -> None:
        shape = "(batch, length, dim)" if rank == 3 else "(batch, dim)"
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name} expects a torch.Tensor of shape {shape}, got {type(x).__name__}")
        if x.dim() != rank:
            hint = " (add a batch dimension with x[None])" if x.dim() == rank - 1 else ""
            raise ValueError(
                f"{self.name} expects x of shape {shape} = (*, {self.dim}) with {rank} dims, "
                f"got shape {tuple(x.shape)}{hint}")
        if not x.is_floating_point():
            raise ValueError(
                f"{self.name} expects floating-point activations, got dtype {x.dtype}; "
                "token ids go to a model (seqlab.models.build_lm), not to a mixer")
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self.name} was built with dim = {self.dim} but x has last dimension "
                             f"{x.shape[-1]} (shape {tuple(x.shape)})")

    def check_tokens(self, tokens: Tensor | None, x: Tensor) -> dict[str, Tensor]:
        """The keyword arguments that hand ``tokens`` to ``mix``: ``{"tokens": tokens}`` for
        a mixer with ``needs_tokens`` (ids of x's batch and length), ``{}`` for the others.

        Raises:
            ValueError: a mixer that reads token ids got none, or ids that are not integers
                of shape ``x.shape[:-1]``; or ids given to a mixer that does not read them.
        """
        if not self.needs_tokens:
            if tokens is not None:
                raise ValueError(f"{self.name} does not read token ids; call it without tokens=")
            return {}
        shape = tuple(x.shape[:-1])
        if tokens is None:
            raise ValueError(
                f"{self.name} reads the token ids as well as x: call it with tokens=ids, ids "
                f"of shape {shape} (int64, one per position of x); inside a model "
                "(seqlab.models.build_lm) the model passes them")
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.is_complex() \
                or tokens.dtype == torch.bool:
            raise ValueError(f"{self.name} expects integer token ids (int64), got "
                             f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tuple(tokens.shape) != shape:
            raise ValueError(f"{self.name} got token ids of shape {tuple(tokens.shape)} for x of "
                             f"shape {tuple(x.shape)}: expected one id per position, {shape}")
        return {"tokens": tokens}

    def check_state(self, state: State, batch_size: int) -> None:
        if not isinstance(state, self.State):
            raise StateError(
                f"{self.name} mixer was given a {type(state).__name__}; it needs a "
                f"{self.State.__name__} (from its init_state or an earlier call)")
        if state.batch_size != batch_size:
            raise StateError(
                f"{self.name} state holds {state.batch_size} rows but x has batch size "
                f"{batch_size}; use state.select(index) to pick or repeat rows")

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.cfg.to_dict().items())
        return f"dim={self.dim}, {opts}"

    def _state_dtype(self, dtype):
        if dtype is not None:
            return dtype
        # The first float parameter or buffer: a quantized mixer holds uint8 blocks only.
        floats = (t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point())
        return next(floats, torch.empty(0)).dtype

    def _state_device(self, device):
        if device is not None:
            return device
        return next(iter((*self.parameters(), *self.buffers())), torch.empty(0)).device

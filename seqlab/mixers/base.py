"""The mixer base class: input and state checks shared by every mixer.

A mixer maps ``x: (B, T, D)`` to ``y: (B, T, D)`` and a state. Subclasses
implement ``mix`` (the parallel face, which also continues from a state),
``init_state`` and ``state_size``; ``step`` (the recurrent face for one
token) defaults to ``mix`` on a length-1 sequence and is overridden where a
dedicated single-token update is faster. The shared conformance test in
``tests/mixers/test_conformance.py`` proves both faces agree.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from seqlab.config import Config, ConfigError
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
        """Parallel face. ``state`` None means a fresh start (zero state)."""
        raise NotImplementedError

    def state_size(self, seq_len: int) -> int:
        """Elements of state per sequence after ``seq_len`` tokens."""
        raise NotImplementedError

    @property
    def supports_tree(self) -> bool:
        """Whether ``mix_tree`` (tree attention for speculative trees) works on this mixer."""
        return False

    # -- public faces -----------------------------------------------------------
    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run the parallel face on ``x: (B, T, D)``, continuing from ``state``.

        Returns ``(y, new_state)``; ``state`` itself is never modified.

        Raises:
            ValueError: ``x`` is not a floating (B, T, dim) tensor.
            StateError: ``state`` is of another mixer's type or batch size.
        """
        self.check_input(x, rank=3)
        if state is not None:
            self.check_state(state, x.shape[0])
        return self.mix(x, state)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Recurrent face: one token ``x_t: (B, D)`` -> ``(y_t: (B, D), state)``."""
        self.check_input(x_t, rank=2)
        self.check_state(state, x_t.shape[0])
        return self.step_unchecked(x_t, state)

    def step_unchecked(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """``step`` without the checks (the model calls this in its decode loop)."""
        y, state = self.mix(x_t.unsqueeze(1), state)
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

"""The State contract shared by mixers, models and the decoding engine.

A state is an immutable dataclass whose tensor fields are batch-first. Mixers
return a *new* state and never write into the one they were given, so a kept
reference is a snapshot and a rollback is putting that reference back.

Every state offers:

* ``select(index)``  -- gather batch rows (reorder beams, duplicate branches,
  prune finished rows). Always copies.
* ``clone()``        -- an independent deep copy.
* ``nbytes()``       -- bytes held by the state's tensors.
* ``batch_size``     -- rows in the state.
* ``cat(states)``    -- join states along the batch (ragged prefill, merging).

States that can rewind cheaply (KV caches) also set ``can_truncate = True``
and implement ``truncate(length)``. Recurrent states cannot rewind; the
decoding engine snapshots them instead.

Example:
    >>> m = seqlab.mixers.build("lstm", dim=8)
    >>> y, s = m(torch.randn(2, 5, 8))
    >>> s2 = s.select(torch.tensor([1, 1, 0]))     # 3 rows now
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

S = TypeVar("S", bound="State")


class StateError(ValueError):
    """A state that does not fit the mixer or model it was given to."""


def _map(value: Any, fn) -> Any:
    """Apply ``fn`` to every batch-first tensor inside ``value``."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, State):
        return value._map_tensors(fn)
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    return value


def _tensors(value: Any):
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, State):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))
    elif isinstance(value, tuple):
        for v in value:
            yield from _tensors(v)


@dataclasses.dataclass(frozen=True)
class State:
    """Base class: a frozen dataclass of batch-first tensors.

    Subclasses declare their tensor fields; the generic ``select``, ``clone``,
    ``nbytes`` and ``cat`` below treat every tensor field (also inside nested
    states and tuples) as batch-first. Non-tensor fields (ints, tuples of ints)
    are carried unchanged; a subclass whose plain fields depend on the batch
    (a KV cache's per-row lengths) overrides the methods that touch them.
    """

    can_truncate: ClassVar[bool] = False

    # -- generic machinery -------------------------------------------------
    def _map_tensors(self: S, fn) -> S:
        changes = {f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **changes)

    @property
    def batch_size(self) -> int:
        for t in _tensors(self):
            return t.shape[0]
        raise StateError(f"{type(self).__name__} holds no tensors, so it has no batch size")

    def select(self: S, index: Tensor | Sequence[int]) -> S:
        """Gather batch rows: ``new[i] = old[index[i]]`` (copies)."""
        if not isinstance(index, Tensor):
            index = torch.as_tensor(list(index), dtype=torch.long)
        return self._map_tensors(lambda t: t.index_select(0, index.to(t.device)))

    def clone(self: S) -> S:
        """A deep copy that shares no storage with this state."""
        return self._map_tensors(lambda t: t.clone())

    def to(self: S, *args, **kwargs) -> S:
        """Move or cast every tensor (``Tensor.to`` arguments)."""
        return self._map_tensors(lambda t: t.to(*args, **kwargs))

    def detach(self: S) -> S:
        """Cut the autograd graph (truncated back-propagation through time)."""
        return self._map_tensors(lambda t: t.detach())

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (the live part, for caches)."""
        return sum(t.numel() * t.element_size() for t in _tensors(self))

    @classmethod
    def cat(cls: type[S], states: Sequence[S]) -> S:
        """Join states of the same type along the batch dimension."""
        if not states:
            raise StateError("State.cat needs at least one state")
        first = states[0]
        for s in states:
            if type(s) is not type(first):
                raise StateError(
                    f"cannot join a {type(s).__name__} with a {type(first).__name__}")
        return _cat_values([s for s in states])

    def truncate(self: S, length: int | Sequence[int]) -> S:
        """Rewind to ``length`` tokens (only states with ``can_truncate``)."""
        raise StateError(
            f"{type(self).__name__} cannot rewind: it is a recurrent state. Keep a "
            "reference to the earlier state (a snapshot) and recompute instead.")


def _cat_values(values: list) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return torch.cat(values, dim=0)
    if isinstance(first, State):
        if type(first).cat.__func__ is not State.cat.__func__:
            return type(first).cat(values)
        changes = {f.name: _cat_values([getattr(v, f.name) for v in values])
                   for f in dataclasses.fields(first)}
        return dataclasses.replace(first, **changes)
    if isinstance(first, tuple):
        return tuple(_cat_values([v[i] for v in values]) for i in range(len(first)))
    if any(v != first for v in values):
        raise StateError(f"cannot join states whose plain fields differ: {values}")
    return first

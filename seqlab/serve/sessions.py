"""Decode states kept between the requests of one client session.

A request that names a session (``"seqlab": {"session": "ID"}``) leaves behind the
model's state after its prompt and answer. When the session's next prompt starts with
those tokens (a chat that resends its history, a completion that appends to its text),
only the new tokens run: a recurrent model's turn then costs its own length, not the
conversation's, in constant memory per session. Any other prompt simply runs in full.

The store holds at most ``limit`` sessions and evicts the least recently used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from seqlab.state import State


@dataclass(frozen=True)
class Kept:
    tokens: tuple[int, ...]   # what ``state`` has read
    state: State              # one row


class Sessions:
    def __init__(self, limit: int = 64):
        self.limit = limit
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def cached(self, session: str, prompt: list[int]) -> tuple[int, State] | None:
        """``(n, state)`` when the session's kept tokens are a proper prefix of ``prompt``."""
        with self._lock:
            kept = self._kept.get(session)
            if kept is None:
                return None
            self._kept.move_to_end(session)
        n = len(kept.tokens)
        if n < len(prompt) and tuple(prompt[:n]) == kept.tokens:
            return n, kept.state
        return None

    def keep(self, session: str, tokens: list[int], state: State) -> None:
        with self._lock:
            self._kept[session] = Kept(tuple(tokens), state)
            self._kept.move_to_end(session)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
                self.evicted += 1

    def __len__(self) -> int:
        return len(self._kept)

    def nbytes(self) -> int:
        with self._lock:
            return sum(k.state.nbytes() for k in self._kept.values())

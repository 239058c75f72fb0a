"""Print tokens as they arrive, holding back bytes of an unfinished UTF-8 character."""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable


class TextStreamer:
    """An ``on_token`` callback for ``generate`` that writes decoded text to a stream.

    Args:
        decode_bytes: maps the list of generated ids so far to bytes (a
            tokenizer's ``decode_bytes``; ``bytes`` for byte models).
    """

    def __init__(self, decode_bytes: Callable[[list[int]], bytes] = bytes, out=None):
        self.decode_bytes = decode_bytes
        self.out = out or sys.stdout
        self.ids: list[int] = []
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._sent = 0

    def __call__(self, row: int, token: int) -> None:
        self.ids.append(token)
        data = self.decode_bytes(self.ids)
        self.out.write(self._dec.decode(data[self._sent:]))
        self._sent = len(data)
        self.out.flush()

    def finish(self) -> None:
        self.out.write(self._dec.decode(b"", final=True))
        self.out.flush()

"""Token ids to text as they arrive: whole UTF-8 characters only, stop strings cut out.

A stream must never show half of a multi-byte character, nor the first characters of
a stop string that the next token completes; ``TextStops`` holds such text back until
it is known to be safe. ``TextStreamer`` prints it (``seqlab generate --stream``); the
server sends it to its clients.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable, Sequence


class TextStops:
    """The text of one generated row, fed one token at a time.

    Args:
        decode_bytes: the tokenizer's ids -> bytes.
        stops: strings that end the row; the text returned stops before the first one.
    """

    def __init__(self, decode_bytes: Callable[[list[int]], bytes], stops: Sequence[str] = ()):
        self.decode_bytes = decode_bytes
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.text = ""          # decoded so far (whole characters)
        self.sent = 0           # characters of ``text`` already returned
        self.stopped = False    # a stop string was found
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._bytes = 0

    def add(self, token: int) -> str:
        """Take one token; the text that may be shown now (possibly empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        data = self.decode_bytes(self.ids)
        self.text += self._decoder.decode(data[self._bytes:])
        self._bytes = len(data)
        return self._release(final=False)

    def finish(self) -> str:
        """The row is over: the rest of the text (held-back characters included)."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        cut = len(self.text)
        for s in self.stops:
            at = self.text.find(s, max(0, self.sent - len(s) + 1))
            if at != -1 and at < cut:
                cut, self.stopped = at, True
        if not self.stopped and not final:
            cut -= self._held(self.text)
        out = self.text[self.sent:max(cut, self.sent)]
        self.sent = max(cut, self.sent)
        if self.stopped:
            self.text = self.text[:cut]
        return out

    def _held(self, text: str) -> int:
        """Characters at the end of ``text`` that begin some stop string."""
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), hold, -1):
                if s.startswith(text[len(text) - n:]):
                    hold = n
                    break
        return hold


class TextStreamer:
    """An ``on_token`` callback for ``generate`` that writes decoded text to a stream.

    Args:
        decode_bytes: maps the list of generated ids so far to bytes (a
            tokenizer's ``decode_bytes``; ``bytes`` for byte models).
    """

    def __init__(self, decode_bytes: Callable[[list[int]], bytes] = bytes, out=None):
        self.out = out or sys.stdout
        self._text = TextStops(decode_bytes)

    @property
    def ids(self) -> list[int]:
        return self._text.ids

    def __call__(self, row: int, token: int) -> None:
        self.out.write(self._text.add(token))
        self.out.flush()

    def finish(self) -> None:
        self.out.write(self._text.finish())
        self.out.flush()

"""Ctrl-C and SIGTERM: the first asks training to stop at a checkpoint, a second aborts.

SIGTERM (what ``kill``, schedulers and containers send) is treated like
Ctrl-C, so a stopped job saves its work either way. Outside the training
loop, :func:`raise_on_sigterm` turns SIGTERM into :class:`Terminated`, a
``KeyboardInterrupt``, so one ``except KeyboardInterrupt`` reports both
without a traceback; :func:`exit_code` gives the shell's 128 + signal number.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt."""


def exit_code(exc: BaseException | int) -> int:
    """130 for Ctrl-C (SIGINT), 143 for SIGTERM: a signal number or the exception raised."""
    if isinstance(exc, BaseException):
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    return 128 + int(exc)


def _raise(signum, frame):
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` (main thread only; elsewhere a no-op).

    Returns:
        The previous handler, for :func:`restore_sigterm` (None when nothing changed).
    """
    try:
        return signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        return None


def restore_sigterm(old) -> None:
    """Put back the handler :func:`raise_on_sigterm` replaced."""
    if old is not None:
        signal.signal(signal.SIGTERM, old)


class StopFlag:
    """Within ``with StopFlag() as stop:`` the first SIGINT or SIGTERM sets ``stop.requested``
    (and ``stop.signum``); a second one interrupts the block at once, sets ``stop.aborted``
    to its signal number, and the ``with`` statement swallows the KeyboardInterrupt.

    Example:
        >>> with StopFlag() as stop:
        ...     while not stop.requested:
        ...         train_one_step()
        >>> stop.aborted     # None, or the signal number of a second interruption
    """

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.aborted: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self):
        try:
            self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            self._old = {}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            self.aborted = signum
            _raise(signum, frame)
        self.signum = signum
        self.requested = True

    def __exit__(self, exc_type, exc, tb):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
        # Swallow only the interrupt this flag raised itself.
        return self.aborted is not None and isinstance(exc, KeyboardInterrupt)


__all__ = ["StopFlag", "Terminated", "exit_code", "raise_on_sigterm", "restore_sigterm"]

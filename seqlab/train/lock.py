"""One writer per run folder: an exclusive ``flock`` on ``RUN/.lock`` while training.

The operating system drops the lock when its holder exits, however it exits
(kill -9 included), so a stale lock never blocks a later run; the file itself
is left in place, because deleting a locked file would let a second process
lock a new file of the same name.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from seqlab.errors import CheckpointError

LOCK_FILE = ".lock"


class RunLockedError(CheckpointError):
    """Another process is writing to the run folder."""


class RunLock:
    """An acquired lock on a run folder; :meth:`release` (or process exit) frees it.

    Example:
        >>> lock = RunLock.acquire("runs/a")    # raises RunLockedError if held elsewhere
        >>> ...                                 # train, write checkpoints
        >>> lock.release()
    """

    def __init__(self, folder: Path, fd: int):
        self.folder, self._fd = folder, fd

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> "RunLock":
        """Lock ``folder`` (created if needed) without waiting.

        Raises:
            RunLockedError: another process holds the lock; the message names its PID.
        """
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(f"cannot use run folder {folder} ({e.strerror}); choose another "
                                  "--out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"run folder {folder} is in use: seqlab process PID {holder} is training there "
                f"(it holds {folder / LOCK_FILE}). Wait for it to finish or stop it, or choose "
                "another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Free the lock (idempotent)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)   # closing the only descriptor drops the flock
        self._fd = None

    def __del__(self):
        self.release()


__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

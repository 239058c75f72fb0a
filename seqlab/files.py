"""Reading a user's text files and making a user's output folders, with errors that name the
file and the fix rather than a UnicodeDecodeError or an OSError traceback."""

from __future__ import annotations

from pathlib import Path


def read_text(path: str | Path, error: type[Exception], fix: str) -> str:
    """The UTF-8 text of ``path``; ``error`` naming the file, the first bad byte and ``fix``."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                    f"{fix}") from None


def make_folder(path: str | Path, flag: str, error: type[Exception]) -> Path:
    """Create folder ``path`` (and its parents) or raise ``error`` naming ``flag`` and why."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{flag} {path} cannot be created ({e.strerror or e}); choose another "
                    f"{flag}") from None
    return path

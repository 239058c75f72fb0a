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


def read_texts(path: str | Path, error: type[Exception], field: str = "text") -> list[str]:
    """The texts of a user's file: one per line, or one per JSON line (``.jsonl``: the value of
    ``field`` in each object). Blank lines are skipped; a bad JSON line is named by number."""
    import json

    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is not a file; give a text file (one text per line) or a .jsonl "
                    f"file (one {{\"{field}\": ...}} object per line)")
    lines = read_text(path, error, "save it as UTF-8").splitlines()
    if path.suffix != ".jsonl":
        return [line for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)[field]
        except (ValueError, KeyError, TypeError):
            raise error(f"{path} line {number} is not a JSON object with a \"{field}\" string; "
                        f"fix the line, or choose the field with --field") from None
        if not isinstance(value, str):
            raise error(f"{path} line {number}: \"{field}\" is {type(value).__name__}, not a string")
        texts.append(value)
    return texts

"""The results file: one JSON line per finished cell, appended as cells finish.

Appending (never rewriting) means a sweep killed at any moment keeps every
cell it finished; a line cut short by the kill is skipped when read, and the
next append starts on a fresh line. Each record is one write of a whole line,
then fsynced. :func:`check_results_file` refuses, before any cell trains, an
``--out`` that is some other file or cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from seqlab.bench.default_changes import pin_old_defaults
from seqlab.files import read_text

FINISHED = ("ok", "nan")   # a cell that diverged is a result too; "error" cells run again


def without_later_options(recipe: dict) -> dict:
    """A cell's recipe (``CellConfig.to_dict()``, or a record's ``config``) without the
    training options added after results files existed, where they are off: sparsity and
    ``decay_time_scales``. So a dense cell keeps the key it had before those options, its old
    records still skip it, and a report puts old and new records of one recipe on one line."""
    train = dict(recipe.get("train", {}))
    sparsity = train.get("sparsity") or {}
    if not (sparsity.get("target", 0) > 0 or sparsity.get("k") is not None
            or sparsity.get("m") is not None):   # SparsityConfig.enabled
        train.pop("sparsity", None)
    if not train.get("decay_time_scales"):
        train.pop("decay_time_scales", None)
    return {**recipe, "train": train}


def recipe_key(recipe: dict) -> str:
    """A short, stable digest of a cell's whole recipe (``CellConfig.key``)."""
    text = json.dumps(without_later_options(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BenchError(ValueError):
    """A results file or report request that cannot be served, phrased for the user."""


@dataclass
class Results:
    records: list[dict] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)   # 1-based numbers of unreadable lines

    def latest(self) -> list[dict]:
        """The last record of each cell key, in first-seen order."""
        by_key: dict[str, dict] = {}
        for rec in self.records:
            by_key[rec["key"]] = rec
        return list(by_key.values())

    def finished_keys(self) -> set[str]:
        return {r["key"] for r in self.records if r.get("status") in FINISHED}


def read_results(path: str | Path, *, must_exist: bool = False) -> Results:
    """Records of ``path`` (an empty result when it does not exist, unless ``must_exist``),
    each read as it ran: defaults changed since it was written are pinned into its recipe
    and key (:mod:`seqlab.bench.default_changes`).

    Raises:
        BenchError: ``must_exist`` and the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        if must_exist:
            raise BenchError(f"results file {str(path)!r} does not exist; make one with "
                             "seqlab bench run PROBE --out FILE")
        return Results()
    out = Results()
    text = read_text(path, BenchError, "give a results file written by seqlab bench run")
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            out.bad_lines.append(i)
            continue
        if isinstance(rec, dict) and "key" in rec:
            out.records.append(pin_old_defaults(rec))
        else:
            out.bad_lines.append(i)
    return out


# json.dumps of a record starts so, because "key" is its first field (see run.run_cell).
_RECORD_START = '{"key"'


def _is_record_line(line: str) -> bool:
    """A line the bench wrote: a record, or the start of one cut short by a kill."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return line.startswith(_RECORD_START) or _RECORD_START.startswith(line)
    return isinstance(rec, dict) and "key" in rec and "status" in rec


def check_results_file(path: str | Path) -> None:
    """Make sure ``path`` is a results file (new, empty, or JSON lines the bench wrote) that
    this process can append to; creates nothing.

    Raises:
        BenchError: another kind of file (a config, a script), a folder, or not writable.
    """
    path = Path(path)
    fix = "choose another --out (a new file, or a results file of seqlab bench run)"
    if path.is_dir():
        raise BenchError(f"--out {str(path)!r} is a folder, not a results file; {fix}")
    if path.exists():
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise BenchError(f"--out {str(path)!r} is not a results file (not UTF-8 text); nothing "
                             f"was written to it; {fix}") from None
        except OSError as e:
            raise BenchError(f"--out {str(path)!r} cannot be read ({e.strerror}); {fix}") from None
        bad = next((i for i, line in enumerate(text.splitlines(), 1)
                    if line.strip() and not _is_record_line(line)), None)
        if bad is not None:
            raise BenchError(f"--out {str(path)!r} is not a results file of seqlab bench (line {bad} "
                             f"is not a cell record); nothing was written to it; {fix}")
        try:
            with open(path, "ab"):
                pass
        except OSError as e:
            raise BenchError(f"--out {str(path)!r} cannot be written ({e.strerror}); {fix}") from None
        return
    # A new file: find the first folder that exists and try to create a file there.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BenchError(f"--out {str(path)!r} cannot be created: {str(parent)!r} is not a folder; "
                         f"{fix}")
    try:
        fd, probe = _probe(parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BenchError(f"--out {str(path)!r} cannot be created in {str(parent)!r} "
                         f"({e.strerror}); {fix}") from None


def _probe(folder: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=".seqlab-write-check-", dir=folder)


def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON line, starting a new line if a killed writer left one unfinished.

    The line (with that newline) goes out in a single write on an O_APPEND descriptor, then
    is fsynced, so a kill or a power cut leaves the record whole or absent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)

"""Checksum manifests: detect a damaged file in a folder before anything reads it.

A folder's ``manifest.json`` lists each file's size and sha256. It is written
last, inside the writer's temporary folder, so it is renamed into place with
the files it describes. Stdlib only: every layer can use it.

Example:
    >>> write_manifest(folder)                 # after the folder's files are written
    >>> problems = check_manifest(folder)      # [] when every file is intact
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Write ``folder/manifest.json`` covering ``names`` (default: every plain file but the
    manifest itself and ``*.tmp`` files), fsynced; returns its path."""
    folder = Path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and not p.is_symlink() and p.name != MANIFEST
                       and not p.name.endswith(".tmp"))
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)}
             for n in names}
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST


def has_manifest(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def check_manifest(folder: str | os.PathLike) -> list[str]:
    """What is wrong with ``folder`` according to its manifest: one phrase per damaged or
    missing file, naming it (empty when all is intact). A missing or unreadable manifest is
    itself a problem."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return [f"{path} is missing (an interrupted write, or not written by seqlab)"]
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        files = data["files"]
        entries = [(str(n), int(e["bytes"]), str(e["sha256"])) for n, e in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [f"{path} is corrupt (not a manifest of checksums)"]
    problems = []
    for name, size, digest in entries:
        f = folder / name
        if Path(name).name != name:  # a manifest names files of its own folder only
            problems.append(f"{path} names a file outside its folder: {name!r}")
        elif not f.is_file():
            problems.append(f"{f} is missing")
        elif f.stat().st_size != size:
            problems.append(f"{f} has {f.stat().st_size:,} bytes, {size:,} when written: "
                            "truncated or corrupt")
        elif sha256_file(f) != digest:
            problems.append(f"{f} does not match its checksum (the file is corrupt)")
    return problems


__all__ = ["MANIFEST", "sha256_file", "write_manifest", "has_manifest", "check_manifest"]

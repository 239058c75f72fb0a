"""The results file: one JSON line per finished cell, appended as cells finish.

Appending (never rewriting) means a sweep killed at any moment keeps every
cell it finished; a line cut short by the kill is skipped when read, and the
next append starts on a fresh line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

FINISHED = ("ok", "nan")   # a cell that diverged is a result too; "error" cells run again


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
    """Records of ``path`` (an empty result when it does not exist, unless ``must_exist``).

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
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            out.bad_lines.append(i)
            continue
        if isinstance(rec, dict) and "key" in rec:
            out.records.append(rec)
        else:
            out.bad_lines.append(i)
    return out


def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON line, starting a new line if a killed writer left one unfinished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as f:
        f.seek(0, 2)
        if f.tell() > 0:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode())
        f.flush()

"""Multiple choice from real code: which line comes next in a standard-library file?

Each question is a held-out line of a Python file, its preceding ``context_lines`` lines
as the context, and ``choices - 1`` distractor lines drawn from elsewhere in the same file.
A language model answers by scoring each candidate as the continuation of the context
(e.g. the mean log-probability of its tokens; ``seqlab.models.cola_search`` searches for
chains of layers that answer better).

What is asked and what is not:

* Answers and distractors are *code lines*: not blank, not a comment alone, not inside a
  string that spans lines (docstrings), between ``min_line_chars`` and ``max_line_chars``
  characters without the indentation (short lines such as ``else:`` or ``return`` are
  left out: they would be guessed from the indentation alone).
* Distractors get the answer's indentation, so only the code tells them apart, and their
  text (stripped) differs from the answer's and from each other's.
* The context is the ``context_lines`` lines before the answer (blank lines included),
  without the newline that ends the last one: candidates begin with that newline, so a
  subword tokenizer merges it with the indentation exactly as in the file.
* Splits are by module (``zlib.crc32`` of the dotted module name, as
  ``seqlab.tasks.stdlib_functions``), fixed: a module's questions are all in one split.
  Within a split, files are taken in a seeded order and up to ``per_file`` questions
  from each, so a split's first questions do not all come from one file.

Example:
    >>> qs = line_questions("test", 100)
    >>> q = qs[0]; print(q.context[-200:]); print(q.choices[q.answer])
"""

from __future__ import annotations

import io
import os
import random
import tokenize
import zlib
from dataclasses import dataclass
from pathlib import Path

from seqlab.config import Config, option, require
from seqlab.tasks.corpus import DataError, stdlib_dir
from seqlab.tasks.stdlib_functions import SKIP_DIRS, SPLITS, split_of


@dataclass(frozen=True)
class LineChoiceConfig(Config):
    """How the questions are built (see the module docstring)."""

    root: str | None = option(None, "a folder of Python files; None = the standard library")
    context_lines: int = option(12, "lines of context before the answer")
    choices: int = option(4, "candidates per question: the answer and choices - 1 distractors")
    min_line_chars: int = option(16, "fewest characters of a candidate, indentation left out")
    max_line_chars: int = option(80, "most characters of a candidate, indentation left out")
    per_file: int = option(2, "questions per file at most")
    fractions: tuple[float, ...] = option((0.8, 0.1, 0.1), "shares of modules in train, "
                                          "validation and test")
    seed: int = option(0, "seed of the file order, the lines asked and the distractors")

    def validate(self) -> None:
        require(self.context_lines >= 1, self, "context_lines", "an int >= 1")
        require(self.choices >= 2, self, "choices", "an int >= 2")
        require(1 <= self.min_line_chars <= self.max_line_chars, self, "min_line_chars",
                f"an int in [1, max_line_chars={self.max_line_chars}]")
        require(self.per_file >= 1, self, "per_file", "an int >= 1")
        require(len(self.fractions) == 3 and all(f >= 0 for f in self.fractions)
                and abs(sum(self.fractions) - 1) < 1e-9, self, "fractions",
                "three shares (train, validation, test) >= 0 summing to 1")


@dataclass(frozen=True)
class LineQuestion:
    """One question.

    Attributes:
        module: dotted module name of the file.
        lineno: the answer's line number in the file (1-based).
        context: the lines before it, without the last newline.
        choices: the candidates, each ``"\\n" + indentation + code``.
        answer: index of the true line in ``choices``.
    """

    module: str
    lineno: int
    context: str
    choices: tuple[str, ...]
    answer: int


def line_questions(split: str, n: int, cfg: LineChoiceConfig = LineChoiceConfig()
                   ) -> list[LineQuestion]:
    """The first ``n`` questions of a split (fewer if the split runs out), always the same.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: how many questions.
        cfg: the folder, the sizes, the split fractions and the seed.

    Raises:
        ValueError: an unknown split or a negative ``n``.
        DataError: the folder does not exist or holds no Python files.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    root = Path(cfg.root) if cfg.root is not None else stdlib_dir()
    files = _python_files(root)
    files = [(m, p) for m, p in files if split_of(m, cfg.fractions) == split]
    random.Random(cfg.seed).shuffle(files)
    out: list[LineQuestion] = []
    for module, path in files:
        if len(out) >= n:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out += _questions_of(module, text, cfg)[:n - len(out)]
    return out


def _python_files(root: Path) -> list[tuple[str, Path]]:
    """(dotted module, path) of the Python files under ``root``, test folders left out."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of Python files")
    out = []
    for folder, dirs, names in os.walk(root):
        # Pruned, not filtered: site-packages alone can hold 20,000 files.
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in names:
            p = Path(folder, name)
            if not name.endswith(".py") or not p.is_file():
                continue
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__" and len(parts) > 1:
                parts.pop()
            out.append((".".join(parts), p))
    if not out:
        raise DataError(f"{root} holds no Python files")
    return sorted(out)


def code_lines(text: str) -> set[int]:
    """0-based numbers of the lines that hold code: not blank, not a comment alone, not a
    line of a string that spans lines. Empty for a file that does not tokenize."""
    lines = text.splitlines()
    inside: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0] - 1, tok.end[0]))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return set()
    return {i for i, line in enumerate(lines)
            if line.strip() and not line.lstrip().startswith("#") and i not in inside}


def _questions_of(module: str, text: str, cfg: LineChoiceConfig) -> list[LineQuestion]:
    lines = text.splitlines()
    code = sorted(code_lines(text))
    fits = [i for i in code if cfg.min_line_chars <= len(lines[i].strip()) <= cfg.max_line_chars]
    asked = [i for i in fits if i >= cfg.context_lines]
    # A per-file generator: a file's questions do not depend on which other files exist.
    rng = random.Random(zlib.crc32(f"{cfg.seed}:{module}".encode()))
    rng.shuffle(asked)
    out = []
    for i in asked[:cfg.per_file]:
        answer = lines[i].strip()
        pool = sorted({lines[j].strip() for j in fits if j != i} - {answer})
        if len(pool) < cfg.choices - 1:
            continue
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        choices = [answer] + rng.sample(pool, cfg.choices - 1)
        rng.shuffle(choices)
        context = "\n".join(lines[i - cfg.context_lines:i])
        out.append(LineQuestion(module, i + 1, context,
                                tuple("\n" + indent + c for c in choices), choices.index(answer)))
    return out

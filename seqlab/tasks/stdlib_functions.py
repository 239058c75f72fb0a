"""Functions and their docstrings from the Python standard library, for code search and
summarisation.

Every function and method with a docstring in the stdlib's ``.py`` files (of the running
interpreter, or any folder of Python files given as ``root``) becomes a :class:`FunctionDoc`:
its dotted module, qualified name, its source *without* the docstring, the docstring's first
line (the query of code search, the target of summarisation) and the whole docstring.

What is kept (each choice is a field of :class:`FunctionsConfig` or said here):

* Files under folders named ``test``, ``tests`` or ``idle_test`` (the stdlib's test suites,
  ``lib2to3/tests``, ``idlelib/idle_test``) and ``site-packages`` are skipped, and so are
  files that are not UTF-8 or do not parse; the header of the cache counts them.
* Functions at module level and methods of classes (nested classes too). Functions defined
  inside a function are not taken on their own: they are part of their outer function.
* Skipped: a docstring whose first line has fewer than ``min_summary_words`` words or is a
  doctest line (``>>> import io``: 23 functions of pickletools), a body
  (less the docstring) of fewer than ``min_body_tokens`` Python tokens (8: a stub,
  ``raise NotImplementedError`` or a getter such as ``return self._sock.family`` is not
  worth describing; a floor of 2 statements, as first planned, left only 4,559 of Python
  3.11's functions, against 5,649 now),
  and a docstring that shares a line with other code (``def f(): "doc"; ...``).
* ``source`` is the ``def`` (or ``async def``) up to the end of the body, dedented, with
  the docstring's lines and the blank lines right after them removed. Decorators are left
  out: ``ast`` places a function at its ``def`` line, and a decorator such as
  ``@property`` is not what a docstring describes.
* De-duplication: functions whose source (without docstring) is identical to an earlier
  one's, in (module, line) order, are dropped; identical code would leak from train into
  test (both tasks) and tie with itself in a code-search pool. Identical first lines with
  *different* code are kept ("Return self.", "Close the file."): the code to retrieve or
  to summarise differs, so nothing is memorised across splits; they make some queries
  ambiguous, which a retrieval model must live with as on any real code base.

Splits are by module: ``zlib.crc32`` of the dotted module name puts each module wholly in
train, validation or test (fractions 0.8 / 0.1 / 0.1 by default), so no function's module
leaks across splits, and the split of a module never changes when other modules are added.
Sibling modules of one package may land in different splits.

The extraction (9 s for Python 3.11's 734 files on the shared 2-core machine, mostly
``ast.parse``) is cached as JSON lines under
``$SEQLAB_CACHE/stdlib_functions/`` (default ``~/.cache/seqlab``), keyed by the Python
version, the folder and its files' sizes and times; it is written atomically, read back as
JSON only, checked against the sha256 in its header and rebuilt when unreadable.

Example:
    >>> queries, candidates = code_search_pairs("test")          # query i describes candidate i
    >>> pairs = summarisation_pairs("train", max_source_bytes=2048)  # (source, first line)
    >>> fn = load_functions("validation")[0]; fn.module, fn.qualname, fn.summary
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import sys
import tokenize
import zlib
from dataclasses import dataclass
from pathlib import Path

from seqlab.config import Config, require
from seqlab.tasks.corpus import DataError, stdlib_dir

SPLITS = ("train", "validation", "test")
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
FORMAT = 1      # bump when the extraction changes, so old caches are not read


@dataclass(frozen=True)
class FunctionsConfig(Config):
    """Where the functions come from and which are kept.

    Attributes:
        root: a folder of Python files; None = the running interpreter's standard library.
        fractions: shares of modules in train, validation and test (sum 1).
        min_summary_words: fewest words in the docstring's first line.
        min_body_tokens: fewest Python tokens in the body besides the docstring (names,
            operators, literals; comments and layout do not count).
        cache_dir: where the extraction is cached; None = $SEQLAB_CACHE or ~/.cache/seqlab.
    """

    root: str | None = None
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    min_summary_words: int = 3
    min_body_tokens: int = 8
    cache_dir: str | None = None

    def validate(self) -> None:
        require(len(self.fractions) == 3 and all(f >= 0 for f in self.fractions)
                and abs(sum(self.fractions) - 1) < 1e-9 and self.fractions[0] > 0,
                self, "fractions", "three shares (train, validation, test) >= 0 summing to 1, "
                "train > 0")
        require(self.min_summary_words >= 1, self, "min_summary_words", "an int >= 1")
        require(self.min_body_tokens >= 1, self, "min_body_tokens", "an int >= 1")


@dataclass(frozen=True)
class FunctionDoc:
    """One documented function.

    Attributes:
        module: dotted module name relative to the root (``json.decoder``; a package's
            ``__init__.py`` is the package).
        qualname: ``name`` or ``Class.name`` (``Outer.Inner.name`` for nested classes).
        lineno: line of the ``def`` in the module's file.
        source: the function's code without its docstring or decorators, dedented.
        summary: the docstring's first line, stripped (after ``inspect.cleandoc``).
        docstring: the whole docstring, cleaned by ``inspect.cleandoc``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
    """

    module: str
    qualname: str
    lineno: int
    source: str
    summary: str
    docstring: str
    split: str


def split_of(module: str, fractions: tuple[float, ...] = (0.8, 0.1, 0.1)) -> str:
    """The split of a dotted module name: a stable hash (crc32), not Python's salted hash."""
    u = zlib.crc32(module.encode()) / 2**32
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def load_functions(split: str | None = None,
                   cfg: FunctionsConfig = FunctionsConfig()) -> list[FunctionDoc]:
    """The documented functions of one split (or all, for ``split=None``), in (module, line)
    order; extracted once per interpreter and folder, then read from the cache.

    Args:
        split: ``"train"``, ``"validation"``, ``"test"`` or None.
        cfg: the folder, the split fractions and the filters.

    Raises:
        ValueError: an unknown split.
        DataError: the folder does not exist, holds no Python files, or the cache folder is
            not writable.

    Example:
        >>> fns = load_functions("test")
        >>> print(fns[0].summary); print(fns[0].source)
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (or None for all); "
                         f"got {split!r}")
    records = _cached_records(cfg)
    out = [FunctionDoc(**r, split=split_of(r["module"], cfg.fractions)) for r in records]
    return out if split is None else [f for f in out if f.split == split]


def split_files(split: str, cfg: FunctionsConfig = FunctionsConfig()) -> list[Path]:
    """The Python files of one split's modules: the text a model may pre-train on without
    seeing the other splits' functions (and their docstrings).

    Example:
        >>> DataConfig(paths=tuple(map(str, split_files("train"))))   # MLM on train modules only
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = Path(cfg.root) if cfg.root is not None else stdlib_dir()
    return [f for f in _python_files(root)
            if split_of(_module_name(f, root), cfg.fractions) == split]


def code_search_pairs(split: str,
                      cfg: FunctionsConfig = FunctionsConfig()) -> tuple[list[str], list[str]]:
    """Queries (docstring first lines) and candidates (sources without docstrings) of one
    split, aligned: query i describes candidate i.

    Example:
        >>> queries, candidates = code_search_pairs("test")
        >>> rank_metrics(bm25_scores(queries, candidates), list(range(len(queries))))
    """
    fns = load_functions(split, cfg)
    return [f.summary for f in fns], [f.source for f in fns]


def summarisation_pairs(split: str, max_source_bytes: int | None = None,
                        cfg: FunctionsConfig = FunctionsConfig()) -> list[tuple[str, str]]:
    """``(source without docstring, docstring first line)`` pairs of one split, for an
    encoder-decoder.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        max_source_bytes: drop (never truncate: a cut function is not the code the summary
            describes) functions whose UTF-8 source is longer; None keeps all.
        cfg: as for :func:`load_functions`.

    Raises:
        ValueError: an unknown split or a max_source_bytes below 1.
    """
    if max_source_bytes is not None and max_source_bytes < 1:
        raise ValueError(f"max_source_bytes must be a positive int or None; got {max_source_bytes}")
    return [(f.source, f.summary) for f in load_functions(split, cfg)
            if max_source_bytes is None or len(f.source.encode()) <= max_source_bytes]


def extract(root: str | Path, min_summary_words: int = 3,
            min_body_tokens: int = 8) -> tuple[list[dict], dict]:
    """Parse every ``.py`` file under ``root``: (records without split, in (module, line)
    order, de-duplicated; counts of files read and skipped, functions dropped and why)."""
    root = Path(root)
    stats = {"files": 0, "undecodable": 0, "unparsable": 0, "short_summary": 0,
             "short_body": 0, "inline_docstring": 0, "duplicate_source": 0}
    records: list[dict] = []
    for path in _python_files(root):
        stats["files"] += 1
        try:
            text = path.read_bytes().decode("utf-8")
            tree = ast.parse(text, filename=str(path))
        except UnicodeDecodeError:
            stats["undecodable"] += 1
            continue
        except (SyntaxError, ValueError):    # ValueError: NUL bytes in the file
            stats["unparsable"] += 1
            continue
        # Split at newlines only, as the parser does (str.splitlines also splits at \f).
        lines = io.StringIO(text, newline=None).readlines()
        records.extend(_functions_of(tree, lines, _module_name(path, root), min_summary_words,
                                     min_body_tokens, stats))
    seen: set[str] = set()
    kept = []
    for r in sorted(records, key=lambda r: (r["module"], r["lineno"])):
        if r["source"] in seen:
            stats["duplicate_source"] += 1
        else:
            seen.add(r["source"])
            kept.append(r)
    stats["functions"] = len(kept)
    return kept, stats


def _python_files(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        # Pruned, not filtered: site-packages alone can hold 20,000 files (rglob took 4 s).
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files.extend(Path(folder, n) for n in names if n.endswith(".py"))
    return sorted(f for f in files if f.is_file())


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


_BLOCKS = (ast.If, ast.Try, ast.With, getattr(ast, "TryStar", ast.Try))   # TryStar: 3.11+


def _functions_of(tree: ast.Module, lines: list[str], module: str, min_words: int,
                  min_tokens: int, stats: dict) -> list[dict]:
    out: list[dict] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                record = _record(node, lines, min_words, min_tokens, stats)
                if record is not None:
                    out.append({"module": module, "qualname": prefix + node.name, **record})
            elif isinstance(node, _BLOCKS):
                # defs under `if sys.platform == ...:` or `try: import x except: def ...`
                # belong to the module (or class) all the same
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.ExceptHandler):
                        visit(child.body, prefix)
                    elif isinstance(child, ast.stmt):
                        visit([child], prefix)

    visit(tree.body, "")
    return out


def _record(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], min_words: int,
            min_tokens: int, stats: dict) -> dict | None:
    docstring = ast.get_docstring(node, clean=True)     # inspect.cleandoc'd
    if docstring is None:
        return None
    summary = docstring.split("\n", 1)[0].strip()
    if len(summary.split()) < min_words or summary.startswith(">>>"):
        stats["short_summary"] += 1     # a doctest prompt (pickletools) is no summary either
        return None
    doc, rest = node.body[0], node.body[1:]
    if not rest:
        stats["short_body"] += 1
        return None
    if lines[doc.lineno - 1][:doc.col_offset].strip() or doc.end_lineno >= rest[0].lineno:
        stats["inline_docstring"] += 1
        return None
    # Lines are 1-based: keep the def's lines, minus the docstring and the blanks after it.
    after = doc.end_lineno
    while after < rest[0].lineno - 1 and not lines[after].strip():
        after += 1
    kept = lines[node.lineno - 1: doc.lineno - 1] + lines[after: node.end_lineno]
    # Dedent by the def's own indent; textwrap.dedent would give up on a method whose body
    # holds a multi-line string at column 0.
    source = "".join(line[min(node.col_offset, len(line) - len(line.lstrip(" \t"))):]
                     for line in kept).rstrip() + "\n"
    if not _has_tokens(source, min_tokens):
        stats["short_body"] += 1
        return None
    return {"lineno": node.lineno, "source": source, "summary": summary, "docstring": docstring}


_LAYOUT = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT,
           tokenize.ENDMARKER}


def _has_tokens(source: str, at_least: int) -> bool:
    """Whether the body (after the ``def`` line(s)) holds ``at_least`` Python tokens, not
    counting comments and layout. Stops as soon as it knows: the pure-Python tokenizer
    took as long as parsing the whole stdlib (10 s) when run to the end."""
    in_body, n = False, 0
    for t in tokenize.generate_tokens(io.StringIO(source).readline):
        if in_body and t.type not in _LAYOUT:
            n += 1
            if n >= at_least:
                return True
        in_body = in_body or t.type == tokenize.NEWLINE     # the header ends at its NEWLINE
    return False


def _cache_file(cfg: FunctionsConfig, root: Path) -> Path:
    # The same root as corpus.py's caches: cfg.cache_dir, $SEQLAB_CACHE, ~/.cache/seqlab.
    base = Path(cfg.cache_dir or os.environ.get("SEQLAB_CACHE")
                or Path.home() / ".cache" / "seqlab")
    h = hashlib.sha256(json.dumps([FORMAT, sys.version, str(root.resolve()), cfg.min_summary_words,
                                   cfg.min_body_tokens]).encode())
    for p in _python_files(root):    # a changed file means another cache (~10 ms of stat)
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return base / "stdlib_functions" / f"{h.hexdigest()[:16]}.jsonl"


def _cached_records(cfg: FunctionsConfig) -> list[dict]:
    root = Path(cfg.root).expanduser() if cfg.root is not None else stdlib_dir()
    if not root.is_dir():
        raise DataError(f"no such folder: {str(root)!r}; FunctionsConfig.root must be a folder "
                        "of Python files (None = the standard library)")
    path = _cache_file(cfg, root)
    if path.exists():
        records = _read_cache(path)
        if records is not None:
            return records
        print(f"seqlab: the function cache {path} is unreadable; rebuilding it", file=sys.stderr)
    records, stats = extract(root, cfg.min_summary_words, cfg.min_body_tokens)
    if not records:
        raise DataError(f"no documented functions found under {root} ({stats['files']} Python "
                        "files); point FunctionsConfig.root at a folder of Python source")
    _write_cache(path, records, stats, root)
    return records


_FIELDS = ("module", "qualname", "lineno", "source", "summary", "docstring")


def _read_cache(path: Path) -> list[dict] | None:
    """The cached records, or None when the file is damaged in any way."""
    try:
        head, body = path.read_bytes().split(b"\n", 1)
        header = json.loads(head)
        if header["format"] != FORMAT or hashlib.sha256(body).hexdigest() != header["sha256"]:
            return None
        # Split at b"\n" only: JSON escapes it inside strings, but not U+2028, which
        # str.splitlines would also split at.
        records = [json.loads(line) for line in body.split(b"\n") if line]
        if len(records) != header["count"] or any(sorted(r) != sorted(_FIELDS) for r in records):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return records


def _write_cache(path: Path, records: list[dict], stats: dict, root: Path) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    header = {"format": FORMAT, "python": sys.version, "root": str(root.resolve()),
              "count": len(records), "sha256": hashlib.sha256(body).hexdigest(), **stats}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n" + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)     # readers see the old file or the whole new one
    except OSError as e:
        raise DataError(f"cannot write the function cache {path} ({e.strerror or e}); set "
                        "SEQLAB_CACHE (or FunctionsConfig.cache_dir) to a writable "
                        "folder") from None
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["FunctionDoc", "FunctionsConfig", "SPLITS", "code_search_pairs", "extract",
           "load_functions", "split_of", "summarisation_pairs"]

"""English prose from the standard library: the paragraphs of its modules' docstrings.

Real text present on every machine, for prompts of natural-language generation (beam and
diverse beam search, conditioned decoding). Doctests, indented code and tables are left out.

Example:
    >>> paras = prose_paragraphs(min_words=60)
    >>> prompt = tokenizer.encode(paras[0])[:40]
"""

from __future__ import annotations

import ast
from pathlib import Path

from seqlab.tasks.corpus import stdlib_dir

SKIP = {"test", "tests", "idle_test", "site-packages"}
DOCUMENTED = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def prose_paragraphs(min_words: int = 60, root=None) -> list[str]:
    """Paragraphs of at least ``min_words`` words from the docstrings of the modules, classes
    and functions of the standard library (test folders and site-packages left out), in file
    order, whitespace collapsed. ``root``: another folder of Python files."""
    out = []
    root = stdlib_dir() if root is None else Path(root)
    for path in sorted(root.rglob("*.py")):
        if SKIP & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, DOCUMENTED)]
        for node in nodes:
            for para in (ast.get_docstring(node) or "").split("\n\n"):
                if len(para.split()) >= min_words and ">>>" not in para and "    " not in para:
                    out.append(" ".join(para.split()))
    return out

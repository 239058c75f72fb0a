"""Multiple choice from real code: the held-out line among distractors of the same file."""

from pathlib import Path

import pytest

from seqlab.config import ConfigError
from seqlab.tasks.corpus import DataError
from seqlab.tasks.line_choice import LineChoiceConfig, code_lines, line_questions
from seqlab.tasks.stdlib_functions import split_of

SOURCE = '''"""A module docstring
that spans lines: value_0 = never_asked(0)
"""
import os

# a comment line: never asked
def f{k}(x):
    """Docstring of f{k}, one line."""
    text = """a string
    spanning lines = not code"""
'''


def write_corpus(root: Path, files: int = 6) -> None:
    for k in range(files):
        body = SOURCE.format(k=k) + "".join(
            f"    value_{k}_{j} = compute_{j}(x, {k}) + offset_{j}\n" for j in range(20))
        (root / f"mod_{k}.py").write_text(body + "    return x\n")


def test_questions_are_lines_of_the_file_with_their_context(tmp_path):
    write_corpus(tmp_path)
    cfg = LineChoiceConfig(root=str(tmp_path), context_lines=6, per_file=3,
                           fractions=(0.0, 0.5, 0.5))
    qs = line_questions("test", 50, cfg) + line_questions("validation", 50, cfg)
    assert len(qs) == 6 * 3
    answers = set()
    for q in qs:
        lines = (tmp_path / f"{q.module}.py").read_text().splitlines()
        true = lines[q.lineno - 1]
        assert q.choices[q.answer] == "\n" + true
        assert q.context == "\n".join(lines[q.lineno - 1 - 6:q.lineno - 1])
        stripped = [c.strip() for c in q.choices]
        assert len(set(stripped)) == len(q.choices) == 4   # distractors differ from the answer
        indent = "\n" + true[:len(true) - len(true.lstrip())]
        assert all(c.startswith(indent) and c[len(indent)] != " " for c in q.choices)
        file_lines = {line.strip() for line in lines}
        assert all(s in file_lines for s in stripped)        # drawn from the same file
        assert all("never" not in s and "not code" not in s for s in stripped)
        answers.add(q.answer)
    assert answers == {0, 1, 2, 3}                           # the answer's place is shuffled


def test_deterministic_and_splits_by_module(tmp_path):
    write_corpus(tmp_path, files=10)
    cfg = LineChoiceConfig(root=str(tmp_path), context_lines=4, fractions=(0.0, 0.5, 0.5))
    test, val = line_questions("test", 100, cfg), line_questions("validation", 100, cfg)
    assert test == line_questions("test", 100, cfg)
    assert line_questions("test", 3, cfg) == test[:3]
    assert {q.module for q in test}.isdisjoint({q.module for q in val})
    assert all(split_of(q.module, cfg.fractions) == "test" for q in test)
    other = line_questions("test", 100, LineChoiceConfig(root=str(tmp_path), context_lines=4,
                                                         fractions=(0.0, 0.5, 0.5), seed=1))
    assert [q.choices for q in other] != [q.choices for q in test]


def test_standard_library_questions():
    qs = line_questions("test", 12)
    assert len(qs) == 12 and qs == line_questions("test", 12)
    assert all(split_of(q.module) == "test" for q in qs)
    assert {q.module for q in qs}.isdisjoint({q.module for q in line_questions("validation", 12)})
    assert all(16 <= len(c.strip()) <= 80 for q in qs for c in q.choices)


def test_code_lines():
    text = 'x = 1\n\n# note\ns = """a\nb"""\n  y = 2  # trailing\n'
    assert code_lines(text) == {0, 5}
    assert code_lines("def f(:\n  (") == set()


@pytest.mark.parametrize("options", [{"context_lines": 0}, {"choices": 1},
                                     {"min_line_chars": 90}, {"per_file": 0},
                                     {"fractions": (0.5, 0.5)}], ids=str)
def test_bad_options(options):
    with pytest.raises(ConfigError, match="LineChoiceConfig.* is not allowed"):
        LineChoiceConfig(**options)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        line_questions("dev", 1)
    with pytest.raises(DataError, match="holds no Python files"):
        line_questions("test", 1, LineChoiceConfig(root=str(tmp_path)))

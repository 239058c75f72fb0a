"""Prose paragraphs from docstrings: long prose kept, code and doctests and tests left out."""

from seqlab.tasks.stdlib_prose import prose_paragraphs

LONG = " ".join(["word"] * 12)


def test_prose_paragraphs_keep_long_prose_only(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        f'"""{LONG}\n\nshort one\n\n>>> {LONG}\n"""\n'
        f'class C:\n    """{LONG} in a class"""\n'
        f'def f():\n    """Run.\n\n    Table:\n        {LONG}\n    """\n')
    (tmp_path / "test" / "t.py").write_text(f'"""{LONG} from a test"""\n')
    (tmp_path / "bad.py").write_text("def (:\n")
    assert prose_paragraphs(10, root=tmp_path) == [LONG, LONG + " in a class"]

"""Functions and docstrings of a folder of Python files: docstrings removed from the sources,
what is skipped, the split by module, the cache, and the real standard library's count."""

import ast
import collections
import os
import textwrap

import pytest

from seqlab.config import ConfigError
from seqlab.tasks import stdlib_functions as sf
from seqlab.tasks.corpus import DataError
from seqlab.tasks.stdlib_functions import (FunctionsConfig, code_search_pairs, extract,
                                           load_functions, split_of, summarisation_pairs)

SHAPES = textwrap.dedent('''\
    """A module of shapes."""
    import math


    def area(r):
        """Return the area of a circle of radius r.

        Args:
            r: the radius.
        """

        # a comment after the blank line stays
        return math.pi * r * r


    class Shape:
        class Corner:
            def angle(self, other):
                """The angle between two corners, in radians."""
                return math.atan2(self.y - other.y, self.x - other.x)

        @property
        def perimeter(self):
            """Sum the lengths of all the sides."""
            def side(i):
                """A nested helper is part of its outer function."""
                return self.sides[i] * self.scale
            return sum(side(i) for i in range(len(self.sides)))

        async def fetch(self, url):
            \'\'\'Fetch the shape from a url.\'\'\'
            data = await self.client.get(url, timeout=10)
            return data

        def text(self):
            """Render the shape as text
            over two lines."""
            return """
    a string at column 0
    """ + str(self.sides)

        def short(self):
            """Too short."""
            return self.sides[0] + self.sides[1]

        def getter(self):
            """Return the scale of the shape."""
            return self.scale

        def inline(self): "Has its docstring on the def line."; return [self.a, self.b, self.c]

        def doctest(self):
            """>>> Shape().doctest()"""
            return [self.a, self.b, self.c]

        def undocumented(self):
            return [self.a, self.b, self.c]


    if math.pi > 3:
        def under_if(x, y):
            """Add two numbers and double the sum."""
            return 2 * (x + y)
    ''')

TWICE = textwrap.dedent('''\
    def twice(x, y):
        """Double the sum of two numbers, copied."""
        return 2 * (x + y) + 0 * x
    ''')


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A package, a copied function, test folders, a broken and a latin-1 file, and 30
    modules of two functions each (enough for every split)."""
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "lib"
    (root / "geo").mkdir(parents=True)
    (root / "geo" / "__init__.py").write_text(TWICE)
    (root / "geo" / "shapes.py").write_text(SHAPES)
    (root / "twice_copy.py").write_text(TWICE)                 # identical source: dropped
    for skipped in ("test", "tests", "idlelib/idle_test", "site-packages/pkg"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "t.py").write_text(TWICE.replace("twice", "skipped"))
    (root / "broken.py").write_text("def f(:\n")
    (root / "latin.py").write_bytes('"""caf\xe9"""\n'.encode("latin-1"))
    for i in range(30):
        (root / f"m{i:02d}.py").write_text("".join(
            f'def f{i}_{j}(x):\n    """Compute value {j} of module {i}."""\n'
            f'    return x * {i} + {j} - len(str(x))\n' for j in range(2)))
    return root


def by_name(root, **options):
    return {f"{f.module}:{f.qualname}": f
            for f in load_functions(cfg=FunctionsConfig(root=str(root), **options))}


def test_docstrings_are_removed_from_sources(tree):
    fns = by_name(tree)
    area = fns["geo.shapes:area"]
    assert area.source == ("def area(r):\n    # a comment after the blank line stays\n"
                           "    return math.pi * r * r\n")
    assert area.summary == "Return the area of a circle of radius r."
    assert area.docstring == "Return the area of a circle of radius r.\n\nArgs:\n    r: the radius."
    assert area.lineno == 5
    per = fns["geo.shapes:Shape.perimeter"]
    assert per.source.startswith("def perimeter(self):\n    def side(i):")   # no decorator
    assert "A nested helper" in per.source and "geo.shapes:Shape.perimeter.side" not in fns
    assert fns["geo.shapes:Shape.text"].summary == "Render the shape as text"
    assert "\na string at column 0\n" in fns["geo.shapes:Shape.text"].source
    assert fns["geo.shapes:Shape.fetch"].source.startswith("async def fetch(self, url):\n    data")
    assert {"geo.shapes:Shape.Corner.angle", "geo.shapes:under_if", "geo:twice"} <= set(fns)
    for f in fns.values():
        node = ast.parse(f.source).body[0]          # valid Python, no docstring left
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        assert ast.get_docstring(node) is None and f.summary not in f.source


def test_what_is_skipped_is_counted(tree):
    records, stats = extract(tree)
    names = {f"{r['module']}:{r['qualname']}" for r in records}
    assert stats["files"] == 35 and stats["undecodable"] == 1 and stats["unparsable"] == 1
    # short: "Too short." and the doctest line; body: getter (5 tokens); inline: one
    assert (stats["short_summary"], stats["short_body"], stats["inline_docstring"]) == (2, 1, 1)
    assert stats["duplicate_source"] == 1 and "twice_copy:twice" not in names
    assert not any(n.startswith(("test", "tests", "idlelib", "site-packages")) for n in names)
    assert stats["functions"] == len(records) == 6 + 1 + 60
    # looser filters keep "Too short." and the getter, never a doctest line
    assert len(extract(tree, min_summary_words=1, min_body_tokens=1)[0]) == len(records) + 2


def test_split_is_by_module_disjoint_and_deterministic(tree):
    cfg = FunctionsConfig(root=str(tree))
    splits = {s: load_functions(s, cfg) for s in sf.SPLITS}
    modules = {s: {f.module for f in fns} for s, fns in splits.items()}
    assert all(modules.values())                                   # every split has some
    assert not (modules["train"] & modules["validation"] or modules["train"] & modules["test"]
                or modules["validation"] & modules["test"])
    assert sum(map(len, splits.values())) == len(load_functions(cfg=cfg))
    assert all(f.split == s == split_of(f.module) for s, fns in splits.items() for f in fns)
    # crc32, not Python's per-process salted hash: these values never change
    assert [split_of(m) for m in ("os", "collections", "json.decoder")] == \
        ["train", "validation", "test"]
    everything = load_functions(cfg=FunctionsConfig(root=str(tree), fractions=(1.0, 0.0, 0.0)))
    assert {f.split for f in everything} == {"train"}


def test_split_files_hold_exactly_their_splits_functions(tree):
    cfg = FunctionsConfig(root=str(tree))
    files = {s: sf.split_files(s, cfg) for s in sf.SPLITS}
    assert sum(map(len, files.values())) == len(sf._python_files(tree))
    for s, paths in files.items():
        named = {sf._module_name(p, tree) for p in paths}
        assert {f.module for f in load_functions(s, cfg)} <= named
        assert all(split_of(m) == s for m in named)


def test_pairs_are_aligned(tree):
    cfg = FunctionsConfig(root=str(tree))
    fns = load_functions("train", cfg)
    queries, candidates = code_search_pairs("train", cfg)
    assert queries == [f.summary for f in fns] and candidates == [f.source for f in fns]
    pairs = summarisation_pairs("train", cfg=cfg)
    assert pairs == list(zip(candidates, queries))
    short = summarisation_pairs("train", max_source_bytes=70, cfg=cfg)
    assert short and all(len(s.encode()) <= 70 for s, _ in short) and len(short) < len(pairs)
    with pytest.raises(ValueError, match="split must be one of train, validation, test"):
        load_functions("val", cfg)
    with pytest.raises(ValueError, match="max_source_bytes must be a positive int"):
        summarisation_pairs("test", max_source_bytes=0, cfg=cfg)


def cache_files(tree):
    return sorted((tree.parent / "cache" / "stdlib_functions").glob("*.jsonl"))


def test_cache_is_reused_rebuilt_when_damaged_and_keyed_by_files(tree, monkeypatch, capsys):
    cfg = FunctionsConfig(root=str(tree))
    first = load_functions(cfg=cfg)
    [path] = cache_files(tree)
    real_extract = sf.extract

    def no_extract(*args, **kwargs):
        raise AssertionError("extracted again instead of reading the cache")

    monkeypatch.setattr(sf, "extract", no_extract)
    assert load_functions(cfg=cfg) == first                          # read back as JSON
    monkeypatch.setattr(sf, "extract", real_extract)
    good = path.read_bytes()
    damaged = [good.replace(b"Return the area", b"Return the aREA"),  # valid JSON, wrong sha
               good[: len(good) // 2],                                # truncated
               b"\x80\x04garbage"]                                    # not JSON at all
    for bad in damaged:
        path.write_bytes(bad)
        assert load_functions(cfg=cfg) == first
        assert "is unreadable; rebuilding it" in capsys.readouterr().err
        assert path.read_bytes() == good
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]   # written atomically
    # an edited file means another cache, and the edit is seen
    (tree / "m00.py").write_text(TWICE.replace("twice", "thrice"))
    os.utime(tree / "m00.py", ns=(1, 1))
    assert "m00:thrice" in by_name(tree) and len(cache_files(tree)) == 2


def test_bad_folders_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no such folder: '.*nope'; FunctionsConfig.root"):
        load_functions(cfg=FunctionsConfig(root=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no documented functions found under .*empty"):
        load_functions(cfg=FunctionsConfig(root=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="fractions.*summing to 1"):
        FunctionsConfig(fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="min_body_tokens = 0"):
        FunctionsConfig(min_body_tokens=0)


@pytest.fixture(scope="module")
def stdlib_cfg(tmp_path_factory):
    # One extraction (~15 s) per test session: test_bm25.py shares this folder.
    return FunctionsConfig(cache_dir=str(tmp_path_factory.getbasetemp() / "stdlib-functions"))


def test_the_standard_library_gives_at_least_5000_pairs(stdlib_cfg):
    fns = load_functions(cfg=stdlib_cfg)
    counts = collections.Counter(f.split for f in fns)
    print(f"stdlib functions per split: {dict(counts)}")
    assert len(fns) >= 5000 and all(counts[s] >= 250 for s in sf.SPLITS)
    assert len({f.source for f in fns}) == len(fns)
    assert {"json.decoder", "collections"} <= {f.module for f in fns}
    assert not any(part in {"test", "tests", "idle_test"} for f in fns
                   for part in f.module.split("."))

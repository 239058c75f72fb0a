"""German prose from Debian's manual pages (``apt-get install manpages-de``), rendered to plain
text by groff: real text in a second language, for adapting a model trained on English.

Each page becomes one ``.txt`` file in a cache folder, so ``seqlab.tasks.corpus.load_corpus``
reads them as it reads any folder (its file-level validation split keeps whole pages apart):

    >>> folder = german_manpages()                       # renders once, then reuses
    >>> corpus = load_corpus(DataConfig(paths=(str(folder),), extensions=(".txt",)))

Rendering: ``preconv | groff -Tutf8 -mandoc`` with bold, underline and colour off, then the
running header and footer lines dropped, each line's indentation and groff's justification
spaces collapsed, and runs of blank lines cut to one. Pages are taken in sorted path order.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

from tqdm import tqdm

from seqlab.config import ConfigError

ROOT = Path("/usr/share/man/de")
_SPACES = re.compile(r"[ \t]+")
_BLANKS = re.compile(r"\n{3,}")


def render(page: Path) -> str:
    """The plain text of one (gzipped or plain) troff manual page.

    Raises:
        ConfigError: groff is missing (Debian's groff-base, which man-db depends on).
    """
    raw = gzip.decompress(page.read_bytes()) if page.suffix == ".gz" else page.read_bytes()
    if shutil.which("groff") is None or shutil.which("preconv") is None:
        raise ConfigError("rendering manual pages needs groff: apt-get install groff-base")
    enc = subprocess.run(["preconv"], input=raw, capture_output=True, check=False).stdout
    out = subprocess.run(["groff", "-Tutf8", "-mandoc", "-P-cbou"], input=enc,
                         capture_output=True, check=False,
                         env={**os.environ, "MANWIDTH": "80"}).stdout
    lines = out.decode("utf-8", "replace").splitlines()[1:-1]   # running header and footer
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in lines)
    return _BLANKS.sub("\n\n", text).strip() + "\n"


def german_manpages(limit: int | None = None, root: Path = ROOT,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True,
                    min_pages: int = 50) -> Path:
    """A folder of the German pages as ``.txt`` files (rendered on first use, then reused).

    Args:
        limit: the first ``limit`` pages in sorted order (None: all, about 1,300 with
            manpages-de 4.18).
        root: where the pages are.
        cache_dir: the cache root (None: ``$SEQLAB_CACHE`` or ``~/.cache/seqlab``).
        progress: a progress bar while rendering.
        min_pages: fewer pages than this under ``root`` means manpages-de is not installed
            (a Debian system has a hundred German pages of other packages without it).

    Raises:
        ConfigError: no German manual pages installed (the message gives the apt command).
    """
    pages = sorted(p for p in Path(root).rglob("*.gz") if p.is_file())   # Debian gzips them
    if len(pages) < min_pages:
        raise ConfigError(f"{root} holds {len(pages)} manual pages: install Debian's German "
                          "manual pages first (apt-get install manpages-de)")
    pages = pages[:limit] if limit else pages
    base = Path(cache_dir or os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab")
    folder = base / f"manpages-de-{Path(root).name}-{len(pages)}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for page in tqdm(pages, desc="rendering German manual pages", unit="page",
                     disable=not progress):
        name = str(page.relative_to(root)).replace(os.sep, "_").removesuffix(".gz")
        text = render(page)
        if len(text) > 200:   # skip stubs that only point at another page
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, folder / f"{name}.txt")
    done.write_text("")   # last: an interrupted rendering is redone, never half reused
    return folder


__all__ = ["ROOT", "german_manpages", "render"]

"""German manual pages as plain text: troff rendered by groff, headers dropped, spaces
collapsed; a folder without pages names the package to install."""

from __future__ import annotations

import gzip
import shutil

import pytest

from seqlab.config import ConfigError
from seqlab.tasks.manpages import german_manpages, render

pytestmark = pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")

PAGE = """.TH GRUSS 1 "2024" "Beispiel" "Dienstprogramme"
.SH BEZEICHNUNG
gruss \\- einen Gruß ausgeben
.SH BESCHREIBUNG
.B gruss
schreibt einen freundlichen Gruß auf die Standardausgabe. Die Ausgabe endet mit einem
Zeilenumbruch, damit die Eingabeaufforderung der Shell auf einer neuen Zeile beginnt.
.TP
.B \\-l
Länger grüßen.
"""


def write_page(folder, name: str, text: str = PAGE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress(text.encode("utf-8")))


def test_a_page_renders_to_plain_german_text(tmp_path):
    write_page(tmp_path, "gruss.1.gz")
    text = render(tmp_path / "gruss.1.gz")
    assert "BEZEICHNUNG\ngruss - einen Gruß ausgeben" in text
    assert "schreibt einen freundlichen Gruß auf die Standardausgabe." in text
    assert "-l Länger grüßen." in text        # a short tag shares its line
    assert "GRUSS(1)" not in text            # the running header and footer are gone
    assert "  " not in text and "\x08" not in text   # no justification spaces, no overstrike


def test_the_folder_is_rendered_once_and_missing_pages_are_named(tmp_path):
    root = tmp_path / "de"
    for i in range(3):
        write_page(root / "man1", f"gruss{i}.1.gz")
    write_page(root / "man1", "stub.1.gz", ".so man1/gruss0.1\n")   # points elsewhere: skipped
    folder = german_manpages(root=root, cache_dir=tmp_path / "cache", progress=False,
                             min_pages=2)
    names = sorted(p.name for p in folder.glob("*.txt"))
    assert names == ["man1_gruss0.1.txt", "man1_gruss1.1.txt", "man1_gruss2.1.txt"]
    (folder / names[0]).write_text("kept")   # a second call reuses the rendering
    assert german_manpages(root=root, cache_dir=tmp_path / "cache", progress=False,
                           min_pages=2) == folder
    assert (folder / names[0]).read_text() == "kept"
    with pytest.raises(ConfigError, match="apt-get install manpages-de"):
        german_manpages(root=tmp_path / "nothing", cache_dir=tmp_path / "cache")

import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = ["textwrap.py", "string.py", "bisect.py", "heapq.py", "shlex.py", "fnmatch.py",
         "colorsys.py", "keyword.py", "glob.py", "sched.py", "queue.py", "reprlib.py"]


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    """A dozen real standard-library files (enough for a split by file), cached under tmp."""
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "corpus"
    d.mkdir()
    for name in FILES:
        shutil.copy(STDLIB / name, d / name)
    return d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

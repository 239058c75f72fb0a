import shutil
import sysconfig
from pathlib import Path

import pytest

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


def tiny_run(corpus, out, **train):
    from seqlab.train.config import RunConfig

    t = {"steps": 6, "batch_size": 4, "seq_len": 32, "warmup": 2, "eval_every": 3,
         "eval_tokens": 1024, "eval_batch_size": 4, "ckpt_every": 3, "log_every": 1}
    t.update(train)
    return RunConfig.from_dict({
        "model": {"dim": 32, "layers": ["attention", "mamba"], "mlp_hidden": 64,
                  "mixer_options": {"attention": {"heads": 2}, "mamba": {"d_state": 4}}},
        "data": {"paths": [str(corpus)]}, "train": t, "out_dir": str(out)})

"""No file of a run is ever unpickled: a pickle payload planted in any file of a checkpoint
that is not weights runs nothing on resume, eval, info or load, and gives a clear error."""

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

import seqlab
from seqlab.cli import main
from seqlab.integrity import write_manifest
from seqlab.models.io import CheckpointError, load
from seqlab.train.trainer import Trainer

from .conftest import tiny_run

PLANTED = ["config.json", "trainer.json", "trainer.safetensors", "tokenizer.json", "manifest.json"]


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bpe_run(corpus, out):
    run = tiny_run(corpus, out, steps=3, eval_every=0, ckpt_every=3)
    d = run.to_dict()
    d["data"].update(tokenizer="bpe", bpe_vocab=300)   # so that a tokenizer.json is saved too
    return type(run).from_dict(d)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    from tests.conftest import FILES, STDLIB

    (base / "corpus").mkdir()
    for name in FILES:
        shutil.copy(STDLIB / name, base / "corpus" / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQLAB_CACHE", str(base / "cache"))
        Trainer(bpe_run(base / "corpus", base / "run"), progress=False).fit()
    return base


@pytest.fixture
def run(trained, tmp_path, monkeypatch):
    """A copy of the trained run; unpickling anywhere fails the test outright."""
    monkeypatch.setenv("SEQLAB_CACHE", str(trained / "cache"))
    shutil.copytree(trained / "run", tmp_path / "run", symlinks=True)

    def refuse(*a, **k):
        raise AssertionError("something tried to unpickle a file")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    return tmp_path / "run"


def ckpt_of(run):
    return run / "checkpoints" / "step-000003"


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker), protocol=0))


def test_the_checkpoint_holds_the_files_this_test_plants(run):
    names = {p.name for p in ckpt_of(run).iterdir()}
    assert set(PLANTED) | {"model.safetensors"} == names


@pytest.mark.parametrize("name", PLANTED)
def test_a_pickle_in_a_checkpoint_file_runs_nothing(run, trained, tmp_path, capsys, name):
    marker = tmp_path / "PWNED"
    ckpt = ckpt_of(run)
    plant(ckpt / name, marker)
    if name != "manifest.json":
        write_manifest(ckpt)   # an adversary can fix the checksums too
    with pytest.raises(CheckpointError):
        Trainer(bpe_run(trained / "corpus", run), resume=True, progress=False)
    if name in ("config.json", "manifest.json"):
        with pytest.raises(CheckpointError):
            load(ckpt)
    else:
        load(ckpt)   # the weights and their config are intact and need nothing else
    for argv in (["info", str(ckpt)], ["eval", str(run), "--tokens", "256", "--device", "cpu"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err
        if name in ("config.json", "manifest.json", "tokenizer.json"):
            assert code == 2 and name in err, err
    assert not marker.exists()


@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl"])
def test_a_pickle_in_a_run_file_runs_nothing(run, trained, tmp_path, name):
    marker = tmp_path / "PWNED"
    plant(run / name, marker)
    if name == "config.yaml":
        with pytest.raises(CheckpointError, match="config.yaml is not a valid run config"):
            Trainer(bpe_run(trained / "corpus", run), resume=True, progress=False)
    else:   # not JSON lines: dropped when the resumed run repairs its metrics
        Trainer(bpe_run(trained / "corpus", run), resume=True, progress=False).fit()
        assert b"posix" not in (run / name).read_bytes()
    assert not marker.exists()


def test_an_old_trainer_pt_is_refused_unread(run, trained, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    ckpt = ckpt_of(run)
    (ckpt / "trainer.json").unlink()
    (ckpt / "trainer.safetensors").unlink()
    with open(ckpt / "trainer.pt", "wb") as f:   # what torch.save wrote: a zip with a pickle
        torch.save(Payload(marker), f)
    write_manifest(ckpt)
    with pytest.raises(CheckpointError, match=r"older seqlab.*never|older seqlab.*no longer reads"):
        Trainer(bpe_run(trained / "corpus", run), resume=True, progress=False)
    assert main(["info", str(run)]) == 0   # its weights are still usable
    capsys.readouterr()
    assert not marker.exists()


def test_a_trainer_pt_beside_a_new_checkpoint_is_ignored(run, trained, tmp_path):
    marker = tmp_path / "PWNED"
    plant(ckpt_of(run) / "trainer.pt", marker)
    t = Trainer(bpe_run(trained / "corpus", run), resume=True, progress=False)
    assert t.step == 3
    t.close()
    assert not marker.exists()


def test_the_package_has_no_unpickling_call():
    pattern = re.compile(r"torch\.load\(|weights_only|import pickle|pickle\.load|Unpickler|"
                         r"allow_pickle\s*=\s*True|import dill|joblib\.load")
    root = Path(seqlab.__file__).parent
    hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []

"""Pointer tasks in the paired loop: a step's instances depend on (seed, step) only, models
that cannot learn a task are refused by name, sorting is learned, a run resumes exactly and
saves and loads as a family of seqlab.models, and ``seqlab train`` trains one from its config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.models.pointer import PointerNet, decode
from seqlab.train.checkpoint import resolve_model_dir
from seqlab.train.pointer_task import PointerTask, check_model
from seqlab.train.seq2seq import PairsRunConfig, make_task, train_pairs

CONFIG = str(Path(__file__).parents[2] / "configs" / "pointer-tsp.yaml")
SORT = {"kind": "pointer", "max_n": 8, "in_dim": 1, "dim": 32, "encoder_layers": "lstm",
        "decoder_layers": "lstm", "mlp_hidden": 0, "mask_visited": True}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(tmp_path, name="run", model=SORT, **train):
    t = {"task": "sort", "min_size": 3, "max_size": 5, "steps": 4, "batch_size": 16,
         "lr": 1e-2, "warmup": 2, "eval_pairs": 32, "log_every": 1, "device": "cpu", **train}
    return PairsRunConfig.from_dict({"model": model, "train": t, "out_dir": str(tmp_path / name)})


def test_a_steps_instances_depend_on_seed_and_step_only(tmp_path):
    run = run_config(tmp_path)
    a, b = PointerTask(run.train, run.model), PointerTask(run.train, run.model)
    for step in (0, 7):
        x, y = a.batch(step), b.batch(step)
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2]
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    points, n, targets = a.batch(0)
    assert set(n.tolist()) <= {3, 4, 5} and len(targets) == 16
    for b_, t in enumerate(targets):   # the targets are the argsort, then the end id 8
        values = points[b_, :n[b_], 0]
        assert t == torch.argsort(values, stable=True).tolist() + [8]
    val = a.validation   # fixed, and drawn with a seed no training step uses
    assert sorted(set(val[1].tolist())) == [3, 4, 5]
    assert not any(torch.equal(val[0][:16], a.batch(s)[0]) for s in range(3))


@pytest.mark.parametrize("model, train, fragment", [
    ({"in_dim": 2}, {}, "model.in_dim = 2, but sort instances have 1"),
    ({"mask_visited": False}, {}, "set model.mask_visited = True"),
    ({"in_dim": 2, "mask_visited": True}, {"task": "hull"}, "set model.mask_visited = False"),
    ({}, {"max_size": 9}, "train.max_size = 9 exceeds model.max_n = 8"),
    ({"in_dim": 2, "max_n": 20}, {"task": "tsp", "max_size": 12}, "Held-Karp"),
])
def test_a_model_that_cannot_learn_the_task_is_refused(tmp_path, model, train, fragment):
    run = run_config(tmp_path, model={**SORT, **model}, **train)
    with pytest.raises(ConfigError, match=fragment):
        check_model(run.model, run.train)


def test_tasks_and_families_must_match(tmp_path):
    with pytest.raises(ConfigError, match="not a task of the pointer family: expected sort"):
        make_task(run_config(tmp_path, task="stdlib-docstrings"))
    encdec = {"kind": "encdec", "dim": 32, "encoder_layers": "attention(heads=2)",
              "decoder_layers": "attention(heads=2)", "cross_heads": 2}
    with pytest.raises(ConfigError, match="not a task of the encdec family: expected "
                                          "stdlib-docstrings"):
        make_task(run_config(tmp_path, model=encdec, task="tsp"))
    with pytest.raises(ConfigError, match="distillation"):
        make_task(run_config(tmp_path, teacher="runs/x"))


def test_sorting_is_learned_and_the_run_resumes_exactly(tmp_path):
    run = run_config(tmp_path, "straight", steps=120, save_every=60, eval_every=60)
    result = train_pairs(run, progress=False)
    first, last = result.evals[0], result.evals[-1]
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert last["accuracy"] > 0.5, result.evals   # exact sorted order of 3 to 5 numbers
    model = seqlab.models.load(resolve_model_dir(tmp_path / "straight"))
    assert isinstance(model, PointerNet) and first["accuracy"] <= last["accuracy"]
    # the same run killed after its step-60 checkpoint, then resumed
    shutil.copytree(tmp_path / "straight", tmp_path / "split", symlinks=True)
    shutil.rmtree(tmp_path / "split" / "checkpoints" / "step-000120")
    resumed = train_pairs(run_config(tmp_path, "split", steps=120, save_every=60,
                                     eval_every=60), resume=True, progress=False)
    assert resumed.losses == result.losses and resumed.evals == result.evals
    again = seqlab.models.load(resolve_model_dir(tmp_path / "split"))
    x = torch.rand(6, 5, 1)
    assert decode(model, x).tokens == decode(again, x).tokens
    for name, t in model.state_dict().items():
        assert torch.equal(t, again.state_dict()[name]), name


def test_seqlab_train_trains_a_pointer_network_from_its_config(tmp_path, capsys):
    from seqlab.cli import main

    out = tmp_path / "tsp"
    assert main(["train", CONFIG, "--quiet", "--steps", "2", "--batch-size", "8", "--dim", "16",
                 "--set", "train.eval_pairs=12", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step 2: validation" in text and "tour over optimal" in text
    ratio = float(text.split("tour over optimal ")[1].split(",")[0])
    assert ratio >= 1.0 - 1e-9   # no tour is shorter than Held-Karp's
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "family     : pointer" in info and "input positions and the end" in info
    assert main(["train", CONFIG, "--quiet", "--steps", "2", "--set", "train.task=sort",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "set model.in_dim = 1" in capsys.readouterr().err

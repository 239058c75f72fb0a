"""The trainer: schedule, bits per byte, exact resume, NaN stops, errors."""

import json
import math

import pytest
import torch

from seqlab.models.io import CheckpointError, load
from seqlab.train.checkpoint import latest_checkpoint
from seqlab.train.config import TrainConfig
from seqlab.train.optim import lr_at
from seqlab.train.trainer import Trainer, evaluate

from .conftest import TINY_BLOCK, tiny_run


def test_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(0.1)


def test_training_lowers_validation_bpb(small_corpus, tmp_path):
    r = Trainer(tiny_run(small_corpus, tmp_path / "run", steps=30, eval_every=0, lr=1e-2),
                progress=False).fit()
    assert r.stopped == "done" and r.step == 30
    first = sum(r.losses[:3]) / 3
    assert r.losses[-1] < first - 1.0
    assert r.evals[-1]["bpb"] < 6.0


def test_bpb_does_not_depend_on_eval_batch_size(small_corpus, tmp_path):
    t = Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False)
    a = evaluate(t.model, t.corpus, 32, 2048, 1, t.device)
    b = evaluate(t.model, t.corpus, 32, 2048, 7, t.device)
    assert a["tokens"] == b["tokens"] == 2048
    assert a["bpb"] == pytest.approx(b["bpb"], rel=1e-6)
    assert a["bpb"] == pytest.approx(a["loss"] / math.log(2), rel=1e-9)  # bytes: one token = one byte


@pytest.mark.parametrize("model", [None, TINY_BLOCK], ids=["lm", "block"])
def test_resume_gives_identical_losses(small_corpus, tmp_path, model):
    whole = Trainer(tiny_run(small_corpus, tmp_path / "a", model), progress=False).fit()
    first = Trainer(tiny_run(small_corpus, tmp_path / "b", model), progress=False).fit(stop_at=2)
    assert first.stopped == "paused" and latest_checkpoint(tmp_path / "b").name == "step-000002"
    rest = Trainer(tiny_run(small_corpus, tmp_path / "b", model), resume=True, progress=False).fit()
    assert first.losses + rest.losses == whole.losses  # exact, not approximate
    assert [e["bpb"] for e in rest.evals] == [e["bpb"] for e in whole.evals if e["step"] > 2]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(small_corpus, tmp_path):
    t = Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False)
    t.fit(stop_at=3)
    with torch.no_grad():
        t.model.norm.weight.fill_(float("nan"))
    r = t.fit()
    assert r.stopped == "nan"
    assert "at step 4" in r.message and "step-000003" in r.message
    good = load(latest_checkpoint(tmp_path / "run"))
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_existing_run_is_never_overwritten(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit(stop_at=1)
    with pytest.raises(CheckpointError, match="already holds a run.*--resume"):
        Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        Trainer(tiny_run(small_corpus, tmp_path / "empty"), resume=True, progress=False)


def test_resume_with_another_model_is_refused(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit(stop_at=1)
    run = tiny_run(small_corpus, tmp_path / "run")
    other = type(run).from_dict({**run.to_dict(), "model": {**run.model.to_dict(), "dim": 48}})
    with pytest.raises(CheckpointError, match=r"another model \(dim: checkpoint 32 vs requested 48"):
        Trainer(other, resume=True, progress=False)


def test_another_family_trains_saves_and_loads(small_corpus, tmp_path):
    from seqlab.models import BlockLM

    run = tiny_run(small_corpus, tmp_path / "run", TINY_BLOCK, steps=12, eval_every=12, lr=3e-3)
    result = Trainer(run, progress=False).fit()
    assert result.losses[-1] < result.losses[0] - 0.5
    saved = load(latest_checkpoint(tmp_path / "run"))
    assert isinstance(saved, BlockLM) and saved.cfg.block_size == 4 and saved.cfg.local_dim == 24
    from seqlab.train.config import read_run_file
    assert read_run_file(tmp_path / "run" / "config.yaml")["model"]["kind"] == "block"
    # A resumed run of another family is refused by name, not by a shape mismatch.
    with pytest.raises(CheckpointError, match=r"another model \(.*kind: checkpoint 'block' vs "
                                              r"requested 'lm'"):
        Trainer(tiny_run(small_corpus, tmp_path / "run", steps=12), resume=True, progress=False)


@pytest.mark.parametrize("name", ["trainer.safetensors", "trainer.json", "model.safetensors"])
def test_corrupt_trainer_state_is_named(small_corpus, tmp_path, name):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit(stop_at=1)
    f = latest_checkpoint(tmp_path / "run") / name
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"no intact checkpoint.*{name} has 100 bytes"):
        Trainer(tiny_run(small_corpus, tmp_path / "run"), resume=True, progress=False)


def test_metrics_are_json_lines(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit()
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["event"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in recs if r["event"] == "eval"] == [3, 6]
    assert all(r["tokens_per_s"] > 0 for r in recs)

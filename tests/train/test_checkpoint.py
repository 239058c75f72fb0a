"""Checkpoints: manifests, fallback to the newest intact one, pruning by step, leftovers,
metrics repair, the run lock, and checkpoints of older versions."""

import json
import os

import pytest
import torch

from seqlab.models.io import CheckpointError, load
from seqlab.train.checkpoint import list_checkpoints, resolve_model_dir, write_checkpoint
from seqlab.train.lock import LOCK_FILE, RunLock, RunLockedError
from seqlab.train.trainer import Trainer
from seqlab.train.trainer_state import load_trainer_state, save_trainer_state

from .conftest import tiny_run


def steps(run_dir):
    return [p.name for p in list_checkpoints(run_dir)]


def train_steps(run_dir):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in recs if r["event"] == "train"]


def test_trainer_state_round_trips_without_pickle(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.8, 0.9))
    p.grad = torch.randn(3, 2)
    opt.step()
    state = {"step": 7, "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "run": {"a": 1}}
    names = save_trainer_state(tmp_path, state)
    assert sorted(names) == sorted(os.listdir(tmp_path)) == ["trainer.json", "trainer.safetensors"]
    back = load_trainer_state(tmp_path)
    assert back["step"] == 7 and torch.equal(back["rng"], state["rng"]) and back["run"] == {"a": 1}
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=1e-2)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    for k in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(opt2.state_dict()["state"][0][k], opt.state_dict()["state"][0][k])


@pytest.mark.parametrize("content, message", [
    ('{"format": 1, "step": 2}', "missing or ill-typed field 'optimizer'"),
    ('{"format": 1, "step": -1, "optimizer": {"param_groups": [], "plain_state": {}}, "tensors": []}',
     "ill-typed step"),
    ("[1, 2]", "missing or ill-typed field"),
    ("not json", "not JSON"),
], ids=["no-optimizer", "negative-step", "a-list", "garbage"])
def test_trainer_json_of_the_wrong_structure_is_named(tmp_path, content, message):
    save_trainer_state(tmp_path, {"step": 1, "optimizer": {"state": {}, "param_groups": []},
                                  "rng": torch.get_rng_state()})
    (tmp_path / "trainer.json").write_text(content)
    with pytest.raises(CheckpointError, match="trainer.json cannot be used") as e:
        load_trainer_state(tmp_path)
    assert message in str(e.value)


def test_each_checkpoint_has_a_manifest_of_its_files(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit(stop_at=3)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000003"
    files = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert sorted(files) == sorted(p for p in os.listdir(ckpt) if p != "manifest.json")
    assert {"model.safetensors", "config.json", "trainer.safetensors", "trainer.json"} <= set(files)
    assert not (ckpt / "trainer.pt").exists()


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_so(small_corpus, tmp_path,
                                                                       capsys):
    whole = Trainer(tiny_run(small_corpus, tmp_path / "a"), progress=False).fit()
    Trainer(tiny_run(small_corpus, tmp_path / "b"), progress=False).fit(stop_at=6)
    run = tmp_path / "b"
    assert steps(run) == ["step-000003", "step-000006"]
    weights = run / "checkpoints" / "step-000006" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2000:] = b"\xff" * 2000      # the damage from the issue: same size, other bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"step-000006.*model.safetensors does not match"):
        resolve_model_dir(run)          # eval/generate/info refuse it by name
    t = Trainer(tiny_run(small_corpus, run), resume=True, progress=False)
    assert t.step == 3
    rest = t.fit()
    err = capsys.readouterr().err
    assert "resuming from step-000003, the newest intact checkpoint" in err
    assert "model.safetensors does not match its checksum" in err
    assert rest.losses == whole.losses[3:]          # still exact
    assert (run / "checkpoints" / "damaged-step-000006").is_dir()
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]   # the records of the lost steps were dropped


def test_no_intact_checkpoint_names_every_damaged_file(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit(stop_at=6)
    for ckpt in list_checkpoints(tmp_path / "run"):
        (ckpt / "trainer.json").write_text("{}")
    with pytest.raises(CheckpointError) as e:
        Trainer(tiny_run(small_corpus, tmp_path / "run"), resume=True, progress=False)
    msg = str(e.value)
    assert "no intact checkpoint" in msg
    assert "step-000003/trainer.json" in msg and "step-000006/trainer.json" in msg


def test_pruning_orders_by_step_number_and_keeps_the_new_checkpoint(tmp_path):
    model = load_tiny()
    state = {"step": 0, "optimizer": {"state": {}, "param_groups": []}, "rng": torch.get_rng_state()}
    for step in (999_998, 999_999, 1_000_000):   # by name, step-1000000 sorts first
        write_checkpoint(tmp_path, step, model, {**state, "step": step}, keep=2)
    assert steps(tmp_path) == ["step-999999", "step-1000000"]
    # A checkpoint written below the newest ones is never the one pruned.
    write_checkpoint(tmp_path, 3, model, {**state, "step": 3}, keep=2)
    assert steps(tmp_path) == ["step-000003", "step-999999", "step-1000000"]
    assert os.readlink(tmp_path / "latest") == "checkpoints/step-000003"


def load_tiny():
    from seqlab.models.lm import LM, LMConfig

    return LM(LMConfig(vocab_size=16, dim=8, layers=("gru",), mlp_hidden=8))


@pytest.mark.parametrize("link", ["missing", "dangling"])
def test_a_lost_latest_link_hides_no_checkpoint(small_corpus, tmp_path, link):
    run = tmp_path / "run"
    Trainer(tiny_run(small_corpus, run), progress=False).fit(stop_at=3)
    (run / "latest").unlink()
    if link == "dangling":
        (run / "latest").symlink_to("checkpoints/step-000099")
    assert resolve_model_dir(run).name == "step-000003"
    with pytest.raises(CheckpointError, match="already holds a run"):
        Trainer(tiny_run(small_corpus, run), progress=False)
    t = Trainer(tiny_run(small_corpus, run), resume=True, progress=False)
    assert t.step == 3 and (run / "latest").resolve().name == "step-000003"
    t.fit()
    assert steps(run) == ["step-000003", "step-000006"]


def test_leftovers_of_dead_writers_are_cleaned_at_start(small_corpus, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_run(small_corpus, run), progress=False).fit(stop_at=3)
    (run / "checkpoints" / ".tmp-step-000004-99999").mkdir()
    (run / "checkpoints" / ".tmp-step-000004-99999" / "model.safetensors").write_bytes(b"x")
    (run / ".latest-99999").symlink_to("checkpoints/step-000003")
    (run / ".config.yaml.tmp-99999").write_text("half")
    (run / "metrics.jsonl.tmp-99999").write_text("half")
    Trainer(tiny_run(small_corpus, run), resume=True, progress=False).close()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003"]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoints", "config.yaml",
                                                     "latest", "metrics.jsonl"]


def test_resume_drops_metrics_past_its_step_and_repairs_a_torn_line(small_corpus, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_run(small_corpus, run), progress=False).fit(stop_at=3)
    with open(run / "metrics.jsonl", "a") as f:   # as if killed after logging step 5
        f.write('{"event": "train", "step": 4, "loss": 9.0}\n'
                '{"event": "train", "step": 5, "loss": 9.0}\n{"event": "tra')
    Trainer(tiny_run(small_corpus, run), resume=True, progress=False).fit()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]   # every line is whole JSON
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] != 9.0 for r in recs if r["event"] == "train")


def test_a_second_writer_in_the_same_process_is_refused(small_corpus, tmp_path):
    run = tmp_path / "run"
    first = Trainer(tiny_run(small_corpus, run), progress=False)
    with pytest.raises(RunLockedError, match=rf"{run} is in use: seqlab process PID {os.getpid()}"):
        Trainer(tiny_run(small_corpus, run), progress=False)
    first.fit(stop_at=1)
    first.close()
    Trainer(tiny_run(small_corpus, run), resume=True, progress=False).fit(stop_at=2)
    assert steps(run) == ["step-000001", "step-000002"]


def test_the_lock_is_released_and_a_failed_start_leaves_no_folder(small_corpus, tmp_path):
    lock = RunLock.acquire(tmp_path / "a")
    assert (tmp_path / "a" / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()
    RunLock.acquire(tmp_path / "a").release()   # free again
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        Trainer(tiny_run(small_corpus, tmp_path / "new"), resume=True, progress=False)
    assert not (tmp_path / "new").exists()


def test_a_checkpoint_of_an_older_seqlab_is_refused_unread(small_corpus, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_run(small_corpus, run), progress=False).fit(stop_at=3)
    ckpt = run / "checkpoints" / "step-000003"
    for name in ("trainer.json", "trainer.safetensors", "manifest.json"):
        (ckpt / name).unlink()
    (ckpt / "trainer.pt").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"written by an older seqlab.*trainer.pt.*"
                       r"no longer reads.*seqlab train --init .*step-000003 --out NEW_FOLDER"):
        Trainer(tiny_run(small_corpus, run), resume=True, progress=False)
    # its weights still start a new run, as the message says
    new = tiny_run(small_corpus, tmp_path / "new")
    new = type(new).from_dict({**new.to_dict(), "init": str(ckpt)})
    t = Trainer(new, progress=False)
    want = load(ckpt).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in t.model.state_dict().items())

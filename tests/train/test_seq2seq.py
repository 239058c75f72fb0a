"""Training on pairs: both batch forms score the same tokens, the KL term is the one the
formula gives (zero against itself, pulling the student toward the teacher), a tiny copy task
learns, distillation runs from a saved decoder-only teacher, the run folder loads, a resumed
run equals an uninterrupted one, and ``seqlab train`` / ``seqlab train-pairs`` train one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError
from seqlab.errors import CheckpointError
from seqlab.models.encdec import EncDec, EncDecConfig, decode
from seqlab.train import seq2seq
from seqlab.train.checkpoint import list_checkpoints, resolve_model_dir
from seqlab.train.objectives import IGNORE
from seqlab.train.seq2seq import (PairsRunConfig, PairsTrainConfig, batch_order,
                                  decoder_only_batch, distill_kl, encdec_batch, pair_loss,
                                  scored_logits, train_pairs)

START, END = 256, 257
TINY_ENCDEC = {"kind": "encdec", "dim": 32, "encoder_layers": "attention(heads=2)",
               "decoder_layers": "attention(heads=2)", "cross_heads": 2, "mlp_hidden": 64}
TINY_LM = {"kind": "lm", "dim": 32, "layers": "attention(heads=2)*2", "mlp_hidden": 64}
CONFIG = str(Path(__file__).parents[2] / "configs" / "encdec-small.yaml")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def copy_pairs(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Sources of 2 to 6 letters from 'abcd'; the target is the source."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = [rng.randrange(97, 101) for _ in range(rng.randrange(2, 7))]
        out.append((s, list(s)))
    return out


def run_config(tmp_path, model, name="run", **train):
    t = {"steps": 4, "batch_size": 8, "lr": 3e-3, "warmup": 2, "eval_pairs": 16, "log_every": 1,
         "device": "cpu", **train}
    return PairsRunConfig.from_dict({"model": model, "train": t, "out_dir": str(tmp_path / name)})


def test_both_forms_score_the_same_tokens():
    pairs = [(list(b"def f(): pass"), list(b"Nothing.")), (list(b"x"), list(b"An x"))]
    ed = encdec_batch(pairs, START, END)
    lm = decoder_only_batch(pairs, START, END)
    assert ed.inputs[0].tolist() == [START, *b"Nothing."]
    assert ed.labels[1].tolist() == [*b"An x", END] + [IGNORE] * 4
    assert lm.inputs[1].tolist()[:6] == [*b"x", START, *b"An x"]
    for b, (s, t) in enumerate(pairs):   # label i sits where the input is its predecessor
        scored = (lm.labels[b] != IGNORE).nonzero()[:, 0].tolist()
        assert scored == list(range(len(s), len(s) + len(t) + 1))
        assert lm.inputs[b, len(s)] == START
    assert torch.equal(ed.labels[ed.labels != IGNORE], lm.labels[lm.labels != IGNORE])


def test_distill_kl_is_the_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for tau in (1.0, 2.0):
        p, q = (t / tau).softmax(-1), (s / tau).softmax(-1)
        want = (p * (p.log() - q.log())).sum(-1).mean()
        torch.testing.assert_close(distill_kl(s, t, tau), want)
    assert distill_kl(t, t).abs() < 1e-7
    # one gradient step on the student moves it toward the teacher
    s = s.clone().requires_grad_()
    kl = distill_kl(s, t)
    kl.backward()
    assert distill_kl(s.detach() - 0.5 * s.grad, t) < kl


def test_pair_loss_mixes_ce_and_kl():
    pairs = copy_pairs(6, 1)
    torch.manual_seed(0)
    student = seqlab.models.build_lm(vocab_size=258, dim=32, layers="attention(heads=2)").eval()
    teacher = seqlab.models.build_lm(vocab_size=258, dim=32, layers="attention(heads=2)").eval()
    cfg = PairsTrainConfig(distill_weight=0.3, distill_temperature=2.0)
    loss, parts = pair_loss(student, pairs, cfg, teacher)
    logits, labels = scored_logits(student, decoder_only_batch(pairs, START, END))
    t_logits, _ = scored_logits(teacher, decoder_only_batch(pairs, START, END))
    ce, kl = F.cross_entropy(logits, labels), distill_kl(logits, t_logits, 2.0)
    torch.testing.assert_close(loss, 0.7 * ce + 0.3 * 4.0 * kl)
    assert parts == pytest.approx({"ce": ce.item(), "kl": kl.item()})
    # a teacher that is the student: the KL term vanishes, the loss is (1 - w) CE
    loss, parts = pair_loss(student, pairs, cfg, student)
    assert parts["kl"] == pytest.approx(0, abs=1e-6)
    torch.testing.assert_close(loss, 0.7 * ce, atol=1e-5, rtol=0)
    # a student of the other form lines up with a decoder-only teacher
    torch.manual_seed(0)
    encdec = EncDec(EncDecConfig(dim=32, encoder_layers="attention(heads=2)",
                                 decoder_layers="attention(heads=2)", cross_heads=2)).eval()
    loss, parts = pair_loss(encdec, pairs, cfg, teacher)
    s_logits, _ = scored_logits(encdec, encdec_batch(pairs, START, END))
    assert parts["kl"] == pytest.approx(distill_kl(s_logits, t_logits, 2.0).item(), rel=1e-5)
    _, parts = pair_loss(encdec, pairs, PairsTrainConfig(distill_weight=0.0), teacher)
    assert parts.keys() == {"ce"}


def test_batch_order_is_seeded_and_sorted_in_pools():
    lengths = [random.Random(i).randrange(1, 100) for i in range(200)]
    a = batch_order(lengths, 4, seed=1, epoch=0)
    assert a == batch_order(lengths, 4, seed=1, epoch=0) != batch_order(lengths, 4, 1, 1)
    flat = [i for b in a for i in b]
    assert len(flat) == len(set(flat)) == 200 and all(len(b) == 4 for b in a)
    pool_of = {i: k // (4 * seq2seq.POOL) for k, i in enumerate(
        torch.randperm(200, generator=torch.Generator().manual_seed(1_000_003)).tolist())}
    for b in a:   # a batch is a run of one pool's sorted lengths
        assert len({pool_of[i] for i in b}) == 1
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)


def test_copy_task_learns_and_saves(tmp_path):
    run = run_config(tmp_path, TINY_ENCDEC, steps=60, eval_every=30, lr=5e-3)
    result = train_pairs(run, train=copy_pairs(256, 0), validation=copy_pairs(16, 1),
                         progress=False)
    assert result.stopped == "done" and result.step == 60
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert result.evals[-1]["loss"] < result.evals[0]["loss"]
    model = seqlab.models.load(resolve_model_dir(tmp_path / "run"))
    assert isinstance(model, EncDec)
    saved = json.loads((tmp_path / "run" / seq2seq.RUN_FILE).read_text())
    assert saved["step"] == 60 and len(saved["losses"]) == 60
    assert saved["run"]["model"]["kind"] == "encdec"
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train_pairs(run, train=copy_pairs(16, 0), validation=[], progress=False)


def test_distillation_from_a_saved_decoder_only_teacher(tmp_path):
    train, val = copy_pairs(64, 0), copy_pairs(8, 1)
    lm = run_config(tmp_path, TINY_LM, "teacher", steps=3)
    train_pairs(lm, train=train, validation=val, progress=False)
    teacher = seqlab.models.load(resolve_model_dir(tmp_path / "teacher"))
    assert teacher.vocab_size == 258   # grown from the LM's 256 bytes for start and end
    student = run_config(tmp_path, TINY_ENCDEC, "student", steps=3,
                         teacher=str(tmp_path / "teacher"), distill_weight=0.5)
    torch.manual_seed(5)
    model = seq2seq.build_model(student)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_pairs(student, model=model, train=train, validation=val, progress=False)
    assert result.step == 3
    # the first step's logged KL is the one of the untrained student against the teacher
    lines = (tmp_path / "student" / "metrics.jsonl").read_text().split("\n")
    records = [json.loads(x) for x in lines if x]
    first = next(r for r in records if r["event"] == "train")
    model.load_state_dict(before)
    pairs = [train[i] for i in batch_order([len(s) + len(t) for s, t in train], 8, 0, 0)[0]]
    with torch.no_grad():
        s_logits, _ = scored_logits(model, encdec_batch(pairs, START, END))
        t_logits, _ = scored_logits(teacher, decoder_only_batch(pairs, START, END))
    assert first["kl"] == pytest.approx(distill_kl(s_logits, t_logits).item(), rel=1e-4)
    bad = run_config(tmp_path, {**TINY_LM, "vocab_size": 300}, "bad",
                     teacher=str(tmp_path / "teacher"))
    with pytest.raises(CheckpointError, match="vocabulary of 258 ids and the student 300"):
        train_pairs(bad, train=train, validation=val, progress=False)


def test_mismatched_ids_are_named(tmp_path):
    run = run_config(tmp_path, {**TINY_ENCDEC, "vocab_size": 260, "end_id": 259})
    with pytest.raises(ConfigError, match="model.start_id, model.end_id = 256, 259"):
        seq2seq.build_model(run)
    with pytest.raises(ConfigError, match="PairsTrainConfig.distill_weight = 2"):
        PairsTrainConfig(distill_weight=2)


def test_cli_trains_pairs(tmp_path, monkeypatch, capsys):
    from seqlab.cli import main

    monkeypatch.setattr(seq2seq, "load_task",
                        lambda cfg, split: copy_pairs(32 if split == "train" else 8, 0))
    out = tmp_path / "cli"
    argv = ["train-pairs", CONFIG, "--quiet", "--steps", "2",
            "--batch-size", "4", "--out", str(out), "--set", "model.dim=32",
            "--set", "model.encoder_layers=attention(heads=2)",
            "--set", "model.decoder_layers=attention(heads=2)", "--set", "model.cross_heads=2",
            "--set", "train.device=cpu"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "step 2: validation" in text and f"run: {out}" in text
    assert main(["info", str(out)]) == 0
    assert "family     : encdec" in capsys.readouterr().out
    # generate reads the prompt as the source and prints the target alone, without the end id
    model = seqlab.models.load(resolve_model_dir(out))
    want = decode(model, torch.tensor([list(b"abca")]), None, "greedy", 6)
    text = bytes(t for t in want.tokens[0] if t < 256).decode("utf-8", "replace")
    for stream in ([], ["--stream"]):
        assert main(["generate", str(out), "--prompt", "abca", "--max-new-tokens", "6",
                     "--strategy", "greedy", *stream]) == 0
        assert capsys.readouterr().out == text + "\n"
    assert main(argv) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["train-pairs", CONFIG, "--model", "lm", "--out",
                 str(tmp_path / "other")]) == 2
    assert "of kind 'encdec': drop --model" in capsys.readouterr().err


def test_resume_equals_an_uninterrupted_run(tmp_path):
    import shutil

    train, val = copy_pairs(64, 0), copy_pairs(8, 1)
    straight = run_config(tmp_path, TINY_ENCDEC, "straight", steps=10, save_every=5)
    train_pairs(straight, train=train, validation=val, progress=False)
    # The same run killed after its step-5 checkpoint: its folder as it was then.
    shutil.copytree(tmp_path / "straight", tmp_path / "split", symlinks=True)
    shutil.rmtree(tmp_path / "split" / "checkpoints" / "step-000010")
    more = run_config(tmp_path, TINY_ENCDEC, "split", steps=10, save_every=5)
    with pytest.raises(ValueError, match="resume continues the run's own model"):
        train_pairs(more, resume=True, model=EncDec(more.model), train=train, progress=False)
    result = train_pairs(more, resume=True, train=train, validation=val, progress=False)
    assert result.step == 10 and len(result.losses) == 10
    a = seqlab.models.load(resolve_model_dir(tmp_path / "straight")).state_dict()
    b = seqlab.models.load(resolve_model_dir(tmp_path / "split")).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    runs = [json.loads((tmp_path / d / seq2seq.RUN_FILE).read_text()) for d in ("straight",
                                                                                 "split")]
    assert runs[0]["losses"] == runs[1]["losses"]
    assert [c.name for c in list_checkpoints(tmp_path / "split")] == ["step-000005",
                                                                       "step-000010"]
    # the records past step 5 were dropped on resume and written again, once
    steps = [[(r["event"], r["step"]) for r in map(json.loads, (tmp_path / d / "metrics.jsonl")
              .read_text().split("\n")[:-1])] for d in ("straight", "split")]
    assert steps[0] == steps[1] == [("train", i) for i in range(1, 11)] + [("eval", 10)]


def test_resume_refuses_a_changed_recipe(tmp_path):
    train, val = copy_pairs(32, 0), copy_pairs(4, 1)
    train_pairs(run_config(tmp_path, TINY_ENCDEC, steps=2), train=train, validation=val,
                progress=False)
    with pytest.raises(ConfigError, match="train.lr differs"):
        train_pairs(run_config(tmp_path, TINY_ENCDEC, steps=4, lr=1e-2), resume=True,
                    train=train, validation=val, progress=False)
    with pytest.raises(ConfigError, match="model config differs"):
        train_pairs(run_config(tmp_path, {**TINY_ENCDEC, "dim": 16, "cross_heads": 1}, steps=4),
                    resume=True, train=train, validation=val, progress=False)
    with pytest.raises(ConfigError, match="already at step 2"):
        train_pairs(run_config(tmp_path, TINY_ENCDEC, steps=1), resume=True, train=train,
                    validation=val, progress=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        train_pairs(run_config(tmp_path, TINY_ENCDEC, "empty"), resume=True, train=train,
                    validation=val, progress=False)


def test_seqlab_train_runs_the_paired_loop_and_resumes(tmp_path, monkeypatch, capsys):
    from seqlab.cli import main

    monkeypatch.setattr(seq2seq, "load_task",
                        lambda cfg, split: copy_pairs(32 if split == "train" else 8, 0))
    out = tmp_path / "run"
    shape = ["--dim", "32", "--set", "model.encoder_layers=attention(heads=2)",
             "--set", "model.decoder_layers=attention(heads=2)", "--set", "model.cross_heads=2"]
    assert main(["train", CONFIG, "--quiet", "--steps", "2", "--batch-size", "4", "--out",
                 str(out), "--device", "cpu", *shape]) == 0
    assert "step 2: validation" in capsys.readouterr().out
    # --resume needs neither the config file nor the shape: the run folder keeps them
    assert main(["train", "--quiet", "--resume", "--steps", "4", "--out", str(out)]) == 0
    assert "step 4: validation" in capsys.readouterr().out
    assert [c.name for c in list_checkpoints(out)] == ["step-000002", "step-000004"]
    assert main(["train", CONFIG, "--mixers", "mamba", "--seq-len", "64", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--mixers, --seq-len: the encdec family trains on (source, target) pairs" in err
    assert main(["train", "--model", "encdec", "--data", "x.txt"]) == 2
    assert "--data: the encdec family" in capsys.readouterr().err


def test_the_stream_trainer_refuses_an_encoder_decoder(small_corpus, tmp_path):
    from seqlab.train.trainer import Trainer
    from tests.train.conftest import tiny_run

    run = tiny_run(small_corpus, tmp_path / "run", TINY_ENCDEC)
    with pytest.raises(ConfigError, match="seqlab.train.seq2seq.train_pairs"):
        Trainer(run, progress=False)

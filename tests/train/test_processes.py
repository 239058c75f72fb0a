"""Tests that run real processes: kill -9 and resume, Ctrl-C, torchrun with 2 CPU processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TRAIN = [sys.executable, "-m", "seqlab.cli", "train", "--quiet", "--dim", "32",
         "--mixers", "attention,gru", "--batch-size", "4", "--seq-len", "32",
         "--set", "train.warmup=2", "--set", "train.log_every=1", "--set", "train.eval_tokens=512",
         "--set", "model.mlp_hidden=64", "--set", "model.mixer_options.attention.heads=2"]


def losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["event"] == "train":
            assert out.setdefault(r["step"], r["loss"]) == r["loss"]  # a replayed step repeats exactly
    return out


def env(tmp_path):
    return {**os.environ, "SEQLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def wait_for(pred, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_kill_9_then_resume_matches_uninterrupted(small_corpus, tmp_path):
    common = TRAIN + ["--data", str(small_corpus), "--steps", "40", "--set", "train.ckpt_every=5",
                      "--set", "train.eval_every=0"]
    ref = subprocess.run(common + ["--out", str(tmp_path / "ref")], env=env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    p = subprocess.Popen(common + ["--out", str(run)], env=env(tmp_path),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: (run / "checkpoints" / "step-000010").exists())
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (run / "latest").exists()
    res = subprocess.run(common + ["--out", str(run), "--resume"], env=env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got, want = losses(run), losses(tmp_path / "ref")
    assert got == want and len(want) == 40


def test_ctrl_c_saves_and_says_how_to_resume(small_corpus, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen(TRAIN + ["--data", str(small_corpus), "--steps", "100000", "--out", str(run)],
                         env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (run / "metrics.jsonl").exists() and losses(run))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "Resume with: seqlab train --resume" in out
    assert (run / "latest").exists()
    step = int((run / "latest").resolve().name.split("-")[1])
    assert step >= 1 and max(losses(run)) == step


@pytest.mark.slow
def test_torchrun_two_processes_match_one(small_corpus, tmp_path):
    common = ["--data", str(small_corpus), "--steps", "5", "--set", "train.eval_every=0",
              "--batch-size", "8"]
    one = subprocess.run(TRAIN + common + ["--out", str(tmp_path / "one")], env=env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), "-m", "seqlab.cli"] + TRAIN[3:] + \
        common + ["--out", str(tmp_path / "two")]
    two = subprocess.run(cmd, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert a.keys() == b.keys() == set(range(1, 6))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-5)
    # the trained weights agree too
    from seqlab.models import load

    wa, wb = load(tmp_path / "one" / "latest"), load(tmp_path / "two" / "latest")
    for (n, pa), (_, pb) in zip(wa.named_parameters(), wb.named_parameters()):
        assert (pa - pb).abs().max() < 1e-4, n

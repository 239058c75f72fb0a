"""Tests that run real processes: kill -9 and resume, Ctrl-C and SIGTERM, one writer per run
folder, torchrun with 2 CPU processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TRAIN = [sys.executable, "-m", "seqlab.cli", "train", "--quiet", "--dim", "32",
         "--mixers", "attention+gru", "--batch-size", "4", "--seq-len", "32",
         "--set", "train.warmup=2", "--set", "train.log_every=1", "--set", "train.eval_tokens=512",
         "--set", "model.mlp_hidden=64", "--set", "model.mixer_options.attention.heads=2"]


def losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["event"] == "train":
            assert r["step"] not in out, f"step {r['step']} logged twice"  # resume drops replays
            out[r["step"]] = r["loss"]
    return out


def started_training(run):
    try:
        return (run / "metrics.jsonl").exists() and bool(losses(run))
    except (json.JSONDecodeError, AssertionError):   # a line being written
        return False


def newest_step(run):
    return int((run / "latest").resolve().name.split("-")[1])


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
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_and_says_how_to_resume(small_corpus, tmp_path, sig, code):
    run = tmp_path / "run"
    p = subprocess.Popen(TRAIN + ["--data", str(small_corpus), "--steps", "100000", "--out", str(run)],
                         env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: started_training(run))
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert "Resume with: seqlab train --resume" in out
    assert (run / "latest").exists()
    step = newest_step(run)
    assert step >= 1 and max(losses(run)) == step


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(small_corpus, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen(TRAIN + ["--data", str(small_corpus), "--steps", "100000", "--out", str(run),
                                  "--set", "train.ckpt_every=1"],
                         env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: started_training(run) and (run / "latest").exists())
    p.send_signal(signal.SIGINT)
    time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "Resume with: seqlab train --resume" in out + err
    res = subprocess.run(TRAIN + ["--data", str(small_corpus), "--out", str(run), "--resume",
                                  "--steps", str(newest_step(run) + 2)],
                         env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr   # whatever the second Ctrl-C cut short resumes


def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path):
    run = tmp_path / "run"
    # The default corpus (the standard library) is read and cached first: seconds of start-up.
    p = subprocess.Popen(TRAIN + ["--steps", "5", "--out", str(run)], env=env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (run / ".lock").exists())
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "seqlab train: interrupted" in err
    assert not (run / "checkpoints").exists()
    corpora = tmp_path / "cache" / "corpora"
    assert not [q for q in corpora.iterdir() if ".tmp" in q.name] if corpora.exists() else True


def test_a_second_writer_exits_2_naming_the_folder_and_the_pid(small_corpus, tmp_path):
    run = tmp_path / "run"
    cmd = TRAIN + ["--data", str(small_corpus), "--out", str(run)]
    first = subprocess.Popen(cmd + ["--steps", "100000"], env=env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: started_training(run) and (run / "latest").exists())
        for extra in ([], ["--resume"]):
            second = subprocess.run(cmd + ["--steps", "100000"] + extra, env=env(tmp_path),
                                    capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, second.stderr
            assert f"run folder {run} is in use: seqlab process PID {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None   # the first writer went on undisturbed
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    # Its exit freed the folder: a resume now runs.
    res = subprocess.run(cmd + ["--resume", "--steps", str(newest_step(run) + 1)], env=env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    losses(run)   # one record per step: the refused writers logged nothing


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

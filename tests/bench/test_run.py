"""Sweeps: one JSON line per cell, skipping finished cells, recording failures."""

import json
import time
from types import SimpleNamespace

import pytest
import torch

import seqlab.bench.run as run_module
from seqlab.bench.fit import ProbeTrainConfig
from seqlab.bench.results import append_record, read_results
from seqlab.bench.run import run_sweep
from seqlab.bench.sweep import SweepConfig

REQUIRED = {"key", "config", "probe", "mixer", "dim", "seed", "seq_len", "status", "metrics",
            "by_length", "wall_s", "train_s", "params", "state_bytes", "final_loss", "steps"}
SMOKE = ProbeTrainConfig(steps=4, batch_size=4, warmup=1, eval_batches=1, eval_batch_size=4)


def smoke_sweep(**kw):
    base = dict(probe="test-copy-first", mixers=("attention", "lstm"), dims=(8, 16), train=SMOKE,
                model={"mixer_options": {"attention": {"heads": 2}}, "mlp_hidden": 16})
    return SweepConfig(**{**base, **kw})


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sweep_writes_one_line_per_cell_and_skips_them_next_time(tmp_path):
    out = tmp_path / "r.jsonl"
    summary = run_sweep(smoke_sweep(), out, device="cpu", progress=False)
    recs = lines(out)
    assert len(recs) == 4 and len(summary.ran) == 4 and summary.skipped == 0
    for r in recs:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["status"] == "ok" and 0 <= r["metrics"]["accuracy"] <= 1
        assert r["params"] > 0 and r["state_bytes"] > 0 and r["steps"] == 4
    assert {(r["mixer"], r["dim"]) for r in recs} == {(m, d) for m in ("attention", "lstm") for d in (8, 16)}
    # Recurrent state is fixed in length; attention's grows.
    lstm = next(r for r in recs if r["mixer"] == "lstm" and r["dim"] == 8)
    assert lstm["state_bytes"] == lstm["by_length"][0]["state_bytes"]

    again = run_sweep(smoke_sweep(), out, device="cpu", progress=False)
    assert again.ran == [] and again.skipped == 4
    assert len(lines(out)) == 4

    changed = run_sweep(smoke_sweep(dims=(16, 24)), out, device="cpu", progress=False)
    assert [(r["mixer"], r["dim"]) for r in changed.ran] == [("attention", 24), ("lstm", 24)]
    assert len(lines(out)) == 6


def test_test_lengths_are_scored_and_impossible_ones_recorded(tmp_path):
    out = tmp_path / "r.jsonl"
    run_sweep(smoke_sweep(mixers=("attention",), dims=(8,), test_lengths=(16, 64)), out,
              device="cpu", progress=False)
    (rec,) = lines(out)
    by = {e["seq_len"]: e for e in rec["by_length"]}
    assert list(by) == [8, 16, 64]
    assert rec["metrics"]["accuracy"] == by[8]["accuracy"]
    assert 0 <= by[16]["accuracy"] <= 1 and by[16]["state_bytes"] == 2 * by[8]["state_bytes"]
    assert "accuracy" not in by[64] and "seq_len = 64 is not allowed" in by[64]["error"]


def test_a_nan_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = run_module.build_model

    def poisoned(cell, probe):
        model = real(cell, probe)
        if cell.mixer == "attention":
            with torch.no_grad():
                model.norm.weight.fill_(float("nan"))
        return model

    monkeypatch.setattr(run_module, "build_model", poisoned)
    out = tmp_path / "r.jsonl"
    summary = run_sweep(smoke_sweep(dims=(8,)), out, device="cpu", progress=False)
    status = {r["mixer"]: r for r in lines(out)}
    assert status["attention"]["status"] == "nan" and "at step 1" in status["attention"]["message"]
    assert status["lstm"]["status"] == "ok"
    assert [r["mixer"] for r in summary.failed] == ["attention"]
    # A diverged cell is a finished result: not run again.
    assert run_sweep(smoke_sweep(dims=(8,)), out, device="cpu", progress=False).ran == []


def test_a_cell_that_raises_is_recorded_and_retried(tmp_path, monkeypatch):
    real = run_module.fit_probe
    monkeypatch.setattr(run_module, "fit_probe", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    out = tmp_path / "r.jsonl"
    run_sweep(smoke_sweep(mixers=("lstm",), dims=(8,)), out, device="cpu", progress=False)
    (rec,) = lines(out)
    assert rec["status"] == "error" and rec["message"] == "RuntimeError: boom" and "boom" in rec["traceback"]
    monkeypatch.setattr(run_module, "fit_probe", real)
    again = run_sweep(smoke_sweep(mixers=("lstm",), dims=(8,)), out, device="cpu", progress=False)
    assert [r["status"] for r in again.ran] == ["ok"]
    assert [r["status"] for r in read_results(out).latest()] == ["ok"]


def test_a_line_cut_short_by_a_kill_is_skipped_and_not_glued_to_the_next(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"key": "a", "status": "ok"}\n{"key": "b", "sta')
    append_record(out, {"key": "c", "status": "ok"})
    res = read_results(out)
    assert [r["key"] for r in res.records] == ["a", "c"] and res.bad_lines == [2]


def test_same_seed_gives_the_same_record(tmp_path):
    a = run_sweep(smoke_sweep(mixers=("lstm",), dims=(8,)), tmp_path / "a.jsonl", device="cpu",
                  progress=False).ran[0]
    b = run_sweep(smoke_sweep(mixers=("lstm",), dims=(8,)), tmp_path / "b.jsonl", device="cpu",
                  progress=False).ran[0]
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=0, abs=0)
    assert a["metrics"] == b["metrics"]


def test_time_limit_stops_the_cell_in_training_and_starts_no_other(tmp_path, monkeypatch):
    """A fake clock that moves 1 s per reading: limit 3.5 s is read at the start (0), before
    the first cell (1) and after its steps 1, 2 and 3 (2, 3, 4 >= 3.5: stop there)."""
    clock = iter(range(100))
    monkeypatch.setattr(run_module, "time", SimpleNamespace(
        monotonic=lambda: float(next(clock)), perf_counter=time.perf_counter, time=time.time))
    out = tmp_path / "r.jsonl"
    summary = run_sweep(smoke_sweep(), out, device="cpu", progress=False, time_limit=3.5)
    (rec,) = lines(out)
    assert rec["status"] == "time-limit" and rec["steps"] == 3 and rec["metrics"] == {}
    assert "at step 3 of 4" in rec["message"] and summary.not_started == 3
    # Neither the stopped cell nor the unstarted ones count as finished.
    monkeypatch.setattr(run_module, "time", time)
    again = run_sweep(smoke_sweep(), out, device="cpu", progress=False)
    assert len(again.ran) == 4 and all(r["status"] == "ok" for r in again.ran)
    assert again.ran[0]["key"] == rec["key"] and again.ran[0]["steps"] == 4


def test_a_sparse_cell_records_its_realised_sparsity(tmp_path):
    from dataclasses import replace

    from seqlab.train.sparsity import SparsityConfig

    train = replace(SMOKE, sparsity=SparsityConfig(method="random_graph"))
    out = tmp_path / "r.jsonl"
    run_sweep(smoke_sweep(mixers=("lstm",), dims=(8,), sparsities=(0.0, 0.5), train=train), out,
              device="cpu", progress=False)
    dense, sparse = lines(out)
    assert "sparsity" not in dense
    # A random graph's density moves in steps of its degree: near the target, rarely on it.
    assert 0.3 < sparse["sparsity"] < 0.7 and sparse["config"]["train"]["sparsity"]["target"] == 0.5

"""Sparsity (seqlab/train/sparsity.py): the cubic schedule, random-graph masks against
networkx, pruned weights and moments staying zero through AdamW, masks across an exact
resume, and sparse training end to end (trainer, CLI, probe sweeps)."""

import json

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from seqlab.bench.fit import ProbeTrainConfig, fit_probe
from seqlab.bench.sweep import CellConfig, SweepConfig
from seqlab.config import ConfigError
from seqlab.models.io import CheckpointError, load
from seqlab.models.lm import LM, LMConfig
from seqlab.tasks import probes
from seqlab.train.checkpoint import latest_checkpoint
from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step
from seqlab.train.sparsity import Pruner, SparsityConfig, cubic_sparsity, graph_adjacency, \
    graph_degree, recurrent_matrices
from seqlab.train.trainer import Trainer
from seqlab.train.trainer_state import load_trainer_state

from .conftest import tiny_run


def tiny_lm(layers=("lstm", "gru"), dim=32) -> LM:
    torch.manual_seed(0)
    return LM(LMConfig(vocab_size=16, dim=dim, layers=list(layers), mlp_hidden=32))


def recurrent_sparsity(model) -> dict[str, float]:
    return {n: float((p == 0).double().mean()) for n, (p, _, _) in recurrent_matrices(model).items()}


# -- the schedule ----------------------------------------------------------------------------------
def test_cubic_schedule_values():
    # s_t = s_f (1 - (1 - (t - t0) / (t_end - t0))^3), here t0 = 10, t_end = 110, s_f = 0.9
    assert cubic_sparsity(0, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(10, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(35, 0.9, 10, 110) == pytest.approx(0.9 * (1 - 0.75 ** 3))   # 0.52031
    assert cubic_sparsity(60, 0.9, 10, 110) == pytest.approx(0.9 * 0.875)             # 0.7875
    assert cubic_sparsity(85, 0.9, 10, 110) == pytest.approx(0.9 * (1 - 0.25 ** 3))   # 0.88594
    assert cubic_sparsity(110, 0.9, 10, 110) == 0.9
    assert cubic_sparsity(500, 0.9, 10, 110) == 0.9


def test_pruning_happens_on_the_schedules_steps():
    model = tiny_lm()
    gradual = Pruner(SparsityConfig(target=0.9, start_step=10, end_step=110, frequency=25), model, 200)
    assert [s for s in range(201) if gradual.due(s)] == [10, 35, 60, 85, 110]
    assert gradual.target_at(60) == pytest.approx(0.7875) and gradual.final_step == 110
    uneven = Pruner(SparsityConfig(target=0.5, start_step=0, end_step=10, frequency=4), model, 20)
    assert [s for s in range(21) if uneven.due(s)] == [0, 4, 8, 10]   # the end is always one
    once = Pruner(SparsityConfig(target=0.5, schedule="one_shot", start_step=7), model, 20)
    assert [s for s in range(21) if once.due(s)] == [7] and once.target_at(6) == 0.0
    # end_step None: 3/4 of the run
    assert Pruner(SparsityConfig(target=0.5), model, 200).cfg.end_step == 150


def test_magnitude_pruning_keeps_the_largest_weights_and_never_revives():
    model = tiny_lm()
    pruner = Pruner(SparsityConfig(target=0.75, schedule="one_shot", start_step=0), model, 10)
    before = {n: p.detach().clone() for n, p in pruner.params.items()}
    pruner.start()
    for name, p in pruner.params.items():
        kept = before[name][pruner.masks[name]].abs()
        dropped = before[name][~pruner.masks[name]].abs()
        assert int((~pruner.masks[name]).sum()) == round(0.75 * p.numel())
        assert kept.min() >= dropped.max()
        torch.testing.assert_close(p[pruner.masks[name]], before[name][pruner.masks[name]])
    gradual = Pruner(SparsityConfig(target=0.8, start_step=0, end_step=4, frequency=1), model, 4)
    masks = []
    for step in range(5):
        with torch.no_grad():   # weights move between prunings; masks must still only shrink
            for p in gradual.params.values():
                p.add_(torch.randn_like(p))
        gradual.update(step)
        masks.append({n: m.clone() for n, m in gradual.masks.items()})
    for a, b in zip(masks, masks[1:]):
        assert all(not (b[n] & ~a[n]).any() for n in a)
    assert gradual.sparsity() == pytest.approx(0.8, abs=1e-3)


# -- random graphs -------------------------------------------------------------------------------
def _blocks(mask: torch.Tensor, gates: int) -> list[torch.Tensor]:
    return list(mask.chunk(gates, dim=0))


@pytest.mark.parametrize("p", [0.0, 0.3], ids=["ring", "rewired"])
def test_watts_strogatz_masks_are_networkx_graphs(p):
    model = tiny_lm(("lstm", "gru", "rnn"))
    pruner = Pruner(SparsityConfig(method="random_graph", k=6, p=p, seed=3), model, 10)
    pruner.start()
    for i, (name, (param, gates, hidden)) in enumerate(recurrent_matrices(model).items()):
        g = nx.watts_strogatz_graph(hidden, 6, p, seed=3 + i)
        want = torch.as_tensor(nx.to_numpy_array(g, nodelist=range(hidden)) > 0)
        assert gates == {0: 4, 1: 3, 2: 1}[i]
        for block in _blocks(pruner.masks[name], gates):   # every gate has the same graph
            assert torch.equal(block, want)
        degrees = pruner.masks[name][:hidden].sum(1)
        assert degrees.tolist() == [d for _, d in sorted(g.degree())]
        if p == 0.0:
            assert (degrees == 6).all()                    # the ring lattice: degree k each
        assert int(pruner.masks[name].sum()) == gates * hidden * 6   # n k / 2 edges, both ways
        assert torch.equal(param != 0, pruner.masks[name])  # the weights follow the mask
        assert not pruner.masks[name][:hidden].diagonal().any()
    assert pruner.sparsity() == pytest.approx(1 - 6 / 32)


def test_barabasi_albert_masks_are_networkx_graphs():
    model = tiny_lm()
    pruner = Pruner(SparsityConfig(method="random_graph", graph="barabasi_albert", m=3, seed=5),
                    model, 10)
    pruner.start()
    n = 32
    for i, (name, (_, gates, hidden)) in enumerate(recurrent_matrices(model).items()):
        g = nx.barabasi_albert_graph(n, 3, seed=5 + i)
        assert torch.equal(pruner.masks[name][:hidden], graph_adjacency("barabasi_albert", n, 3, 0.0,
                                                                        5 + i))
        degrees = pruner.masks[name][:hidden].sum(1)
        assert degrees.tolist() == [d for _, d in sorted(g.degree())]
        assert int(degrees.min()) >= 3 and int(degrees.sum()) == 2 * (n - 3) * 3
        assert pruner.sparsity_by_matrix()[name] == pytest.approx(1 - 2 * 3 * (n - 3) / n ** 2)
        # preferential attachment: the oldest units are hubs, far above the ring's even degree
        assert int(degrees.max()) > 2 * 3


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95])
def test_graph_degree_from_target_is_the_nearest_density(target):
    n = 64
    k = graph_degree("watts_strogatz", n, target)
    assert k % 2 == 0 and abs((1 - k / n) - target) <= 1 / n + 1e-12
    m = graph_degree("barabasi_albert", n, target)
    density = 2 * m * (n - m) / n ** 2
    assert all(abs(1 - density - target) <= abs(1 - 2 * c * (n - c) / n ** 2 - target) + 1e-12
               for c in range(1, n))


# -- AdamW -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [
    SparsityConfig(target=0.7, params="mixers", schedule="one_shot", start_step=0),
    SparsityConfig(target=0.9, start_step=2, end_step=10, frequency=2),   # pruned mid-training
    SparsityConfig(method="random_graph", graph="barabasi_albert", m=4),
], ids=["one-shot-all-mixer-matrices", "gradual-recurrent", "barabasi-albert"])
def test_masked_weights_and_moments_stay_zero_through_adamw(sparsity):
    model = tiny_lm()
    cfg = OptimizerConfig(steps=16, lr=3e-2, warmup=2, weight_decay=0.5, grad_clip=1.0,
                          precision="float32")
    opt = make_optimizer(model, cfg)
    pruner = Pruner(sparsity, model, cfg.steps)
    pruner.start(opt)
    assert all(any(p is q for g in opt.param_groups if g["weight_decay"] > 0 for q in g["params"])
               for p in pruner.params.values())   # the pruned matrices are decayed ones
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    masked_grads = []

    def backward() -> float:
        x = torch.randint(0, 16, (4, 12), generator=gen)
        logits, _ = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 16), x[:, 1:].reshape(-1))
        loss.backward()
        masked_grads.append(sum(float(p.grad[~pruner.masks[n]].abs().sum())
                                for n, p in pruner.params.items()))
        return loss.item()

    for step in range(cfg.steps):
        _, problem = optimizer_step(model, opt, step, cfg, backward, pruner)
        assert problem is None
    assert max(masked_grads[-5:]) > 0   # the gradients did push at the pruned weights
    total_masked = 0
    for name, p in pruner.params.items():
        mask = pruner.masks[name]
        total_masked += int((~mask).sum())
        assert (p[~mask] == 0.0).all()
        state = opt.state[p]
        assert (state["exp_avg"][~mask] == 0).all() and (state["exp_avg_sq"][~mask] == 0).all()
        assert (p[mask] != initial[name][mask]).float().mean() > 0.99   # the kept weights trained
    assert total_masked > 0
    assert pruner.sparsity() == pytest.approx(pruner.cfg.target or 1 - 2 * 4 * 28 / 32 ** 2,
                                              abs=1e-3)


# -- the trainer: resume and end to end ----------------------------------------------------------
def sparse_run(corpus, out, sparsity, **train):
    run = tiny_run(corpus, out, **train)
    data = run.to_dict()
    data["model"].update(layers=["gru", "lstm"], mixer_options={})
    data["sparsity"] = sparsity
    return type(run).from_dict(data)


SCHEDULE = {"target": 0.9, "start_step": 0, "end_step": 4, "frequency": 1}


def test_masks_survive_save_and_resume_exactly(small_corpus, tmp_path):
    whole = Trainer(sparse_run(small_corpus, tmp_path / "a", SCHEDULE), progress=False)
    whole_result = whole.fit()
    first = Trainer(sparse_run(small_corpus, tmp_path / "b", SCHEDULE), progress=False)
    part = first.fit(stop_at=3)
    ckpt = latest_checkpoint(tmp_path / "b")
    saved = load_trainer_state(ckpt)["sparsity"]
    assert sorted(saved) == sorted(first.pruner.masks) and len(saved) == 2
    assert all(torch.equal(saved[n], first.pruner.masks[n]) for n in saved)
    assert all(k.startswith(("optimizer.", "rng.", "sparsity.mask."))
               for k in load_file(str(ckpt / "trainer.safetensors")))
    first.close()
    rest_trainer = Trainer(sparse_run(small_corpus, tmp_path / "b", SCHEDULE), resume=True,
                           progress=False)
    assert all(torch.equal(saved[n], rest_trainer.pruner.masks[n]) for n in saved)
    rest = rest_trainer.fit()
    assert part.losses + rest.losses == whole_result.losses   # exact, as for dense runs
    assert all(torch.equal(whole.pruner.masks[n], rest_trainer.pruner.masks[n]) for n in saved)
    whole.close()
    rest_trainer.close()
    # The checkpoint's masks belong to its options: another target is refused.
    other = {**SCHEDULE, "target": 0.5}
    with pytest.raises(CheckpointError, match=r"other sparsity options \(target: run 0.9 vs requested 0.5"):
        Trainer(sparse_run(small_corpus, tmp_path / "b", other), resume=True, progress=False)


@pytest.mark.parametrize("sparsity", [
    {"target": 0.9, "method": "magnitude"},
    {"target": 0.9, "method": "random_graph", "graph": "watts_strogatz"},
], ids=["magnitude", "watts-strogatz"])
def test_sparse_training_reaches_the_target_in_recurrent_matrices(small_corpus, tmp_path, sparsity):
    run = sparse_run(small_corpus, tmp_path / "run", sparsity, steps=8, eval_every=0, ckpt_every=0)
    t = Trainer(run, progress=False)
    result = t.fit()
    t.close()
    assert result.stopped == "done" and len(result.losses) == 8
    model = load(latest_checkpoint(tmp_path / "run"))
    got = recurrent_sparsity(model)
    assert sorted(got) == ["blocks.0.mixer.rnn.weight_hh_l0", "blocks.1.mixer.rnn.weight_hh_l0"]
    # magnitude: round(0.9 n) zeros exactly; Watts-Strogatz over 32 units: k = 4, 1 - 4/32
    want = 0.875 if sparsity["method"] == "random_graph" else 0.9
    assert all(v == pytest.approx(want, abs=1e-3) for v in got.values())
    assert all((p != 0).float().mean() > 0.99 for n, p in model.named_parameters()
               if n.endswith("weight_ih_l0"))   # only the recurrent matrices were pruned
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["sparsity"] for r in logged if r["event"] == "train"][-1] == pytest.approx(want, abs=1e-3)


def test_cli_train_with_sparsity_set(small_corpus, tmp_path):
    from seqlab.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--quiet", "--data", str(small_corpus), "--mixers", "gru", "--dim", "32",
               "--steps", "4", "--batch-size", "2", "--seq-len", "32", "--out", str(out),
               "--set", "train.eval_tokens=256", "--set", "sparsity.target=0.9",
               "--set", "sparsity.method=magnitude", "--set", "sparsity.frequency=1"])
    assert rc == 0
    assert recurrent_sparsity(load(latest_checkpoint(out))) == {
        "blocks.0.mixer.rnn.weight_hh_l0": pytest.approx(0.9, abs=1e-3)}
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())["sparsity"]
    assert saved["target"] == 0.9 and saved["end_step"] == 3   # resolved: 3/4 of 4 steps


# -- configs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: SparsityConfig(target=1.0), r"SparsityConfig.target = 1.0 .*\[0, 1\)"),
    (lambda: SparsityConfig(target=0.5, frequency=0), r"frequency = 0"),
    (lambda: SparsityConfig(target=0.5, start_step=10, end_step=5), r"end_step = 5 .*after start_step"),
    (lambda: SparsityConfig(target=0.5, method="random_graph", params="mixers"), r"params = 'mixers'"),
    (lambda: SparsityConfig(k=4), r"SparsityConfig.k = 4 .*random_graph"),
    (lambda: SparsityConfig(method="random_graph", k=3), r"k = 3 .*even"),
    (lambda: SparsityConfig(method="random_graph", k=4, target=0.5), r"target = 0.5 .*give one"),
    (lambda: SparsityConfig(target=0.5, method="random_graph", start_step=5), r"start_step = 5"),
    (lambda: SparsityConfig(target=0.5, method="bogus"), r"method = 'bogus'"),
    (lambda: SparsityConfig(target=0.5, schedule="one_shot", end_step=9), r"end_step = 9 .*one_shot"),
], ids=["target", "frequency", "end-before-start", "graph-on-all", "k-without-graph", "odd-k",
        "k-and-target", "graph-schedule", "method", "one-shot-end"])
def test_bad_options_name_the_field(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_models_and_targets_that_do_not_fit_are_refused():
    with pytest.raises(ConfigError, match="selects no matrix.*lstm, gru and rnn"):
        Pruner(SparsityConfig(target=0.5), LM(LMConfig(vocab_size=16, dim=32, layers=["attention"])), 10)
    with pytest.raises(ConfigError, match="at most half dense"):
        Pruner(SparsityConfig(target=0.3, method="random_graph", graph="barabasi_albert"), tiny_lm(), 10)
    with pytest.raises(ConfigError, match="end_step = 50 .*at most the run's steps = 20"):
        Pruner(SparsityConfig(target=0.5, end_step=50), tiny_lm(), 20)
    with pytest.raises(ConfigError, match="k = 40 .*32 hidden units"):
        Pruner(SparsityConfig(method="random_graph", k=40), tiny_lm(), 20)


# -- probe sweeps ---------------------------------------------------------------------------------
def test_sweeps_have_a_sparsity_axis_and_dense_keys_do_not_change():
    base = SweepConfig(probe="induction", mixers=("lstm",), dims=(16,))
    sweep = SweepConfig(probe="induction", mixers=("lstm",), dims=(16,), sparsities=(0.0, 0.5, 0.9),
                        train=ProbeTrainConfig(sparsity=SparsityConfig(method="random_graph")))
    cells = sweep.cells()
    assert [c.train.sparsity.target for c in cells] == [0.0, 0.5, 0.9]
    assert all(c.train.sparsity.method == "random_graph" for c in cells)
    assert cells[0].key == base.cells()[0].key   # a dense cell is the recipe it always was
    assert len({c.key for c in cells}) == 3 and "sparsity=0.9 (random_graph)" in cells[2].label
    # dense keys as computed before sparsity existed (a record of docs/results/digits.jsonl)
    record = {"probe": "digits", "mixer": "s4d", "dim": 64, "layers": 2, "seed": 0,
              "probe_params": {"seq_len": 64, "permuted": False, "permutation_seed": 0,
                               "split_seed": 0, "test_fraction": 0.2, "val_fraction": 0.1},
              "model": {"mlp_hidden": 128},
              "train": {"steps": 1500, "batch_size": 64, "lr": 0.003, "min_lr_ratio": 0.1,
                        "warmup": 50, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
                        "grad_clip": 1.0, "precision": "auto", "eval_batches": 16,
                        "eval_batch_size": 64, "stop_at_accuracy": 0.0, "check_every": 50,
                        "check_batches": 2}, "eval_lengths": []}
    assert CellConfig.from_dict(record).key == "a838dd86438e3de4"


def test_bench_command_line_sweeps_sparsity():
    from seqlab.bench.cli import sweep_from_args
    from seqlab.cli import build_parser

    args = build_parser().parse_args(["bench", "run", "induction", "--mixers", "gru,lstm",
                                      "--sparsity", "0,0.5,0.9", "--set", "sparsity.method=random_graph",
                                      "--set", "sparsity.graph=barabasi_albert"])
    cells = sweep_from_args(args).cells()
    assert [(c.mixer, c.train.sparsity.target) for c in cells] == [
        ("gru", 0.0), ("gru", 0.5), ("gru", 0.9), ("lstm", 0.0), ("lstm", 0.5), ("lstm", 0.9)]
    assert {c.train.sparsity.graph for c in cells} == {"barabasi_albert"}
    bad = build_parser().parse_args(["bench", "run", "induction", "--mixers", "gru", "--sparsity", "1.5"])
    with pytest.raises(ConfigError, match=r"--sparsity '1.5' .*fractions in \[0, 1\)"):
        sweep_from_args(bad)


def test_probe_fit_reaches_the_target_before_stopping_early():
    probe = probes.build("induction", seq_len=16, vocab_size=8)
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=probe.vocab_size, dim=16, layers=["gru"], mlp_hidden=16))
    cfg = ProbeTrainConfig(steps=20, batch_size=8, warmup=2, stop_at_accuracy=0.01, check_every=2,
                           check_batches=1, eval_batch_size=8,
                           sparsity=SparsityConfig(target=0.8, end_step=12, frequency=2))
    fit = fit_probe(model, probe, cfg)
    assert fit.reached_at is not None and fit.reached_at >= 12   # not before the last pruning
    assert fit.sparsity == pytest.approx(0.8, abs=1e-3)
    assert recurrent_sparsity(model)["blocks.0.mixer.rnn.weight_hh_l0"] == pytest.approx(0.8, abs=1e-3)

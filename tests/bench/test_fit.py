"""Training and scoring one model on one probe: scored-position logits, learning, NaN stops."""

import pytest
import torch

from seqlab.bench.fit import (ProbeTrainConfig, evaluate_probe, fit_probe, probe_loss,
                              scored_logits)
from seqlab.bench.sweep import CellConfig, build_model
from seqlab.config import ConfigError
from seqlab.models import build_lm
from seqlab.tasks import probes
from seqlab.tasks.probes import IGNORE


def tiny_lm(vocab=8, layers=("attention", "attention")):
    return build_lm(vocab_size=vocab, dim=16, layers=list(layers), mlp_hidden=32,
                    mixer_options={"attention": {"heads": 2}} if "attention" in layers else {})


def test_scored_logits_equal_full_logits_at_scored_positions():
    model = tiny_lm(layers=("attention", "mamba")).double()
    x = torch.randint(0, 8, (3, 9))
    targets = torch.full_like(x, IGNORE)
    targets[0, [1, 4]] = 2
    targets[2, 8] = 5                                   # ragged: rows score different counts
    full, _ = model(x)
    got = scored_logits(model, x, targets)
    assert got.shape == (3, 8)
    torch.testing.assert_close(got, full[targets != IGNORE])


def test_lm_loss_is_cross_entropy_at_scored_positions_only():
    probe = probes.build("test-copy-first", seq_len=6)
    model = tiny_lm()
    batch = probe.batch("train", 0, 4)
    loss, out = probe_loss(model, probe, batch)
    full, _ = model(batch.inputs)
    want = torch.nn.functional.cross_entropy(full.reshape(-1, 8), batch.targets.reshape(-1))
    torch.testing.assert_close(loss, want)
    assert out.shape == (4 * 5, 8)                      # 5 scored positions per row


def test_lm_probe_is_learned_well_above_chance():
    probe = probes.build("test-copy-first")
    torch.manual_seed(0)
    model = tiny_lm()
    cfg = ProbeTrainConfig(steps=40, batch_size=16, lr=1e-2, warmup=4)
    before = evaluate_probe(model, probe, batches=4, batch_size=32)["accuracy"]
    fit = fit_probe(model, probe, cfg)
    after = evaluate_probe(model, probe, batches=4, batch_size=32)["accuracy"]
    assert fit.status == "ok" and fit.steps == 40 and len(fit.losses) == 40
    assert before < 0.3 and after > 0.8                  # chance is 1/8


def test_training_stops_once_validation_accuracy_reaches_the_target():
    probe = probes.build("test-copy-first")
    torch.manual_seed(0)
    model = tiny_lm()
    cfg = ProbeTrainConfig(steps=200, batch_size=16, lr=1e-2, warmup=4, stop_at_accuracy=0.9,
                           check_every=5, check_batches=2, eval_batch_size=32)
    fit = fit_probe(model, probe, cfg)
    assert fit.reached_at is not None and fit.steps == fit.reached_at < 200
    assert [s for s, _ in fit.checks] == list(range(5, fit.steps + 1, 5))
    assert fit.checks[-1][1] >= 0.9 and all(acc < 0.9 for _, acc in fit.checks[:-1])
    # The stop looked at the validation stream; the test stream agrees that it is learned.
    assert evaluate_probe(model, probe, batches=4, batch_size=32)["accuracy"] > 0.8


def test_classify_probe_trains_a_classifier():
    cell = CellConfig(probe="test-first-class", mixer="attention", dim=16, layers=2,
                      model={"mixer_options": {"attention": {"heads": 2}}, "mlp_hidden": 32})
    probe = cell.build_probe()
    torch.manual_seed(0)
    model = build_model(cell, probe)
    fit_probe(model, probe, ProbeTrainConfig(steps=40, batch_size=16, lr=1e-2, warmup=4))
    assert evaluate_probe(model, probe, batches=4, batch_size=32)["accuracy"] > 0.85  # chance 1/2


def test_evaluation_does_not_depend_on_the_model_mode_or_repeat():
    probe = probes.build("test-copy-first")
    model = tiny_lm()
    a = evaluate_probe(model, probe, batches=3, batch_size=8, seed=1)
    assert model.training  # restored
    b = evaluate_probe(model, probe, batches=3, batch_size=8, seed=1)
    assert a == b


def test_a_diverging_model_stops_with_status_nan():
    probe = probes.build("test-copy-first")
    model = tiny_lm()
    with torch.no_grad():
        model.norm.weight.fill_(float("nan"))
    fit = fit_probe(model, probe, ProbeTrainConfig(steps=5, batch_size=4, warmup=1))
    assert fit.status == "nan" and fit.steps == 0 and "at step 1" in fit.message


def test_bad_train_option_is_named():
    with pytest.raises(ConfigError, match="ProbeTrainConfig.eval_batches = 0 is not allowed"):
        ProbeTrainConfig(eval_batches=0)

"""Sweep grids, mixer specs, cell keys and the models cells build."""

import pytest

from seqlab.bench.fit import ProbeTrainConfig
from seqlab.bench.sweep import CellConfig, SweepConfig, build_model, check_cells, layer_pattern
from seqlab.config import ConfigError
from seqlab.models.classifier import SequenceClassifier
from seqlab.models.lm import LM


def test_mixer_specs():
    assert layer_pattern("attention") == ("attention",)
    assert layer_pattern("lstm+attention") == ("lstm", "attention")
    assert layer_pattern("hybrid") == ("mamba", "attention")
    windowed = layer_pattern("attention(window=4)*2+attention")
    assert [s.options for s in windowed] == [{"window": 4}, {"window": 4}, {}]
    with pytest.raises(ConfigError, match=r"CellConfig.mixer\[1\] = attn: unknown mixer 'attn'; "
                                          "known mixers: .*attention"):
        layer_pattern("mamba+attn")
    with pytest.raises(ConfigError, match=r"AttentionConfig.window = 0 is not allowed"):
        layer_pattern("attention(window=0)")


def test_a_cell_with_per_layer_options_builds_them():
    cell = CellConfig(probe="test-copy-first", mixer="attention(window=3)+attention", dim=16, layers=4,
                      model={"mixer_options": {"attention": {"heads": 2}}})
    model = build_model(cell, cell.build_probe())
    assert [b.mixer.cfg.window for b in model.blocks] == [3, None, 3, None]
    assert {b.mixer.cfg.heads for b in model.blocks} == {2}
    assert cell.key != CellConfig(probe="test-copy-first", mixer="attention+attention", dim=16,
                                  layers=4, model=cell.model).key


def test_grid_covers_every_combination_with_resolved_probe_params():
    sweep = SweepConfig(probe="test-copy-first", mixers=("attention", "hybrid"), dims=(16, 32),
                        seeds=(0, 1), train_lengths=(8, 12), probe_params={"vocab": 6})
    cells = sweep.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    assert {(c.mixer, c.dim, c.probe_params["seq_len"], c.seed) for c in cells} == {
        (m, d, n, s) for m in ("attention", "hybrid") for d in (16, 32) for n in (8, 12) for s in (0, 1)}
    assert all(c.probe_params == {"seq_len": c.probe_params["seq_len"], "vocab": 6} for c in cells)
    assert len({c.key for c in cells}) == len(cells)


def test_learning_rates_are_an_axis_of_the_grid():
    sweep = SweepConfig(probe="test-copy-first", mixers=("lstm",), dims=(16,), seeds=(0, 1),
                        lrs=(1e-3, 3e-3), train=ProbeTrainConfig(steps=7))
    cells = sweep.cells()
    assert sorted((c.train.lr, c.seed) for c in cells) == [(1e-3, 0), (1e-3, 1), (3e-3, 0), (3e-3, 1)]
    assert all(c.train.steps == 7 for c in cells) and len({c.key for c in cells}) == 4
    assert [c.train.lr for c in SweepConfig(probe="test-copy-first", mixers=("lstm",), dims=(16,),
                                            train=ProbeTrainConfig(lr=5e-3)).cells()] == [5e-3]
    with pytest.raises(ConfigError, match="lrs"):
        SweepConfig(probe="test-copy-first", mixers=("lstm",), dims=(16,), lrs=(0.0,))


def test_key_is_stable_and_changes_with_the_recipe():
    a = CellConfig(probe="test-copy-first", mixer="attention", dim=16)
    assert a.key == CellConfig(probe="test-copy-first", mixer="attention", dim=16).key
    assert a.key != CellConfig(probe="test-copy-first", mixer="attention", dim=16,
                               train=ProbeTrainConfig(steps=999)).key
    assert a.key != CellConfig(probe="test-copy-first", mixer="attention", dim=16, seed=1).key


def test_models_follow_the_probe_kind_and_the_pattern():
    cell = CellConfig(probe="test-copy-first", mixer="hybrid", dim=16, layers=4,
                      model={"mixer_options": {"attention": {"heads": 2}, "lstm": {}}})
    model = build_model(cell, cell.build_probe())
    assert isinstance(model, LM)
    assert [s.mixer for s in model.cfg.layers] == ["mamba", "attention", "mamba", "attention"]
    assert model.cfg.vocab_size == 8
    # Options of mixers a cell does not use are dropped, not an error.
    assert [s.options for s in model.cfg.layers] == [{}, {"heads": 2}] * 2
    cls = CellConfig(probe="test-first-class", mixer="lstm", dim=16, layers=1)
    model = build_model(cls, cls.build_probe())
    assert isinstance(model, SequenceClassifier) and model.cfg.num_classes == 2


@pytest.mark.parametrize("make, message", [
    (lambda: CellConfig(probe="test-copy-first", mixer="hybrid", dim=16, layers=1),
     "layers = 1 is not allowed: expected at least 2"),
    (lambda: CellConfig(probe="test-copy-first", mixer="attention", dim=16, model={"dim": 8}),
     r"model options \['dim'\] are set by the sweep"),
    (lambda: SweepConfig(probe="no-such-probe", mixers=("attention",), dims=(16,)),
     "unknown probe 'no-such-probe'"),
    (lambda: SweepConfig(probe="test-copy-first", mixers=("attention",), dims=(16,),
                         probe_params={"vocabb": 3}).cells(),
     "TinyConfig has no option 'vocabb'"),
    (lambda: check_cells(SweepConfig(probe="test-copy-first", mixers=("attention",), dims=(15,)).cells()),
     "cell attention d=15: LMConfig.layers\\[0\\] = attention: dim = 15 does not divide into heads = 4"),
], ids=["pattern-longer-than-layers", "dim-via-model", "unknown-probe", "bad-probe-param", "heads"])
def test_bad_sweeps_fail_before_training_with_the_problem_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_options_of_unused_mixers_do_not_change_a_cells_key():
    plain = SweepConfig(probe="test-copy-first", mixers=("lstm", "attention"), dims=(16,)).cells()
    with_heads = SweepConfig(probe="test-copy-first", mixers=("lstm", "attention"), dims=(16,),
                             model={"mixer_options": {"attention": {"heads": 2}}}).cells()
    assert plain[0].key == with_heads[0].key          # lstm: unaffected
    assert plain[1].key != with_heads[1].key          # attention: a new recipe
    assert with_heads[0].model == {} and with_heads[1].model == {"mixer_options": {"attention": {"heads": 2}}}

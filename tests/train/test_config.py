"""Run configs from the command line: --set values and the layer patterns they may hold."""

import pytest

from seqlab.train.config import RunConfig, apply_overrides, parse_value


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("1e-3", 0.001), ("true", True), ("none", None), ("[1, 2]", [1, 2]),
    ("2,2,1", [2, 2, 1]), ("attention,mamba", ["attention", "mamba"]),
    ("attention(window=4,heads=2)", "attention(window=4,heads=2)"),
    ("attention(window=4,heads=2)+gru,mamba", ["attention(window=4,heads=2)+gru", "mamba"]),
])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_a_layer_pattern_with_several_options_sets_the_layers():
    data = apply_overrides({}, ["model.layers=attention(window=4,heads=2)*2+gru"])
    layers = RunConfig.from_dict(data).model.layers
    assert [(s.mixer, s.options) for s in layers] == [
        ("attention", {"window": 4, "heads": 2}), ("attention", {"window": 4, "heads": 2}),
        ("gru", {})]

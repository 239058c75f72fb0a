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


def test_the_model_section_names_its_family():
    from seqlab.config import ConfigError
    from seqlab.models import BlockLMConfig, LMConfig

    block = RunConfig.from_dict({"model": {"kind": "block", "block_size": 8, "layers": "attention*3"}})
    assert isinstance(block.model, BlockLMConfig) and block.kind == "block"
    assert block.model.block_size == 8 and len(block.model.layers) == 3
    data = block.to_dict()
    assert data["model"]["kind"] == "block" and RunConfig.from_dict(data) == block
    plain = RunConfig.from_dict({"model": {"dim": 48}})   # no kind: the LM, as before
    assert isinstance(plain.model, LMConfig) and plain.kind == "lm"
    assert RunConfig.from_dict(plain.to_dict()) == plain
    with pytest.raises(ConfigError, match=r"model.kind = 'blocks' is not a model family: expected "
                                          r"one of 'lm', 'block'"):
        RunConfig.from_dict({"model": {"kind": "blocks"}})
    with pytest.raises(ConfigError, match=r"BlockLMConfig has no option 'mixer_options'"):
        RunConfig.from_dict({"model": {"kind": "block", "mixer_options": {}}})
    with pytest.raises(ConfigError, match="the model section must be a mapping"):
        RunConfig.from_dict({"model": "block"})

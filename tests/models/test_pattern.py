"""The layer-pattern syntax: parsing, printing back, and errors that name the layer and the fix."""

import pytest

from seqlab.config import ConfigError
from seqlab.models.pattern import LayerSpec, format_pattern, parse_layers, repeat_to, split_patterns


def specs(*pairs):
    return tuple(LayerSpec(m, o) for m, o in pairs)


@pytest.mark.parametrize("text, expected", [
    ("attention", specs(("attention", {}))),
    (" mamba + attention ", specs(("mamba", {}), ("attention", {}))),
    ("mamba*2+attention", specs(("mamba", {}), ("mamba", {}), ("attention", {}))),
    ("attention(window=512, heads=4)", specs(("attention", {"window": 512, "heads": 4}))),
    ("(attention(window=8)*2+attention)*2",
     specs(*[("attention", {"window": 8})] * 2, ("attention", {}), *[("attention", {"window": 8})] * 2,
           ("attention", {}))),
    ("attention(rope_theta=1e4,rotary=false,kv_heads=none)",
     specs(("attention", {"rope_theta": 10000.0, "rotary": False, "kv_heads": None}))),
    ("mamba(scan='torch')", specs(("mamba", {"scan": "torch"}))),
    ("mamba(scan=torch)", specs(("mamba", {"scan": "torch"}))),
    ("hybrid", specs(("mamba", {}), ("attention", {}))),
    ("attention()", specs(("attention", {}))),
], ids=["name", "plus", "repeat", "options", "group", "typed-values", "quoted", "word", "preset",
        "empty-options"])
def test_patterns_parse_to_layer_specs(text, expected):
    assert parse_layers(text) == expected


def test_printing_parses_back():
    layers = parse_layers("attention(heads=2,window=8)*3+attention(heads=2)+mamba(scan=cpp,dt_rank=none)")
    text = format_pattern(layers)
    assert text == "attention(heads=2,window=8)*3+attention(heads=2)+mamba(scan=cpp,dt_rank=none)"
    assert parse_layers(text) == layers
    assert str(layers[0]) == "attention(heads=2,window=8)" and layers[0] == "attention(heads=2,window=8)"
    assert LayerSpec("mamba") == "mamba" and LayerSpec("mamba") != "attention"
    # A bare name asks for the mixer, whatever the options; a text with options must match them.
    assert layers[0] == "attention" and "mamba" in layers and "gru" not in layers
    assert layers[0] != "attention(heads=2)" and layers[0] != layers[3]


def test_lists_mix_names_patterns_mappings_and_specs():
    layers = parse_layers(["gru", "attention(window=4)*2", {"mixer": "mamba", "d_state": 4},
                           LayerSpec("lstm", {"hidden": 8})])
    assert [str(s) for s in layers] == ["gru", "attention(window=4)", "attention(window=4)",
                                        "mamba(d_state=4)", "lstm(hidden=8)"]
    assert parse_layers([s.to_dict() for s in layers]) == layers   # the saved form reads back
    assert repeat_to(layers[:2], 5) == layers[:2] * 2 + layers[:1]


def test_a_spec_builds_its_mixer_with_its_options():
    m = LayerSpec("attention", {"window": 5, "heads": 2}).build(dim=16)
    assert (m.cfg.window, m.cfg.heads, m.cfg.kv_heads) == (5, 2, None)
    assert LayerSpec("attention", {"rope_theta": 500}).options == {"rope_theta": 500.0}


def test_split_patterns_keeps_commas_inside_parentheses():
    assert split_patterns("lstm, attention(window=4,heads=2)+lstm,,hybrid ") == [
        "lstm", "attention(window=4,heads=2)+lstm", "hybrid"]
    assert split_patterns(" , ") == []


@pytest.mark.parametrize("value, message", [
    ("attention+mambo", r"layers\[1\] = mambo: unknown mixer 'mambo'; known mixers: .*mamba"),
    ("gru+attention(windw=3)", r"layers\[1\] = attention\(windw=3\): AttentionConfig has no option "
     r"'windw'; known options: heads, kv_heads, window"),
    ("attention(heads=0)", r"layers\[0\] = attention\(heads=0\): AttentionConfig.heads = 0 is not "
     r"allowed: expected a positive int"),
    ("attention(heads=2.5)", r"AttentionConfig.heads = 2.5 is not allowed: expected int"),
    ("attention(window=8", r"'attention\(window=8' is not a layer pattern: expected '\)', found the "
     r"end at character 19; a pattern is layers joined by '\+'"),
    ("attention(window=8,window=9)", r"option 'window' given twice"),
    ("mamba*", r"expected a repeat count after '\*'"),
    ("mamba+", r"expected a mixer name, found the end"),
    ("attention,mamba", r"unexpected ',' \(one pattern here, not a list\)"),
    ("hybrid(heads=2)", r"the preset 'hybrid' takes no options"),
    ("mamba(scan=a/b)", r"value 'a/b' is neither a number nor a word \(quote it\)"),
    ([{"window": 3}], r"layers\[0\] = \{'window': 3\}: layer mapping .* has no 'mixer' key"),
    ([], r"expected at least one layer"),
    (3, r"expected a pattern string or a list"),
], ids=["unknown-mixer", "unknown-option", "out-of-range", "type", "unclosed", "twice", "count",
        "dangling-plus", "comma", "preset-options", "bad-word", "no-mixer-key", "empty", "type-of-value"])
def test_bad_layers_name_the_layer_field_and_fix(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_layers(value)

import pytest

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers import Mixer

EXPECTED = {"aaren", "attention", "gru", "linear_attention", "lstm", "mamba", "s4d", "lmu", "rnn", "fsmn", "prefix_linear_attention", "lssl", "s4", "atlas", "ngram", "plstm"}


def test_all_issue_mixers_registered_and_sorted():
    names = seqlab.mixers.names()
    assert names == sorted(names)
    assert EXPECTED <= set(names)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_builds_with_defaults_and_documents_cost(name):
    m = seqlab.mixers.build(name, dim=64)
    assert isinstance(m, Mixer) and m.name == name
    assert "step" in type(m).cost and "state" in type(m).cost
    assert type(m).__module__.endswith(name)  # one file per mixer
    assert type(m).__doc__ or __import__(type(m).__module__).__doc__


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown mixer 'attn'; known mixers: aaren, atlas, attention"):
        seqlab.mixers.build("attn", dim=8)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        seqlab.mixers.register("gru")(type("X", (Mixer,), {}))


def test_bad_dim():
    with pytest.raises(ConfigError, match=r"dim = 0 is not allowed"):
        seqlab.mixers.build("gru", dim=0)

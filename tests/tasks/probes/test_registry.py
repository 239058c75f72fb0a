import pytest

from seqlab.config import ConfigError
from seqlab.tasks.probes import build, get, names
from tests.tasks.probes.common import check_valid

SMALL = {
    "mqar": dict(seq_len=64, vocab_size=128, num_pairs=8),
    "selective_copy": dict(seq_len=48, num_tokens=8),
    "induction": dict(seq_len=32),
    "icll": dict(seq_len=64),
    "set_disjointness": dict(seq_len=32),
    "set_disjointness_jrt": dict(seq_len=32),
    "passkey": dict(seq_len=48),
    "binary_successor": dict(seq_len=40),
    "tree_traversal": dict(seq_len=64),
    "listops": dict(seq_len=96, max_depth=4),
    "digits": dict(),
    "digits_permuted": dict(),
    "arrow": dict(seq_len=144, max_radius=2.0, max_length=4.5, clearance=1.0),
}


# Probes that read the user's data need a file: tests/tasks/probes/test_file.py covers them.
NEED_A_FILE = ["file"]


def test_every_probe_is_listed_here():
    assert names() == sorted([*SMALL, *NEED_A_FILE])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_with_defaults_and_yields_a_valid_small_batch(name):
    cls = get(name)
    default = cls()
    assert default.name == name and default.kind in ("lm", "classify")
    assert default.cfg == cls.Config()
    assert (default.num_classes is None) == (default.kind == "lm")
    probe = build(name, **SMALL[name])
    batch = probe.batch("train", 0, 4)
    check_valid(probe, batch, 4)
    assert probe.cfg.from_dict(probe.cfg.to_dict()) == probe.cfg
    assert cls.__module__.startswith("seqlab.tasks.probes.") and cls.__doc__
    assert len(__import__(cls.__module__, fromlist=["_"]).__doc__) > 200  # says what and where from


def test_unknown_names_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown probe"):
        build("no_such_probe")
    with pytest.raises(ConfigError, match="no option 'vocab'"):
        build("mqar", vocab=10)

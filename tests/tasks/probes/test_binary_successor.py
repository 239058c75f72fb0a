import pytest

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.binary_successor import END, EQUALS, PAD, BinarySuccessor
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def as_int(bits: list[int], lsb_first: bool) -> int:
    text = "".join(map(str, bits))
    return int(text[::-1] if lsb_first else text, 2)


@pytest.mark.parametrize("lsb_first", [True, False], ids=["lsb", "msb"])
def test_targets_match_integer_arithmetic(lsb_first):
    probe = build("binary_successor", seq_len=24, min_bits=1, max_bits=8, lsb_first=lsb_first)
    batch = probe.batch("train", 0, 128)
    check_valid(probe, batch, 128)
    seen_lengths = set()
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        eq = inputs.index(EQUALS)
        end = inputs.index(END)
        x_bits, y_bits = inputs[:eq], inputs[eq + 1:end]
        assert set(x_bits + y_bits) <= {0, 1} and all(t == PAD for t in inputs[end + 1:])
        top = x_bits[-1] if lsb_first else x_bits[0]
        assert top == 1 or len(x_bits) == 1  # no leading zeros
        assert as_int(y_bits, lsb_first) == as_int(x_bits, lsb_first) + 1
        assert (y_bits[-1] if lsb_first else y_bits[0]) == 1
        seen_lengths.add(len(x_bits))
        # scored: the targets that produce y and the end token, nothing else
        scored = [i for i, t in enumerate(targets) if t != IGNORE]
        assert scored == list(range(eq, end))
        assert [targets[i] for i in scored] == y_bits + [END]
    assert seen_lengths == set(range(1, 9))


def test_carry_into_a_new_bit_happens():
    batch = build("binary_successor", seq_len=10, min_bits=1, max_bits=3).batch("train", 0, 256)
    eq = (batch.inputs == EQUALS).float().argmax(1)
    end = (batch.inputs == END).float().argmax(1)
    assert ((end - eq - 1) > eq).any()  # some x + 1 is one bit longer than x


def test_determinism_and_splits():
    check_determinism(build("binary_successor"))


def test_metric():
    probe = build("binary_successor")
    check_metric(probe, probe.batch("test", 0, 64), chance_below=0.4)


def test_config_errors_name_the_field():
    check_config_error(BinarySuccessor, "seq_len", seq_len=20, max_bits=16)
    check_config_error(BinarySuccessor, "max_bits", min_bits=4, max_bits=3)
    check_config_error(BinarySuccessor, "min_bits", min_bits=0)
    check_config_error(BinarySuccessor, "lsb_first", lsb_first=1)

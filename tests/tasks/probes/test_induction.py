from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.induction import TRIGGER, Induction
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def test_targets_match_a_python_reference():
    probe = build("induction", seq_len=24, vocab_size=8)
    batch = probe.batch("train", 0, 64)
    check_valid(probe, batch, 64)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        triggers = [i for i, t in enumerate(inputs) if t == TRIGGER]
        assert len(triggers) == 2 and triggers[1] == 23 and triggers[0] <= 21
        assert targets[-1] == inputs[triggers[0] + 1]
        assert all(t == IGNORE for t in targets[:-1])


def test_trigger_positions_cover_the_range():
    batch = build("induction", seq_len=16).batch("train", 0, 256)
    first = (batch.inputs[:, :-1] == TRIGGER).float().argmax(dim=1)
    assert set(first.tolist()) == set(range(14))


def test_determinism_and_splits():
    check_determinism(build("induction", seq_len=24))


def test_metric():
    probe = build("induction", seq_len=24, vocab_size=20)
    check_metric(probe, probe.batch("test", 0, 256), chance_below=0.15)


def test_config_errors_name_the_field():
    check_config_error(Induction, "vocab_size", vocab_size=2)
    check_config_error(Induction, "seq_len", seq_len=2)
    check_config_error(Induction, "seq_len", seq_len=1)

import torch

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.selective_copy import BLANK, FIRST_SYMBOL, MARKER, SelectiveCopy
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def test_targets_match_a_python_reference():
    probe = build("selective_copy", seq_len=40, num_tokens=6, num_symbols=5)
    batch = probe.batch("train", 0, 16)
    check_valid(probe, batch, 16)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        context, tail = inputs[:34], inputs[34:]
        data = [t for t in context if t != BLANK]
        assert len(data) == 6 and all(FIRST_SYMBOL <= t < FIRST_SYMBOL + 5 for t in data)
        assert tail == [MARKER] * 6
        assert targets[34:] == data and all(t == IGNORE for t in targets[:34])


def test_data_positions_vary():
    batch = build("selective_copy", seq_len=64, num_tokens=4).batch("train", 0, 32)
    first = (batch.inputs[:, :60] != BLANK).float().argmax(dim=1)
    assert first.unique().numel() > 5


def test_determinism_and_splits():
    check_determinism(build("selective_copy", seq_len=40, num_tokens=6))


def test_metric_and_exact_match():
    probe = build("selective_copy", seq_len=40, num_tokens=6, num_symbols=8)
    batch = probe.batch("test", 0, 32)
    check_metric(probe, batch, chance_below=0.3)
    logits = torch.nn.functional.one_hot(batch.targets.clamp(min=0), probe.vocab_size).float()
    logits[0, -1] = torch.roll(logits[0, -1], 1)  # one wrong token in row 0
    m = probe.metrics(probe.score(logits, batch))
    assert m["accuracy"] == 1 - 1 / (32 * 6) and m["exact_match"] == 31 / 32


def test_config_errors_name_the_field():
    check_config_error(SelectiveCopy, "seq_len", seq_len=20, num_tokens=16)
    check_config_error(SelectiveCopy, "num_tokens", num_tokens=0)
    check_config_error(SelectiveCopy, "num_symbols", num_symbols=1)

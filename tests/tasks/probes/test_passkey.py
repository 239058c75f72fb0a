import time

import pytest
import torch

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.passkey import FIRST_FILLER, KEY, QUERY, Passkey
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def check_row(probe, inputs: list[int], targets: list[int]) -> list[int]:
    """Slow reference: find the key block, check the query and targets; return the filler."""
    k, L = probe.cfg.num_digits, probe.seq_len
    at = inputs.index(KEY)
    digits = inputs[at + 1:at + 1 + k]
    assert all(0 <= d <= 9 for d in digits)
    assert inputs[L - k:] == [QUERY] + digits[:-1]
    assert targets[L - k:] == digits and all(t == IGNORE for t in targets[:L - k])
    filler = inputs[:at] + inputs[at + 1 + k:L - k]
    assert all(t >= FIRST_FILLER for t in filler)
    assert inputs.count(KEY) == 1 and inputs.count(QUERY) == 1
    return filler


@pytest.mark.parametrize("filler", ["fixed", "random"])
def test_targets_match_a_python_reference(filler):
    probe = build("passkey", seq_len=80, num_digits=4, filler=filler, filler_period=7)
    batch = probe.batch("train", 0, 16)
    check_valid(probe, batch, 16)
    text = probe.filler_text().tolist()
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        rest = check_row(probe, inputs, targets)
        if filler == "fixed":  # the text runs on unbroken around the key
            assert rest == [text[i % 7] for i in range(len(rest))]


def test_depth():
    key_at = lambda probe: (probe.batch("train", 0, 4).inputs == KEY).float().argmax(1)  # noqa: E731
    assert (key_at(build("passkey", seq_len=64, depth=0.0)) == 0).all()
    assert (key_at(build("passkey", seq_len=64, num_digits=5, depth=1.0)) == 64 - 5 - 6).all()
    spread = key_at(build("passkey", seq_len=256)).tolist() + \
        key_at(build("passkey", seq_len=256, depth=None)).tolist()
    assert len(set(spread)) > 1


def test_long_sequences_and_with_length():
    probe = build("passkey", seq_len=256, num_digits=6)
    long = probe.with_length(16384)
    assert long.cfg.num_digits == 6 and long.seq_len == 16384
    start = time.perf_counter()
    batch = long.batch("test", 0, 8)
    assert time.perf_counter() - start < 1.0
    check_valid(long, batch, 8)
    check_row(long, batch.inputs[0].tolist(), batch.targets[0].tolist())


def test_determinism_and_splits():
    check_determinism(build("passkey", seq_len=64))


def test_metric_and_exact_match():
    probe = build("passkey", seq_len=64, num_digits=5)
    batch = probe.batch("test", 0, 64)
    check_metric(probe, batch, chance_below=0.2)
    logits = torch.nn.functional.one_hot(batch.targets.clamp(min=0), probe.vocab_size).float()
    logits[:, -1] = torch.roll(logits[:, -1], 1, dims=-1)  # last digit wrong in every row
    m = probe.metrics(probe.score(logits, batch))
    assert m["accuracy"] == pytest.approx(4 / 5) and m["exact_match"] == 0.0


def test_config_errors_name_the_field():
    check_config_error(Passkey, "depth", depth=1.5)
    check_config_error(Passkey, "seq_len", seq_len=10, num_digits=5)
    check_config_error(Passkey, "filler", filler="lorem")
    check_config_error(Passkey, "num_digits", num_digits=0)
    check_config_error(Passkey, "filler_period", filler_period=0)

import time

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.mqar import MQAR
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def reference_check_row(inputs: list[int], targets: list[int], vocab: int, pairs: int) -> None:
    """Recompute every target of one row from its key-value pairs, in plain Python."""
    half = vocab // 2
    keys, values = inputs[0:2 * pairs:2], inputs[1:2 * pairs:2]
    assert all(1 <= k < half for k in keys) and len(set(keys)) == pairs
    assert all(half <= v < vocab for v in values) and len(set(values)) == pairs
    binding = dict(zip(keys, values))
    assert all(t == IGNORE for t in targets[:2 * pairs])
    queried = []
    for pos in range(2 * pairs, len(inputs)):
        if targets[pos] != IGNORE:
            assert (pos - 2 * pairs) % 2 == 0  # query slots are the even offsets of the rest
            assert targets[pos] == binding[inputs[pos]]
            queried.append(inputs[pos])
    assert sorted(queried) == sorted(keys)  # every key queried exactly once


def test_targets_match_a_python_reference():
    probe = build("mqar", vocab_size=64, seq_len=48, num_pairs=6)
    batch = probe.batch("train", 0, 16)
    check_valid(probe, batch, 16)
    for row in range(16):
        reference_check_row(batch.inputs[row].tolist(), batch.targets[row].tolist(), 64, 6)


def test_default_is_zoology_figure2_cell_and_fast():
    probe = MQAR()
    assert (probe.vocab_size, probe.seq_len, probe.cfg.num_pairs) == (8192, 256, 16)
    batch = probe.batch("train", 0, 256)
    check_valid(probe, batch, 256)
    reference_check_row(batch.inputs[0].tolist(), batch.targets[0].tolist(), 8192, 16)
    best = float("inf")
    for step in range(5):
        start = time.perf_counter()
        probe.batch("train", step, 256)
        best = min(best, time.perf_counter() - start)
    assert best < 0.05, f"B=256 took {best * 1e3:.1f} ms"


def test_filler_random_or_zero():
    zero = build("mqar", vocab_size=64, seq_len=48, num_pairs=6, random_filler=False)
    batch = zero.batch("train", 0, 8)
    rest, scored = batch.inputs[:, 12:], batch.targets[:, 12:] != IGNORE
    assert (rest[~scored] == 0).all()
    noisy = build("mqar", vocab_size=64, seq_len=48, num_pairs=6).batch("train", 0, 8)
    assert (noisy.inputs[:, 12:][noisy.targets[:, 12:] == IGNORE] != 0).any()


def test_power_law_puts_queries_near_the_pairs():
    def mean_slot(power_a: float) -> float:
        probe = build("mqar", vocab_size=256, seq_len=256, num_pairs=4, power_a=power_a)
        batch = probe.batch("train", 0, 512)
        pos = (batch.targets != IGNORE).nonzero()[:, 1]
        return ((pos - 8) / 2).float().mean().item()

    slots = (256 - 8) // 2  # 124
    uniform = mean_slot(1.0)
    assert abs(uniform - (slots - 1) / 2) < 4  # uniform without replacement: mean (slots-1)/2
    assert mean_slot(0.01) < uniform - 20


def test_determinism_and_splits():
    check_determinism(build("mqar", vocab_size=64, seq_len=48, num_pairs=6))


def test_metric():
    probe = build("mqar", vocab_size=64, seq_len=48, num_pairs=6)
    check_metric(probe, probe.batch("test", 0, 32), chance_below=0.1)


def test_config_errors_name_the_field():
    check_config_error(MQAR, "num_pairs", vocab_size=16, num_pairs=8)
    check_config_error(MQAR, "seq_len", seq_len=60, num_pairs=16)
    check_config_error(MQAR, "power_a", power_a=0.0)
    check_config_error(MQAR, "vocab_size", vocab_size=2)
    check_config_error(MQAR, "num_pairs", num_pairs="16")

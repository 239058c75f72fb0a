import pytest

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.set_disjointness import SetDisjointness, SetDisjointnessJRT
from tests.tasks.probes.common import check_config_error, check_determinism, check_metric, check_valid


def parse(probe, inputs: list[int]) -> list[list[int]]:
    """The segments between separators (padding and the query stripped)."""
    assert inputs[-1] == probe.query
    body = [t for t in inputs[:-1] if t != probe.pad]
    segments, current = [], []
    for t in body:
        if t == probe.separator:
            segments.append(current)
            current = []
        else:
            current.append(t)
    return segments + [current]


@pytest.mark.parametrize("jrt", [False, True], ids=["plain", "jrt"])
@pytest.mark.parametrize("order", ["small_first", "large_first"])
def test_targets_match_a_python_reference(jrt, order):
    probe = build("set_disjointness", seq_len=50, num_elements=64, small_size=3, order=order,
                  jrt=jrt)
    large = 50 // (2 if jrt else 1) - 2 - 3
    batch = probe.batch("train", 0, 16)
    check_valid(probe, batch, 16)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        segments = parse(probe, inputs)
        if jrt:
            assert len(segments) == 4 and segments[:2] == segments[2:]
        else:
            assert len(segments) == 2
        first, second = segments[:2]
        sizes = (3, large) if order == "small_first" else (large, 3)
        assert (len(first), len(second)) == sizes
        assert len(set(first)) == len(first) and len(set(second)) == len(second)
        assert set(first) & set(second) == {targets[-1]}
        assert all(t == IGNORE for t in targets[:-1])


def test_random_order_mixes_and_fixed_large_size_pads():
    probe = build("set_disjointness", seq_len=40, small_size=2, large_size=5)
    batch = probe.batch("train", 0, 64)
    first_sizes = {len(parse(probe, row)[0]) for row in batch.inputs.tolist()}
    assert first_sizes == {2, 5}
    assert (batch.inputs[:, : 40 - 10] == probe.pad).all()


def test_jrt_name_defaults_to_reading_twice():
    assert SetDisjointnessJRT().cfg.jrt and not SetDisjointness().cfg.jrt
    assert build("set_disjointness_jrt", jrt=False).cfg.jrt is False


def test_with_length_grows_the_large_set():
    probe = build("set_disjointness", seq_len=32, small_size=4)
    longer = probe.with_length(64)
    assert longer.cfg.resolved_large_size() == probe.cfg.resolved_large_size() + 32
    check_valid(longer, longer.batch("test", 0, 4), 4)


def test_determinism_and_splits():
    check_determinism(build("set_disjointness_jrt", seq_len=48))


def test_metric():
    probe = build("set_disjointness", seq_len=48, num_elements=64)
    check_metric(probe, probe.batch("test", 0, 128), chance_below=0.1)


def test_config_errors_name_the_field():
    check_config_error(SetDisjointness, "seq_len", seq_len=9, small_size=4)
    check_config_error(SetDisjointness, "seq_len", seq_len=19, small_size=4, jrt=True)
    check_config_error(SetDisjointness, "seq_len", seq_len=20, small_size=4, large_size=20)
    check_config_error(SetDisjointness, "num_elements", seq_len=64, num_elements=16)
    check_config_error(SetDisjointness, "order", order="sideways")
    check_config_error(SetDisjointness, "large_size", small_size=4, large_size=2)
    check_config_error(SetDisjointness, "small_size", small_size=0)

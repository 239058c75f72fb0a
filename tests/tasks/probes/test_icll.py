import pytest
import torch

from seqlab.tasks.probes import IGNORE, build
from seqlab.tasks.probes.icll import ICLL, _sampling_cdf
from tests.tasks.probes.common import (check_additive, check_config_error, check_determinism,
                                       check_packed_logits, check_valid, perfect_logits,
                                       random_logits)

SMALL = dict(seq_len=96, num_symbols=10, min_states=3, max_states=6, min_alphabet=3,
             max_alphabet=8, max_out_degree=3, min_string_len=2, max_string_len=8)


@pytest.fixture(scope="module")
def probe_and_batch():
    probe = build("icll", **SMALL)
    return probe, probe.batch("train", 0, 32)


def test_batch_is_valid(probe_and_batch):
    probe, batch = probe_and_batch
    check_valid(probe, batch, 32)
    dist = batch.extra["next_dist"]
    assert dist.shape == (32, 96, probe.vocab_size)
    torch.testing.assert_close(dist.sum(-1), torch.ones(32, 96))
    assert (dist[..., probe.delimiter] == 0).all()
    assert (batch.inputs[:, 0] == probe.delimiter).all()


def test_emissions_follow_one_automaton_per_row(probe_and_batch):
    """Slow reference: replay each row; every emitted symbol had non-zero probability, and
    transitions and distributions are functions of the state (a deterministic automaton)."""
    probe, batch = probe_and_batch
    delim = probe.delimiter
    for inputs, state, dist in zip(batch.inputs.tolist(), batch.extra["state"].tolist(),
                                   batch.extra["next_dist"]):
        transition, emission = {}, {}
        lengths, current = [], 0
        for t in range(len(inputs) - 1):
            nxt = inputs[t + 1]
            if nxt == delim:
                assert state[t + 1] == 0
                lengths.append(current)
                current = 0
                continue
            current += 1
            assert dist[t, nxt] > 0, "emitted a symbol the automaton cannot emit"
            assert transition.setdefault((state[t], nxt), state[t + 1]) == state[t + 1]
            assert torch.equal(emission.setdefault(state[t], dist[t]), dist[t])
        assert len(set(state)) <= 6
        assert lengths and all(2 <= n <= 8 for n in lengths)
        used = {s for s in inputs if s != delim}
        assert len(used) <= 8
        for d in emission.values():
            assert 1 <= int((d > 0).sum()) <= 3


def test_scored_positions(probe_and_batch):
    probe, batch = probe_and_batch
    delim = probe.delimiter
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        second = [i for i, t in enumerate(inputs) if t == delim][1]
        for t, target in enumerate(targets):
            nxt = inputs[t + 1] if t + 1 < len(inputs) else None
            if t < second or nxt == delim:
                assert target == IGNORE
            elif nxt is not None:
                assert target == nxt


def test_metric_true_distribution_and_chance(probe_and_batch):
    probe, batch = probe_and_batch
    true = batch.extra["next_dist"].clamp_min(1e-30).log()
    m = probe.metrics(probe.score(true, batch))
    assert m["accuracy"] == 1.0 and m["tv"] < 1e-5
    m = probe.metrics(probe.score(perfect_logits(probe, batch), batch))
    assert m["accuracy"] == 1.0 and 0 < m["tv"] < 1
    rand = random_logits(probe, batch)
    m = probe.metrics(probe.score(rand, batch))
    assert m["accuracy"] < 0.7 and m["tv"] > 0.3
    assert set(probe.score(rand, batch)) == {"correct", "count", "tv_sum"}
    check_additive(probe, batch, rand)
    check_packed_logits(probe, batch, rand)


def test_delimiter_logit_is_ignored(probe_and_batch):
    probe, batch = probe_and_batch
    logits = random_logits(probe, batch)
    boosted = logits.clone()
    boosted[..., probe.delimiter] = 100.0
    assert probe.score(logits, batch) == probe.score(boosted, batch)


def test_sampling_cdf_never_draws_zero_probability():
    probs = torch.tensor([[0.5, 0.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    cdf = _sampling_cdf(probs)
    u = torch.tensor([0.0, 0.49, 0.5, 0.75, 1 - 1e-12], dtype=torch.float64)
    draws = (cdf.unsqueeze(1) <= u.view(1, -1, 1)).sum(-1)
    assert draws.tolist() == [[0, 0, 3, 3, 3], [1, 1, 1, 1, 1]]


def test_determinism_and_splits():
    check_determinism(build("icll", **SMALL))


def test_config_errors_name_the_field():
    check_config_error(ICLL, "max_states", min_states=5, max_states=4)
    check_config_error(ICLL, "max_alphabet", max_alphabet=25)
    check_config_error(ICLL, "max_out_degree", max_out_degree=0)
    check_config_error(ICLL, "seq_len", seq_len=10)
    check_config_error(ICLL, "min_string_len", min_string_len=0)

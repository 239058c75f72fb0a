import torch

from seqlab.tasks.probes import IGNORE, Probe
from seqlab.tasks.probes.base import (distinct_ints, predictions_like, randint_between,
                                      token_and_sequence_metrics, token_and_sequence_scores)


def test_distinct_ints_are_distinct_in_range_and_uniform():
    g = torch.Generator().manual_seed(0)
    x = distinct_ints(g, 2000, 10, 4)
    assert x.shape == (2000, 4) and int(x.min()) >= 0 and int(x.max()) < 10
    assert all(len(set(row)) == 4 for row in x.tolist())
    first = torch.bincount(x[:, 0], minlength=10).float() / 2000  # order is random too
    assert (first - 0.1).abs().max() < 0.03


def test_randint_between_is_inclusive_with_per_row_bounds():
    g = torch.Generator().manual_seed(0)
    high = torch.tensor([[0], [3], [7]])
    x = randint_between(g, 0, high, (3, 500))
    for row, h in zip(x.tolist(), high.flatten().tolist()):
        assert set(row) == set(range(h + 1))


def test_predictions_like_accepts_full_or_packed_logits():
    targets = torch.tensor([[IGNORE, 2, IGNORE], [1, IGNORE, 0]])
    logits = torch.randn(2, 3, 4)
    full = predictions_like(logits, targets)
    packed = predictions_like(logits[targets != IGNORE], targets)
    assert torch.equal(full, packed) and (full[targets == IGNORE] == IGNORE).all()


def test_exact_match_counts_rows_with_scored_tokens():
    targets = torch.tensor([[IGNORE, 2, 3], [1, IGNORE, 0], [IGNORE, IGNORE, IGNORE]])
    logits = torch.nn.functional.one_hot(targets.clamp(min=0), 4).float()
    logits[1, 2] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # row 1: one of two tokens wrong
    s = token_and_sequence_scores(logits, targets)
    assert s == {"correct": 3.0, "count": 4.0, "seq_correct": 1.0, "seq_count": 2.0}
    assert token_and_sequence_metrics(s) == {"accuracy": 0.75, "exact_match": 0.5}


def test_num_examples_defaults_to_an_endless_stream():
    assert Probe().num_examples("test") is None

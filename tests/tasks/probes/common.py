"""Checks shared by the probe tests: determinism, batch validity, metric sanity, additivity."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.tasks.probes import IGNORE, Probe, ProbeBatch


def same_batch(a: ProbeBatch, b: ProbeBatch) -> bool:
    return (torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
            and a.extra.keys() == b.extra.keys()
            and all(torch.equal(a.extra[k], b.extra[k]) for k in a.extra))


def check_determinism(probe: Probe, batch_size: int = 8) -> None:
    """Same (split, step, seed) -> same batch; another step, split or seed -> another batch."""
    first = probe.batch("train", 3, batch_size, seed=1)
    assert same_batch(first, probe.batch("train", 3, batch_size, seed=1))
    assert not torch.equal(first.inputs, probe.batch("train", 4, batch_size, seed=1).inputs)
    assert not torch.equal(first.inputs, probe.batch("train", 3, batch_size, seed=2).inputs)
    assert not torch.equal(first.inputs, probe.batch("test", 3, batch_size, seed=1).inputs)
    assert not torch.equal(probe.batch("val", 0, batch_size).inputs,
                           probe.batch("test", 0, batch_size).inputs)


def check_valid(probe: Probe, batch: ProbeBatch, batch_size: int) -> None:
    """Shapes, dtypes and id ranges of a batch."""
    L = probe.seq_len
    assert batch.inputs.shape == (batch_size, L) and batch.inputs.dtype == torch.int64
    assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < probe.vocab_size
    if probe.kind == "lm":
        assert batch.targets.shape == (batch_size, L) and batch.targets.dtype == torch.int64
        scored = batch.targets[batch.targets != IGNORE]
        assert scored.numel() > 0
        assert int(scored.min()) >= 0 and int(scored.max()) < probe.vocab_size
    else:
        assert batch.targets.shape == (batch_size,) and batch.targets.dtype == torch.int64
        assert int(batch.targets.min()) >= 0 and int(batch.targets.max()) < probe.num_classes
    for value in batch.extra.values():
        assert value.shape[0] == batch_size


def perfect_logits(probe: Probe, batch: ProbeBatch) -> torch.Tensor:
    """Logits whose argmax is the target wherever one is scored."""
    width = probe.vocab_size if probe.kind == "lm" else probe.num_classes
    safe = batch.targets.clamp(min=0)
    return torch.nn.functional.one_hot(safe, width).float() * 10.0


def random_logits(probe: Probe, batch: ProbeBatch, seed: int = 0) -> torch.Tensor:
    width = probe.vocab_size if probe.kind == "lm" else probe.num_classes
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch.targets.shape, width, generator=g)


def halves(batch: ProbeBatch) -> tuple[ProbeBatch, ProbeBatch]:
    h = batch.inputs.shape[0] // 2

    def part(rows: slice) -> ProbeBatch:
        return ProbeBatch(batch.inputs[rows], batch.targets[rows],
                          {k: v[rows] for k, v in batch.extra.items()})

    return part(slice(0, h)), part(slice(h, None))


def check_additive(probe: Probe, batch: ProbeBatch, logits: torch.Tensor) -> None:
    """Scores of two halves of a batch add up to the score of the whole batch."""
    whole = probe.score(logits, batch)
    h = batch.inputs.shape[0] // 2
    first, second = halves(batch)
    a, b = probe.score(logits[:h], first), probe.score(logits[h:], second)
    assert whole.keys() == a.keys() == b.keys()
    for key in whole:
        assert a[key] + b[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-5), key


def check_packed_logits(probe: Probe, batch: ProbeBatch, logits: torch.Tensor) -> None:
    """(N, V) logits at the scored positions score like the full (B, L, V) logits."""
    packed = logits[batch.targets != IGNORE]
    full, compact = probe.score(logits, batch), probe.score(packed, batch)
    for key in full:
        assert compact[key] == pytest.approx(full[key], rel=1e-5, abs=1e-5), key


def check_metric(probe: Probe, batch: ProbeBatch, chance_below: float) -> None:
    """Perfect logits score 1.0; random logits score below ``chance_below``; sums add up."""
    perfect = probe.metrics(probe.score(perfect_logits(probe, batch), batch))
    assert perfect["accuracy"] == 1.0
    if "exact_match" in perfect:
        assert perfect["exact_match"] == 1.0
    rand = random_logits(probe, batch)
    assert probe.metrics(probe.score(rand, batch))["accuracy"] < chance_below
    check_additive(probe, batch, rand)
    if probe.kind == "lm":
        check_packed_logits(probe, batch, rand)


def check_config_error(probe_cls: type[Probe], field: str, **params) -> None:
    """Building with ``params`` fails with a ConfigError that names ``field``."""
    with pytest.raises(ConfigError, match=rf"\.{field} = "):
        probe_cls(**params)

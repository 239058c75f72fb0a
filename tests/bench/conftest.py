"""Tiny probes for the bench tests, registered under test-only names while a test runs.

They follow the probe contract (seeded, vectorized, IGNORE at unscored
positions) and are learnable in a few dozen steps by a two-layer model. They
leave the registry when each test ends, so tests that list every probe still
see only the real ones.
"""

from dataclasses import dataclass

import pytest
import torch

from seqlab.config import require
from seqlab.tasks.probes import IGNORE, PROBES, Probe, ProbeBatch, ProbeConfig


@dataclass(frozen=True)
class TinyConfig(ProbeConfig):
    seq_len: int = 8
    vocab: int = 8

    def validate(self) -> None:
        super().validate()
        require(self.seq_len <= 32, self, "seq_len", "an int in [2, 32]")  # exercises with_length errors
        require(self.vocab >= 2, self, "vocab", "an int >= 2")


class CopyFirst(Probe):
    """Every position after the first must output the first token."""

    name = "test-copy-first"
    kind = "lm"
    Config = TinyConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab

    def batch(self, split, step, batch_size, seed=0):
        g = self.generator(split, step, seed)
        x = torch.randint(0, self.cfg.vocab, (batch_size, self.cfg.seq_len), generator=g)
        y = torch.full_like(x, IGNORE)
        y[:, 1:] = x[:, :1]
        return ProbeBatch(x, y)


class FirstClass(Probe):
    """Classify a sequence by its first token modulo the number of classes."""

    name = "test-first-class"
    kind = "classify"
    Config = TinyConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab

    @property
    def num_classes(self) -> int:
        return 2

    def batch(self, split, step, batch_size, seed=0):
        g = self.generator(split, step, seed)
        x = torch.randint(0, self.cfg.vocab, (batch_size, self.cfg.seq_len), generator=g)
        return ProbeBatch(x, x[:, 0] % 2)


@pytest.fixture(autouse=True)
def test_probes(monkeypatch):
    for cls in (CopyFirst, FirstClass):
        monkeypatch.setitem(PROBES, cls.name, cls)

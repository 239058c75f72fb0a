"""Sequential and permuted-sequential digit classification.

Source: the pixel-by-pixel MNIST tasks of Le, Jaitly & Hinton 2015 ("A simple way to
initialize recurrent networks of rectified linear units"), sequential (sMNIST) and with a
fixed random pixel permutation (psMNIST, which removes locality so the model needs long
memory). Here on scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``: 1797 images
shipped with scikit-learn, so it works offline): a 64-token sequence per image (pixels in
row-major order, or permuted), pixel values 0-16 as tokens (vocab 17), kind "classify"
with 10 classes.

Splits are fixed by ``split_seed``, not by the run's seed, so every run sees the same test
set: a seeded shuffle of the 1797 images gives ``test_fraction`` of them to "test", the
next ``val_fraction`` to "val", the rest to "train".

* ``batch("train", step, B, seed)`` samples B training images with replacement, a pure
  function of (seed, step);
* ``batch("val" | "test", step, B)`` walks the held-out part in order: step s holds
  examples ``s * B .. s * B + B - 1`` (the last batch is shorter), and steps past the end
  wrap around. ``num_examples(split)`` says how many there are, so
  ``range(math.ceil(probe.num_examples("test") / B))`` covers the test set exactly once.

Registered twice: ``digits`` (``permuted=False`` by default) and ``digits_permuted``
(``permuted=True``; the permutation is fixed by ``permutation_seed``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import SPLIT_STREAM, Probe, ProbeBatch, ProbeConfig

NUM_PIXELS = 64
NUM_LEVELS = 17  # pixel values 0..16


@functools.lru_cache(maxsize=1)
def load_images() -> tuple[Tensor, Tensor]:
    """(1797, 64) int64 pixels in [0, 16] and (1797,) int64 labels, loaded once."""
    # Imported here: only this probe needs scikit-learn, and it is slow to import.
    from sklearn.datasets import load_digits

    data = load_digits()
    return (torch.as_tensor(data.data, dtype=torch.float64).long(),
            torch.as_tensor(data.target, dtype=torch.int64))


@dataclass(frozen=True)
class DigitsConfig(ProbeConfig):
    """Digits parameters; ``seq_len`` is fixed at 64 (one token per pixel)."""

    seq_len: int = NUM_PIXELS
    permuted: bool = False
    permutation_seed: int = 0
    split_seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1

    def validate(self) -> None:
        super().validate()
        require(self.seq_len == NUM_PIXELS, self, "seq_len", f"{NUM_PIXELS} (one token per pixel)")
        require(0.0 < self.test_fraction < 1.0, self, "test_fraction", "a number in (0, 1)")
        require(0.0 < self.val_fraction and self.test_fraction + self.val_fraction < 1.0, self,
                "val_fraction", f"a number in (0, 1 - test_fraction = {1 - self.test_fraction:g})")


@dataclass(frozen=True)
class DigitsPermutedConfig(DigitsConfig):
    """The same parameters with the pixel permutation on by default."""

    permuted: bool = True


@functools.lru_cache(maxsize=8)
def _split_indices(split_seed: int, test_fraction: float, val_fraction: float
                   ) -> dict[str, Tensor]:
    num_images = load_images()[0].shape[0]
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(split_seed))
    num_test = round(test_fraction * num_images)
    num_val = round(val_fraction * num_images)
    return {"test": order[:num_test], "val": order[num_test:num_test + num_val],
            "train": order[num_test + num_val:]}


@register("digits")
class Digits(Probe):
    """8x8 digits as pixel sequences; see the module docstring."""

    kind = "classify"
    Config = DigitsConfig

    @property
    def vocab_size(self) -> int:
        return NUM_LEVELS

    @property
    def num_classes(self) -> int:
        return 10

    def pixel_order(self) -> Tensor:
        """(64,) the order in which pixels are read (identity unless permuted)."""
        if not self.cfg.permuted:
            return torch.arange(NUM_PIXELS)
        return torch.randperm(NUM_PIXELS,
                              generator=torch.Generator().manual_seed(self.cfg.permutation_seed))

    def split_indices(self, split: str) -> Tensor:
        """Indices (into ``load_images()``) of the images in ``split``."""
        if split not in SPLIT_STREAM:
            raise ValueError(f"split {split!r} is not allowed: expected one of {list(SPLIT_STREAM)}")
        cfg = self.cfg
        return _split_indices(cfg.split_seed, cfg.test_fraction, cfg.val_fraction)[split]

    def num_examples(self, split: str) -> int | None:
        """Size of "val" / "test" (walked in order); None for "train" (sampled)."""
        indices = self.split_indices(split)
        return None if split == "train" else len(indices)

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        pixels, labels = load_images()
        indices = self.split_indices(split)
        if split == "train":
            g = self.generator(split, step, seed)
            chosen = indices[torch.randint(len(indices), (batch_size,), generator=g)]
        else:
            step = step % math.ceil(len(indices) / batch_size)  # wrap around after one pass
            chosen = indices[step * batch_size:(step + 1) * batch_size]
        inputs = pixels[chosen][:, self.pixel_order()]
        return ProbeBatch(inputs, labels[chosen])


@register("digits_permuted")
class DigitsPermuted(Digits):
    """Permuted-sequential digits (``permuted=True`` by default)."""

    Config = DigitsPermutedConfig

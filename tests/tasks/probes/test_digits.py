import math

import pytest
import torch

from seqlab.tasks.probes import build
from seqlab.tasks.probes.digits import Digits, load_images
from tests.tasks.probes.common import check_config_error, check_metric, check_valid


def test_splits_are_disjoint_and_cover_the_images():
    probe = Digits()
    parts = [set(probe.split_indices(s).tolist()) for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == 1797 and len(set.union(*parts)) == 1797
    assert len(parts[2]) == round(0.2 * 1797) and len(parts[1]) == round(0.1 * 1797)
    assert probe.num_examples("test") == len(parts[2]) and probe.num_examples("train") is None


def test_test_walk_covers_the_test_set_once_then_wraps():
    probe = Digits()
    pixels, labels = load_images()
    n, B = probe.num_examples("test"), 64
    batches = [probe.batch("test", s, B) for s in range(math.ceil(n / B))]
    inputs = torch.cat([b.inputs for b in batches])
    assert inputs.shape == (n, 64) and batches[-1].inputs.shape[0] == n - B * (len(batches) - 1)
    expected = probe.split_indices("test")
    assert torch.equal(inputs, pixels[expected]) and torch.equal(
        torch.cat([b.targets for b in batches]), labels[expected])
    assert torch.equal(probe.batch("test", len(batches), B).inputs, batches[0].inputs)


def test_train_sampling_is_deterministic_and_from_the_train_part():
    probe = Digits()
    pixels, _ = load_images()
    a, b = probe.batch("train", 5, 32, seed=1), probe.batch("train", 5, 32, seed=1)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, probe.batch("train", 6, 32, seed=1).inputs)
    assert not torch.equal(a.inputs, probe.batch("train", 5, 32, seed=2).inputs)
    check_valid(probe, a, 32)
    train_rows = {tuple(r) for r in pixels[probe.split_indices("train")].tolist()}
    assert all(tuple(r) in train_rows for r in a.inputs.tolist())


def test_permuted_reads_a_fixed_permutation():
    plain, permuted = build("digits"), build("digits_permuted")
    order = permuted.pixel_order()
    assert sorted(order.tolist()) == list(range(64)) and not torch.equal(order, torch.arange(64))
    assert torch.equal(order, build("digits", permuted=True).pixel_order())
    assert not torch.equal(order, build("digits", permuted=True, permutation_seed=1).pixel_order())
    a, b = plain.batch("test", 0, 16), permuted.batch("test", 0, 16)
    assert torch.equal(b.inputs, a.inputs[:, order]) and torch.equal(a.targets, b.targets)


def test_metric():
    probe = Digits()
    check_metric(probe, probe.batch("train", 0, 512), chance_below=0.2)


def test_config_errors_name_the_field():
    check_config_error(Digits, "seq_len", seq_len=32)
    check_config_error(Digits, "test_fraction", test_fraction=1.0)
    check_config_error(Digits, "val_fraction", val_fraction=0.9)
    with pytest.raises(ValueError, match="split"):
        Digits().batch("dev", 0, 4)

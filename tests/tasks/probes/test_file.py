"""The file probe: the user's sequences with a fixed split, train-only normalisation, and the
metrics of classification and regression."""

import math

import numpy as np
import pytest
import torch

from seqlab.config import ConfigError
from seqlab.tasks.probes import build
from seqlab.tasks.probes.file import FileProbe
from seqlab.tasks.seqfiles import SeqFileError, split
from tests.tasks.seqfile_writers import digits, ts_text, write_csv, write_npz


@pytest.fixture
def npz(tmp_path):
    x, y, _ = digits()
    return write_npz(tmp_path / "digits.npz", x.reshape(-1, 8, 8), y)


def test_builds_from_a_file_with_its_shape_classes_and_digest(npz):
    probe = build("file", path=str(npz))
    assert isinstance(probe, FileProbe) and probe.kind == "classify"
    assert (probe.seq_len, probe.channels, probe.num_classes, probe.num_outputs) == (8, 8, 10, 10)
    assert probe.classes == tuple("0123456789") and len(probe.cfg.data_digest) == 16
    # The resolved config rebuilds the same probe (a sweep stores it in each cell).
    again = FileProbe(probe.cfg)
    assert again.cfg == probe.cfg and again.cfg.from_dict(again.cfg.to_dict()) == again.cfg


def test_splits_are_the_fixed_stratified_ones_and_test_is_walked_once(npz):
    _, y, _ = digits()
    probe = build("file", path=str(npz))
    expected = split(y, seed=0, test_fraction=0.2, val_fraction=0.1)
    for s in ("train", "val", "test"):
        assert probe.split_indices(s).tolist() == expected[s].tolist()
    n, B = probe.num_examples("test"), 64
    assert n == 359 and probe.num_examples("train") is None
    batches = [probe.batch("test", s, B) for s in range(math.ceil(n / B))]
    targets = torch.cat([b.targets for b in batches])
    assert torch.equal(targets, torch.from_numpy(y[expected["test"]]))
    assert batches[0].inputs.shape == (B, 8, 8) and batches[0].inputs.dtype == torch.float32
    assert batches[0].extra["lengths"].tolist() == [8] * B
    assert torch.equal(probe.batch("test", len(batches), B).inputs, batches[0].inputs)  # wraps


def test_train_batches_are_seeded_and_from_the_train_split(npz):
    probe = build("file", path=str(npz))
    a, b = probe.batch("train", 3, 16, seed=1), probe.batch("train", 3, 16, seed=1)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, probe.batch("train", 4, 16, seed=1).inputs)
    train = {tuple(r) for r in probe.data.x[probe.split_indices("train")].flatten(1).tolist()}
    assert all(tuple(r) in train for r in a.inputs.flatten(1).tolist())


def test_normalisation_uses_training_statistics_only(npz, tmp_path):
    x, y, _ = digits()
    probe = build("file", path=str(npz))
    train = probe.split_indices("train").numpy()
    rows = x.reshape(-1, 8, 8)[train].reshape(-1, 8)                          # (steps, 8 channels)
    std = rows.std(0)
    std[std == 0] = 1.0                                                       # a constant channel
    expected = (x.reshape(-1, 8, 8) - rows.mean(0)) / std
    assert torch.allclose(probe.data.x, torch.from_numpy(expected).float(), atol=1e-5)
    # Changing test sequences changes nothing the training data are scaled by.
    test = probe.split_indices("test").numpy()
    x2 = x.reshape(-1, 8, 8).copy()
    x2[test] *= 100
    other = build("file", path=str(write_npz(tmp_path / "scaled.npz", x2, y)))
    assert torch.equal(other.data.x[train], probe.data.x[train])
    raw = build("file", path=str(npz), normalize="none")
    assert torch.equal(raw.data.x, torch.from_numpy(x.reshape(-1, 8, 8)).float())


def test_regression_targets_are_standardised_and_scored_in_file_units(tmp_path):
    x, _, intensity = digits()
    probe = build("file", path=str(write_npz(tmp_path / "i.npz", x, intensity)), task="regress")
    assert probe.kind == "regress" and probe.num_classes is None and probe.num_outputs == 1
    train = probe.split_indices("train").numpy()
    mean, std = intensity[train].mean(), intensity[train].std()
    batch = probe.batch("test", 0, 359)
    assert batch.targets.shape == (359, 1) and batch.targets.dtype == torch.float32
    truth = torch.from_numpy(intensity[probe.split_indices("test").numpy()])
    assert torch.allclose(batch.targets[:, 0].double() * std + mean, truth, atol=1e-5)
    perfect = probe.metrics(probe.score(batch.targets, batch))
    assert perfect["mse"] == 0 and perfect["r2"] == 1.0
    off = probe.metrics(probe.score(batch.targets + 0.5, batch))     # 0.5 std off everywhere
    assert off["mae"] == pytest.approx(0.5 * std, rel=1e-5)
    assert off["mse"] == pytest.approx((0.5 * std) ** 2, rel=1e-5)
    # Scores are sums: two halves add up to the whole.
    halves = [probe.batch("test", s, 180) for s in range(2)]
    totals = {}
    for h in halves:
        for k, v in probe.score(h.targets * 0.9, h).items():
            totals[k] = totals.get(k, 0.0) + v
    whole = probe.metrics(probe.score(batch.targets * 0.9, batch))
    assert probe.metrics(totals) == pytest.approx(whole)
    y_test = truth.numpy()
    pred = (batch.targets[:, 0].double() * 0.9 * std + mean).numpy()
    r2 = 1 - ((pred - y_test) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum()
    assert whole["r2"] == pytest.approx(r2, rel=1e-6)


def test_a_test_file_is_the_test_split(tmp_path):
    x, y, _ = digits()
    train = tmp_path / "Digits_TRAIN.ts"
    train.write_text(ts_text(x[:300], y[:300], classes=list("0123456789")))
    test = tmp_path / "Digits_TEST.ts"
    test.write_text(ts_text(x[300:400], y[300:400], classes=list("0123456789")))
    probe = build("file", path=str(train), test_path=str(test))
    assert probe.split_indices("test").tolist() == list(range(300, 400))
    assert len(probe.split_indices("val")) == 30 and len(probe.split_indices("train")) == 270
    b = probe.batch("test", 0, 100)
    assert torch.equal(b.targets, torch.from_numpy(y[300:400]))


def test_config_errors_name_the_field(npz, tmp_path):
    with pytest.raises(ConfigError, match=r"FileConfig.path is empty: name the data file"):
        build("file")
    with pytest.raises(ConfigError, match=r"FileConfig.seq_len = 4 is not allowed: .* fixes the length "
                                          r"at 8"):
        build("file", path=str(npz), seq_len=4)
    with pytest.raises(ConfigError, match=r"FileConfig.label_column = 'last' does not apply to .* "
                                          r"\(format npz\); it is an option of csv files"):
        build("file", path=str(npz), label_column="last")
    with pytest.raises(ConfigError, match=r"FileConfig.data_digest = '0000000000000000' but .* now has "
                                          r"digest"):
        build("file", path=str(npz), data_digest="0000000000000000")
    with pytest.raises(ConfigError, match=r"FileConfig.val_fraction = 0.9 is not allowed"):
        build("file", path=str(npz), val_fraction=0.9)
    with pytest.raises(ValueError, match=r"fixes the sequence length at 8"):
        build("file", path=str(npz)).with_length(16)


def test_data_errors(tmp_path):
    x, y, _ = digits()
    one = write_npz(tmp_path / "one.npz", x[:20], np.zeros(20, dtype=np.int64))
    with pytest.raises(SeqFileError, match=r"every sequence has the label '0'"):
        build("file", path=str(one))
    holes = x[:20].copy()
    holes[3, 5] = np.nan
    csv = write_csv(tmp_path / "holes.csv", holes, y[:20])
    with pytest.raises(SeqFileError, match=r"holes\.csv line 4: step 6, channel 1 is missing \(NaN\); "
                                           r"the file probe needs complete sequences"):
        build("file", path=str(csv))
    tiny = write_npz(tmp_path / "tiny.npz", x[:2], y[:2])
    with pytest.raises(SeqFileError, match=r"tiny\.npz has 2 sequences: too few for a test split"):
        build("file", path=str(tiny))


def test_sequences_of_several_lengths_carry_their_lengths(tmp_path):
    x, y, _ = digits()
    seqs = [x[i, :20 + i % 40] for i in range(200)]
    path = tmp_path / "ragged.ts"
    path.write_text(ts_text(seqs, y[:200], classes=list("0123456789"), equal=False))
    probe = build("file", path=str(path))
    assert probe.seq_len == 59
    batch = probe.batch("test", 0, 40)
    lengths = batch.extra["lengths"]
    expected = [len(seqs[i]) for i in probe.split_indices("test")[:40].tolist()]
    assert lengths.tolist() == expected
    past_end = torch.arange(59)[None, :] >= lengths[:, None]
    assert not batch.inputs[past_end].any() and batch.inputs[~past_end].abs().sum() > 0

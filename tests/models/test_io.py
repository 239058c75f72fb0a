"""Model folders: a checksum manifest is written and verified; damage is named, never loaded."""

import json

import pytest
import torch

from seqlab.models.io import CheckpointError, load, save
from seqlab.models.lm import LM, LMConfig


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=32, dim=16, layers=("attention", "gru"), mlp_hidden=16,
                        mixer_options={"attention": {"heads": 2}}))
    return model, save(model, tmp_path / "m")


def test_save_writes_a_manifest_and_load_round_trips(saved):
    model, path = saved
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert sorted(files) == ["config.json", "model.safetensors"]
    back = load(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_bytes_overwritten_in_the_weights_are_refused_by_name(saved):
    _, path = saved
    w = path / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-2000:] = b"\xff" * 2000     # same size: only the checksum can tell
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors does not match its checksum"):
        load(path)


def test_a_truncated_config_is_refused_by_name(saved):
    _, path = saved
    (path / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"config.json has 1 bytes"):
        load(path)


def test_non_finite_weights_are_refused_even_without_a_manifest(saved):
    model, path = saved
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    save(model, path)
    (path / "manifest.json").unlink()   # a folder saved by hand or by an older version
    with pytest.raises(CheckpointError, match=r"non-finite values \(NaN or inf\) in 'norm.weight'"):
        load(path)


def test_a_config_that_is_not_utf8_is_a_checkpoint_error(saved):
    _, path = saved
    (path / "manifest.json").unlink()
    (path / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match="config.json is not UTF-8 text"):
        load(path)

"""train-draft: the feature cache, the training loop, save/load, the command line."""

import json

import pytest
import torch

from seqlab.cli import main
from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.decoding.drafters import load
from seqlab.decoding.drafters.train import DraftTrainConfig, cache_features, train_drafter

from .common import drafter, target

TEXT = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
        "The function returns the sum of its arguments. ") * 40


class Bytes:
    def encode(self, text):
        return list(text.encode())


def _cfg(kind, **kw):
    return DraftTrainConfig(kind=kind, **{"steps": 60, "batch": 64, "seq_len": 64, "cache_tokens": 2048,
                                          "width": 32, "window": 4, "draft_vocab": 64, "lr": 1e-2, **kw})


@pytest.mark.parametrize("kind", ["heads", "chimera", "transfer"])
def test_training_lowers_the_loss_and_round_trips(kind, tmp_path):
    m = target("attention", vocab=256, dim=32).float()
    cache = cache_features(m, Bytes(), [TEXT], _cfg(kind), "tiny", folder=tmp_path / "cache",
                           progress=False)
    d, report = train_drafter(cache, _cfg(kind), progress=False)
    assert report["steps"] == 60
    assert report["train_loss_last"] < 0.9 * report["train_loss_first"]
    assert report["held_out_after"]["loss"] < report["held_out_before"]["loss"]
    d.save(tmp_path / kind)
    back = load(tmp_path / kind)
    assert json.loads((tmp_path / kind / "drafter.json").read_text())["kind"] == kind
    for a, b in zip(d.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    prompts = [list(b"def add(a"), list(b"The func")]
    plain = generate(m, prompts, "greedy", 12).tokens
    assert generate(m, prompts, "speculative", 12, draft=back).tokens == plain


def test_the_cache_is_built_once(tmp_path):
    m = target("attention", vocab=256, dim=32).float()
    folder = cache_features(m, Bytes(), [TEXT], _cfg("heads"), "tiny", folder=tmp_path / "c",
                            progress=False)
    stamp = (folder / "features.safetensors").stat().st_mtime_ns
    again = cache_features(m, Bytes(), [TEXT], _cfg("chimera"), "tiny", folder=tmp_path / "c",
                           progress=False)
    assert again == folder and (folder / "features.safetensors").stat().st_mtime_ns == stamp


def test_a_drafter_for_another_target_is_refused():
    small, other = target(dim=32), target(dim=64, seed=3)
    with pytest.raises(ConfigError, match="hidden size 32.*have 64.*train-draft"):
        generate(other, [[1, 2]], "speculative", 4, draft=drafter("heads", small))
    with pytest.raises(ConfigError, match="vocab_size 40.*has 41"):
        generate(target(vocab=41), [[1, 2]], "speculative", 4, draft=drafter("heads", small))
    with pytest.raises(ConfigError, match="kind"):
        DraftTrainConfig(kind="medusa")


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["train-draft", "smollm2", "--kind", "eagle"]) == 2
    assert "--kind 'eagle' is not a drafter; choose one of chimera, heads, transfer" in \
        capsys.readouterr().err
    assert main(["train-draft", str(tmp_path / "none"), "--kind", "heads"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train-draft", str(tmp_path), "--kind", "heads", "--data",
                 str(tmp_path / "missing.txt")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_trains_a_drafter_that_generate_uses(tmp_path, capsys):
    from seqlab.models.io import save

    ckpt, other = tmp_path / "tiny", tmp_path / "wide"
    save(target("attention", vocab=256, dim=32).float(), ckpt)
    save(target("attention", vocab=256, dim=64).float(), other)
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    out = tmp_path / "drafter"
    assert main(["train-draft", str(ckpt), "--kind", "transfer", "--data", str(data), "--steps", "20",
                 "--batch", "32", "--seq-len", "64", "--cache-tokens", "1024", "--width", "16",
                 "--draft-vocab", "64", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    assert (out / "drafter.safetensors").is_file() and (out / "training.json").is_file()
    capsys.readouterr()
    args = ["--prompt", "def add(", "--max-new-tokens", "8"]
    assert main(["generate", str(ckpt), "--strategy", "greedy"] + args) == 0
    greedy = capsys.readouterr().out
    assert main(["generate", str(ckpt), "--strategy", "speculative", "--draft", str(out)] + args) == 0
    assert capsys.readouterr().out == greedy
    assert main(["generate", str(other), "--strategy", "speculative", "--draft", str(out)] + args) == 2
    assert "hidden size 32" in capsys.readouterr().err

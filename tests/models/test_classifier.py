"""The sequence classifier: the LM's features, pooled, through a linear head."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import ConfigError
from seqlab.errors import CheckpointError
from seqlab.models import build_lm, save
from seqlab.models.classifier import (ClassifierConfig, SequenceClassifier, load_classifier,
                                      save_classifier)
from seqlab.models.lm import LMConfig


def make(pooling="last", layers=("attention", "mamba"), tie=True):
    backbone = LMConfig(vocab_size=12, dim=16, layers=layers, mlp_hidden=32, tie_embeddings=tie,
                        mixer_options={"attention": {"heads": 2}} if "attention" in layers else {})
    return SequenceClassifier(ClassifierConfig(backbone=backbone, num_classes=3, pooling=pooling))


def test_lm_forward_is_head_of_features():
    model = build_lm(vocab_size=12, dim=16, layers=["attention", "mamba"], mlp_hidden=32,
                     mixer_options={"attention": {"heads": 2}}).double()
    x = torch.randint(0, 12, (2, 7))
    hidden, _ = model.features(x)
    logits, _ = model(x)
    assert hidden.shape == (2, 7, 16)
    torch.testing.assert_close(model.head(hidden), logits)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_logits_are_head_of_pooled_features(pooling):
    model = make(pooling).double()
    x = torch.randint(0, 12, (3, 9))
    hidden, _ = model.backbone.features(x)
    pooled = hidden[:, -1] if pooling == "last" else hidden.mean(1)
    logits = model(x)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, model.classifier(pooled))


def test_learns_the_class_of_the_first_token():
    torch.manual_seed(0)
    model = make("last", layers=("attention",))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        x = torch.randint(0, 12, (32, 6), generator=g)
        loss = F.cross_entropy(model(x), x[:, 0] % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randint(0, 12, (256, 6), generator=g)
    accuracy = (model(x).argmax(-1) == x[:, 0] % 3).float().mean().item()
    assert accuracy > 0.9  # chance is 1/3


def test_untied_lm_head_is_not_counted():
    tied, untied = make(tie=True), make(tie=False)
    assert untied.num_parameters() == tied.num_parameters()
    assert tied.state_bytes(10) == tied.backbone.state_bytes(10) > 0


def test_save_load_round_trip(tmp_path):
    model = make("mean")
    x = torch.randint(0, 12, (2, 5))
    save_classifier(model, tmp_path / "c")
    again = load_classifier(tmp_path / "c")
    assert again.cfg == model.cfg
    torch.testing.assert_close(again(x), model(x))


def test_load_refuses_an_lm_checkpoint(tmp_path):
    save(build_lm(vocab_size=12, dim=16, layers=["attention"]), tmp_path / "lm")
    with pytest.raises(CheckpointError, match="holds a 'lm' model, not a classifier"):
        load_classifier(tmp_path / "lm")


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="num_classes = 1 is not allowed"):
        ClassifierConfig(num_classes=1)
    with pytest.raises(ConfigError, match="pooling = 'max' is not allowed"):
        ClassifierConfig(pooling="max")

"""SeriesModel: real-valued steps through the LM's blocks; padding after a sequence's end
changes nothing."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.models.lm import LMConfig
from seqlab.models.series import SeriesConfig, SeriesModel


def make(mixer: str, pooling: str = "last") -> SeriesModel:
    torch.manual_seed(0)
    backbone = LMConfig(vocab_size=1, dim=16, layers=(mixer, mixer), mlp_hidden=32)
    return SeriesModel(SeriesConfig(backbone=backbone, channels=3, outputs=4, pooling=pooling)).double()


@pytest.mark.parametrize("mixer", ["attention", "mamba"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padding_after_the_end_changes_no_prediction(mixer, pooling):
    model = make(mixer, pooling).eval()
    lengths = torch.tensor([7, 3, 5])
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    padded = x.clone()
    for i, n in enumerate(lengths.tolist()):
        padded[i, n:] = 1e3 * torch.randn(7 - n, 3, dtype=torch.float64)    # garbage past the end
    out = model(padded, lengths=lengths)
    assert out.shape == (3, 4)
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i:i + 1, :n])                                        # no padding at all
        torch.testing.assert_close(out[i:i + 1], alone)


def test_facts_and_input_checks():
    model = make("mamba")
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - (3 * 16 + 16)
    assert model.state_bytes(64) > 0
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, length, 3\), got \(2, 5\)"):
        model(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"real-valued inputs"):
        model(torch.zeros(2, 5, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\]"):
        model(torch.zeros(2, 5, 3, dtype=torch.float64), lengths=torch.tensor([0, 5]))
    with pytest.raises(ConfigError, match=r"SeriesConfig.channels = 0"):
        SeriesConfig(channels=0)

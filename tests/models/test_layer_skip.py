"""Self-speculation drafts made of a target's own layers."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.models.layer_skip import layer_skip_draft
from tests.decoding.test_speculative import model_of


def test_layer_skip_draft_shares_weights_and_keeps_greedy():
    m = model_of(["attention", "mamba", "attention", "gru"])
    d = layer_skip_draft(m, [0, 2])
    assert len(d.blocks) == 2 and d.blocks[1] is m.blocks[2] and d.head is m.head
    assert d.cfg.layers == ("attention", "attention") and m.cfg.layers[1] == "mamba"
    # the draft is the target minus layers 1 and 3: check against the target's own modules
    x = torch.tensor([[1, 2, 3, 4]])
    h = m.embed(x)
    for i in (0, 2):
        h, _ = m.blocks[i](h, None)
    assert torch.allclose(d(x)[0], m.head(m.norm(h)))
    prompts = [[1, 2, 3], [4, 5, 6, 7]]
    for strategy, opts in (("speculative", {"gamma": 3}), ("tree", {"branching": (2, 1)})):
        out = generate(m, prompts, strategy, 12, temperature=0, draft=d, **opts)
        assert out.tokens == generate(m, prompts, "greedy", 12).tokens
    with pytest.raises(ConfigError, match=r"keep = \[4\] is not allowed"):
        layer_skip_draft(m, [4])

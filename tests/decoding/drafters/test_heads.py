"""Medusa-like heads: lossless chains and trees on every kind of target."""

import pytest

from seqlab.decoding import generate

from .common import PATTERNS, PROMPTS, drafter, target
from .lossless import check_greedy, check_sampling


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_greedy_chain_equals_plain_greedy(pattern):
    check_greedy(target(pattern), "heads")


def test_greedy_tree_equals_plain_greedy():
    m = target("attention")
    plain = generate(m, PROMPTS, "greedy", 13).tokens
    for attn in (True, False):
        out = generate(m, PROMPTS, "tree", 13, draft=drafter("heads", m), branching=(2, 2, 1),
                       tree_attention=attn)
        assert out.tokens == plain


def test_sampling_is_lossless():
    check_sampling("heads", "speculative", {"gamma": 2})


def test_a_cached_prompt_prefix_is_lossless():
    import torch

    m = target("hybrid")
    _, state = m(torch.tensor([PROMPTS[1][:4]]))
    out = generate(m, PROMPTS, "speculative", 10, draft=drafter("heads", m),
                   cached=[None, (4, state), None, None])
    assert out.tokens == generate(m, PROMPTS, "greedy", 10).tokens

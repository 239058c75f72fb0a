"""Hidden Transfer: lossless as a chain and as a tree (tree attention or rows)."""

import pytest

from seqlab.config import ConfigError
from seqlab.decoding import generate

from .common import PATTERNS, PROMPTS, drafter, target
from .lossless import check_greedy, check_sampling


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_greedy_chain_equals_plain_greedy(pattern):
    check_greedy(target(pattern), "transfer")


@pytest.mark.parametrize("pattern,attn", [("attention", True), ("attention", False),
                                          ("recurrent", False), ("hybrid", False)])
def test_greedy_tree_equals_plain_greedy(pattern, attn):
    m = target(pattern)
    plain = generate(m, PROMPTS, "greedy", 13).tokens
    accepted = 0
    for d in (drafter("transfer", m), drafter("transfer", m, noise=0.3, draft_vocab=30)):
        for shape in ((2, 2, 1), (3,), (1, 1, 1, 1)):
            out = generate(m, PROMPTS, "tree", 13, draft=d, branching=shape, tree_attention=attn)
            assert out.tokens == plain
            accepted += out.stats.accepted_tokens
    assert accepted > 0


def test_tree_sampling_is_lossless():
    check_sampling("transfer", "tree", {"branching": (2, 1)})


def test_tree_errors():
    m = target()
    with pytest.raises(ConfigError, match="at most 4 entries"):
        generate(m, PROMPTS, "tree", 4, draft=drafter("transfer", m), branching=(1,) * 5)
    with pytest.raises(ConfigError, match="not beam_width"):
        generate(m, PROMPTS, "tree", 4, draft=drafter("transfer", m), beam_width=2, depth=2)

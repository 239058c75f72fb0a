"""Chimera: lossless chains; trees are refused (it drafts token by token)."""

import pytest

from seqlab.config import ConfigError
from seqlab.decoding import generate

from .common import PATTERNS, PROMPTS, drafter, target
from .lossless import check_greedy, check_sampling


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_greedy_chain_equals_plain_greedy(pattern):
    check_greedy(target(pattern), "chimera")


def test_sampling_is_lossless():
    check_sampling("chimera", "speculative", {"gamma": 2})


def test_tree_is_refused_with_the_fix():
    m = target()
    with pytest.raises(ConfigError, match="strategy 'speculative'"):
        generate(m, PROMPTS, "tree", 4, draft=drafter("chimera", m))

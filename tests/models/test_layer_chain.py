"""Chains of a model's own layers: skips, repeats, any order; both faces and decoding."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.models.layer_chain import PrefixCache, chain_stats, layer_chain
from tests.decoding.test_speculative import model_of

LAYERS = ["attention", "mamba", "attention", "gru"]


def by_hand(m, chain, x):
    """The chain's logits from the target's own modules, one block after another."""
    h = m.embed(x)
    for i in chain:
        h, _ = m.blocks[i](h, None)
    return m.head(m.norm(h))


@pytest.mark.parametrize("chain", [[0, 1, 1, 2, 3], [0, 2, 2, 2], [3, 0, 1, 0]],
                         ids=["repeat-mamba", "repeat-attention-twice", "reorder-and-loop"])
def test_chain_parallel_equals_step_by_step_in_float64(chain):
    m = model_of(LAYERS)
    c = layer_chain(m, chain)
    assert len(c.blocks) == len(chain) and c.head is m.head and c.embed is m.embed
    assert all(c.blocks[k] is m.blocks[i] for k, i in enumerate(chain))
    x = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]])
    full, _ = c(x)
    torch.testing.assert_close(full, by_hand(m, chain, x), rtol=0, atol=1e-12)
    state, steps = c.init_state(2, dtype=torch.float64), []
    assert len(state.layers) == len(chain)
    for t in range(x.shape[1]):
        logits, state = c.step(x[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-10)
    # chunked prefill carries the per-occurrence states as well
    a, s = c(x[:, :3])
    b, _ = c(x[:, 3:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=0, atol=1e-10)


def test_repeated_layer_keeps_its_own_state_per_occurrence():
    m = model_of(LAYERS)
    c = layer_chain(m, [0, 0, 1])   # layer 0 is attention: one KV cache per occurrence
    _, state = c(torch.tensor([[1, 2, 3]]))
    first, second = state.layers[0], state.layers[1]
    assert first.lengths == second.lengths == (3,) and first.buf is not second.buf
    # the second occurrence attends over the first's outputs, so its keys differ
    assert not torch.allclose(first.k[:, :, :3], second.k[:, :, :3])


def test_identity_chain_is_the_model():
    m = model_of(LAYERS)
    c = layer_chain(m, range(len(LAYERS)))
    x = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    assert torch.equal(c(x)[0], m(x)[0])
    assert c.cfg == m.cfg


def test_chain_draft_keeps_greedy():
    m = model_of(LAYERS)
    prompts = [[1, 2, 3], [4, 5, 6, 7]]
    greedy = generate(m, prompts, "greedy", 12).tokens
    for chain in ([0, 0, 2], [1, 3, 3]):
        out = generate(m, prompts, "speculative", 12, temperature=0,
                       draft=layer_chain(m, chain), gamma=3)
        assert out.tokens == greedy


def test_bad_chains_are_config_errors():
    m = model_of(LAYERS)
    for bad in ([], [4], [-1, 0], [0, 1.0], [True]):
        with pytest.raises(ConfigError, match=r"chain = .* is not allowed: expected a non-empty"):
            layer_chain(m, bad)


def test_chain_stats():
    assert chain_stats([0, 1, 1, 3], 4) == {"length": 4, "skipped": 1, "repeated": 1}
    assert chain_stats(range(6), 6) == {"length": 6, "skipped": 0, "repeated": 0}
    assert chain_stats([2, 2, 2], 3) == {"length": 3, "skipped": 2, "repeated": 2}


def test_prefix_cache_runs_only_new_layers_and_matches_direct():
    m = model_of(LAYERS)
    x = torch.tensor([[1, 2, 3, 4]])
    calls = []

    def apply(i, h):
        calls.append(i)
        return m.blocks[i](h, None)[0]

    cache = PrefixCache(m.embed(x), apply, max_entries=8)
    for chain in ([0, 1, 1, 3], [0, 1, 2], [0, 1, 1, 3], [0, 1, 1, 2, 3]):
        calls.clear()
        h = cache.run(chain)
        torch.testing.assert_close(m.head(m.norm(h)), by_hand(m, chain, x), rtol=0, atol=0)
        if chain == [0, 1, 2]:
            assert calls == [2]
        if chain == [0, 1, 1, 2, 3]:
            assert calls == [2, 3]
    assert cache.layers_run == 4 + 1 + 0 + 2
    # the bound holds: the oldest prefixes go first
    small = PrefixCache(0, lambda i, v: v + i, max_entries=2)
    assert small.run([1, 2, 3]) == 6 and small.run([1]) == 1 and small.layers_run == 4
    with pytest.raises(ConfigError, match="max_entries"):
        PrefixCache(0, lambda i, v: v, max_entries=0)

"""The Block Transformer: both faces equal in float64, causality, what block size 1 reduces
to, save/load, and every decoding strategy lossless on it at batch > 1 with ragged prompts
(a plain LM of the same vocabulary as the draft)."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.decoding import generate
from seqlab.models.block_lm import BlockLM, BlockLMConfig

V = 40
CONFIGS = {
    "L4-attention": dict(block_size=4, layers="attention(heads=2)*2"),
    "L3-hybrid": dict(block_size=3, layers="mamba+attention(heads=2)",
                      local_layers="attention(heads=2)+gru"),
    "L1": dict(block_size=1, layers="attention(heads=2)"),
}


def make(name="L4-attention", dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    opts = {"vocab_size": V, "embed_dim": 8, "dim": 32, "local_dim": 16,
            "local_layers": "attention(heads=2)*2", **CONFIGS[name]}
    model = BlockLM(BlockLMConfig(**opts)).to(dtype).eval()
    with torch.no_grad():  # off the init, so a swapped part cannot hide
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_parallel_equals_steps_and_chunks(name):
    model = make(name)
    tokens = torch.randint(0, V, (3, 14))
    full, _ = model(tokens)
    state, steps = model.init_state(3, dtype=torch.float64), []
    for t in range(14):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)
    # chunks after a fresh prefix (the prefix's state comes from the parallel face)
    _, s = model(tokens[:, :5])
    a, s = model(tokens[:, 5:9], s)
    b, s = model(tokens[:, 9:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), full[:, 5:], atol=1e-10, rtol=1e-10)
    # the parallel face's state continues exactly like the stepped one
    more = torch.randint(0, V, (3, 5))
    torch.testing.assert_close(model(more, s)[0], model(more, state)[0], atol=1e-10, rtol=1e-10)


@torch.no_grad()
def test_causal():
    model = make()
    tokens = torch.randint(0, V, (2, 13))
    base, _ = model(tokens)
    for p in (0, 3, 4, 9):
        changed = tokens.clone()
        changed[:, p + 1:] = (changed[:, p + 1:] + 1) % V
        out, _ = model(changed)
        torch.testing.assert_close(out[:, :p + 1], base[:, :p + 1], atol=0, rtol=0)
        assert not torch.allclose(out[:, p + 1:], base[:, p + 1:])


@torch.no_grad()
def test_block_size_1_is_a_plain_lm_with_a_position_wise_head():
    """L = 1: the global model reads every token's embedding, and the logits after token p are
    the local model run on the single position P c_{p+1} (no attention across positions)."""
    model = make("L1")
    tokens = torch.randint(0, V, (2, 9))
    g = torch.cat([model.start.expand(2, 1, -1), model.block_proj(model.tok_embed(tokens))], 1)
    ctx, _ = model.global_(g)                                          # (2, 10, dim)
    h, _ = model.local(model.ctx_proj(ctx[:, 1:]).reshape(18, 1, -1))   # one position each
    want = model.head(h.reshape(2, 9, -1))
    torch.testing.assert_close(model(tokens)[0], want, atol=1e-12, rtol=1e-12)
    # its global cache grows by one entry per token, like a plain LM's; with L = 4 by one
    # per four tokens, and the local cache never holds more than a block
    l4 = make("L4-attention")
    tokens = torch.randint(0, V, (2, 14))
    for m, L in ((model, 1), (l4, 4)):
        state = m(tokens)[1]
        assert {c.lengths for c in state.global_.layers} == {(14 // L + 1,) * 2}
        assert {c.lengths for c in state.local.layers} == {(14 % L + 1,) * 2}


@torch.no_grad()
def test_ragged_prefill_state_matches_separate_rows():
    model = make("L3-hybrid")
    rows = [torch.randint(0, V, (n,)) for n in (7, 11)]
    states = [model(r[None])[1] for r in rows]
    joined = type(states[0]).cat(states)
    nxt = torch.tensor([3, 5])
    logits, _ = model.step(nxt, joined)
    for b, r in enumerate(rows):
        want, _ = model.step(nxt[b:b + 1], states[b])
        torch.testing.assert_close(logits[b:b + 1], want, atol=1e-10, rtol=1e-10)


def test_save_load_roundtrip(tmp_path):
    model = make("L3-hybrid", dtype=torch.float32)
    seqlab.models.save(model, tmp_path / "m")
    back = seqlab.models.load(tmp_path / "m")
    assert isinstance(back, BlockLM) and back.cfg == model.cfg
    tokens = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens)[0], model(tokens)[0], atol=0, rtol=0)


PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3, 4], [7, 8, 9, 7, 8]]


def manual_greedy(model, prompt, n):
    out = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([out]))
            out.append(int(logits[0, -1].argmax()))
    return out[len(prompt):]


@pytest.mark.parametrize("strategy, options", [
    ("greedy", {}), ("speculative", {"gamma": 3}), ("prompt-lookup", {}), ("ngram", {}),
    ("beam", {"num_beams": 1}),
])
def test_strategies_are_lossless(strategy, options):
    model = make("L3-hybrid", dtype=torch.float32)
    want = [manual_greedy(model, p, 12) for p in PROMPTS]
    kw = {}
    if strategy == "speculative":  # a draft of another kind: a plain LM on the same vocabulary
        torch.manual_seed(9)
        kw = {"draft": seqlab.models.build_lm(vocab_size=V, dim=16, layers="attention(heads=2)").eval(),
              "temperature": 0}
    assert generate(model, PROMPTS, strategy, 12, **kw, **options).tokens == want


def test_sampling_is_seeded():
    model = make(dtype=torch.float32)
    a = generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=3).tokens
    assert a == generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=3).tokens
    assert a != generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=4).tokens


def test_bad_options_are_named():
    with pytest.raises(seqlab.config.ConfigError, match="block_size"):
        BlockLMConfig(block_size=0)
    with pytest.raises(seqlab.config.ConfigError, match="local_layers"):
        BlockLMConfig(local_layers="nosuchmixer")

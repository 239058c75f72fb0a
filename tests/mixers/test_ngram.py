"""The n-gram layer (Akyürek et al. 2024) against a loop over positions, on a hand-made
example, inside the LM (both faces) and under decoding; the conformance suite covers the rest."""

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.models import build_lm

CONFIGS = {
    "n2-uniform": {"n": 2},
    "n3-orders1to3-uniform": {"n": 3, "n_min": 1},
    "n4-orders2to4-softmax": {"n": 4, "n_min": 2, "score": "softmax", "key_dim": 8},
}


def make(dtype=torch.float64, **options):
    m = seqlab.mixers.build("ngram", dim=16, **options).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def reference(m, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The layer position by position: the matching j's found by brute force."""
    B, T, D = x.shape
    y = torch.zeros_like(x)
    for b in range(B):
        tok = tokens[b].tolist()
        for i in range(T):
            hs = []
            for order in m.orders:
                js = [j for j in range(i + 1)
                      if all(j - 1 - k >= 0 and tok[j - 1 - k] == tok[i - k] for k in range(order - 1))]
                h = torch.zeros(D, dtype=x.dtype)
                if js:
                    if m.cfg.score == "uniform":
                        w = torch.full((len(js),), 1 / len(js), dtype=x.dtype)
                    else:
                        q, k = m.q_proj(x[b, i]), m.k_proj(x[b, js])
                        w = torch.softmax(k @ q / m.key_dim ** 0.5, 0)
                    h = w @ x[b, js]
                hs.append(h)
            y[b, i] = m.self_proj(x[b, i]) + m.out_proj(torch.cat(hs))
    return y


@pytest.mark.parametrize("options", list(CONFIGS.values()), ids=list(CONFIGS))
def test_matches_loop_reference(options):
    m = make(**options)
    x = torch.randn(2, 17, 16, dtype=torch.float64)
    tokens = torch.randint(0, 3, (2, 17))
    y, _ = m(x, tokens=tokens)
    torch.testing.assert_close(y, reference(m, x, tokens), atol=1e-12, rtol=1e-10)


def test_bigram_attends_after_earlier_occurrences_of_the_current_token():
    # a b a c a b: with n = 2, position i reads the positions right after an a, b, ... equal
    # to token i (j <= i).
    tokens = torch.tensor([[0, 1, 0, 2, 0, 1]])
    m = seqlab.mixers.build("ngram", dim=3, n=2).double()
    expected = [[], [], [1], [], [1, 3], [2]]
    match = m.matches(tokens, [0], 6)[0, 0]
    assert [torch.nonzero(row).flatten().tolist() for row in match] == expected
    # With one-hot ids as x and identity output, y_i is the in-context bigram distribution
    # of the token after token i: after the a at 4 came b (at 1) and c (at 3).
    with torch.no_grad():
        m.self_proj.weight.zero_()
        m.self_proj.bias.zero_()
        m.out_proj.weight.copy_(torch.eye(3))
    y, _ = m(torch.eye(3, dtype=torch.float64)[tokens], tokens=tokens)
    torch.testing.assert_close(y[0], torch.tensor([[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0],
                                                   [0, .5, .5], [1, 0, 0]], dtype=torch.float64))


def test_a_run_reads_its_own_position():
    # "a a a": the bigram ending at i - 1 continues at i itself, so j = i counts.
    m = seqlab.mixers.build("ngram", dim=4, n=2)
    match = m.matches(torch.zeros(1, 3, dtype=torch.long), [0], 3)[0, 0]
    assert [torch.nonzero(row).flatten().tolist() for row in match] == [[], [1], [1, 2]]


def test_rows_rewound_to_different_lengths_continue_exactly():
    """Per-row truncation (speculative decoding's rollback) then one chunk for all rows."""
    m = make(**CONFIGS["n4-orders2to4-softmax"])
    x = torch.randn(3, 20, 16, dtype=torch.float64)
    tokens = torch.randint(0, 3, (3, 20))
    _, s = m(x[:, :12], tokens=tokens[:, :12])
    keep = [5, 12, 9]
    more_x, more_t = torch.randn(3, 4, 16, dtype=torch.float64), torch.randint(0, 3, (3, 4))
    y, s2 = m(more_x, s.truncate(keep), tokens=more_t)
    assert s2.lengths == tuple(n + 4 for n in keep)
    for b, n in enumerate(keep):
        ref, _ = m(torch.cat([x[b:b + 1, :n], more_x[b:b + 1]], 1),
                   tokens=torch.cat([tokens[b:b + 1, :n], more_t[b:b + 1]], 1))
        torch.testing.assert_close(y[b], ref[0, n:], atol=1e-12, rtol=1e-10)
    # the ragged state steps on, joins and splits like any other
    y_step, _ = m.step(more_x[:, 0], s2, tokens=more_t[:, 0])
    parts = [m.step(more_x[b:b + 1, 0], s2.select([b]), tokens=more_t[b:b + 1, 0])[0] for b in range(3)]
    torch.testing.assert_close(torch.cat(parts), y_step)


@pytest.mark.parametrize("pattern", ["ngram+attention", "ngram(n=3,n_min=2)+mamba+ngram(score=softmax)"])
def test_lm_parallel_chunked_and_step_logits_agree(pattern):
    model = build_lm(vocab_size=5, dim=32, layers=pattern,
                     mixer_options={"attention": {"heads": 2}}
                     if "attention" in pattern else {"mamba": {"d_state": 4, "chunk_size": 5}})
    model = model.double()
    tokens = torch.randint(0, 5, (2, 21))
    full, _ = model(tokens)
    out, state = model(tokens[:, :8])
    rest, _ = model(tokens[:, 8:], state)
    torch.testing.assert_close(torch.cat([out, rest], 1), full, atol=1e-10, rtol=1e-10)
    state, steps = model.init_state(2, dtype=torch.float64), []
    for t in range(21):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)


def test_lm_decoding_with_rollback_equals_greedy():
    """Prompt lookup drafts, verifies and truncates rows to different lengths: its output
    must be greedy's."""
    torch.manual_seed(1)
    model = build_lm(vocab_size=6, dim=32, layers="ngram(n=3,n_min=2)+attention",
                     mixer_options={"attention": {"heads": 2}}).double().eval()
    prompts = [[1, 2, 3, 1, 2, 3, 1, 2], [4, 5, 4, 5, 4]]
    greedy = seqlab.decoding.generate(model, prompts, "greedy", 12)
    lookup = seqlab.decoding.generate(model, prompts, "prompt-lookup", 12)
    assert lookup.tokens == greedy.tokens


def test_token_ids_are_required_and_checked():
    m = seqlab.mixers.build("ngram", dim=8)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"reads the token ids.*tokens=ids.*\(2, 5\)"):
        m(x)
    with pytest.raises(ValueError, match=r"reads the token ids"):
        m.step(x[:, 0], m.init_state(2))
    with pytest.raises(ValueError, match=r"token ids of shape \(2, 4\) for x of shape"):
        m(x, tokens=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        m(x, tokens=torch.zeros(2, 5))
    attn = seqlab.mixers.build("attention", dim=8, heads=2)
    with pytest.raises(ValueError, match="attention does not read token ids"):
        attn(x, tokens=torch.zeros(2, 5, dtype=torch.long))
    block = build_lm(vocab_size=5, dim=8, layers="ngram").blocks[0]
    with pytest.raises(ValueError, match="block's ngram mixer reads the token ids"):
        block(x, None)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"NGramConfig.n_min = 3 is not allowed: expected None "
                                          r"or an int between 1 and n = 2"):
        seqlab.mixers.build("ngram", dim=8, n_min=3)
    with pytest.raises(ConfigError, match=r"NGramConfig.score = 'dot' is not allowed"):
        seqlab.mixers.build("ngram", dim=8, score="dot")

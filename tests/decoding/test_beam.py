"""Beam search and diverse beam search: exact against exhaustive enumeration, greedy at one
beam, ragged batches, every model family, diversity, errors."""

import itertools

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.decoding import generate

PATTERNS = {"attention": ["attention", "attention"], "recurrent": ["mamba", "gru"],
            "hybrid": ["attention", "mamba", "s4d"]}


def model_of(layers, vocab=4, seed=0, scale=1.0):
    torch.manual_seed(seed)
    m = seqlab.models.build_lm(vocab_size=vocab, dim=16, layers=layers,
                               mixer_options={n: seqlab.mixers.get(n).example_options
                                              for n in set(layers)}).double()
    with torch.no_grad():
        m.embed.weight.mul_(scale)
    return m.eval()


@torch.no_grad()
def exhaustive(m, prompt, T, eos=None, length_penalty=0.0):
    """Every continuation of at most T tokens (ending at eos, or of T tokens), scored as beam does,
    best first."""
    V = m.cfg.vocab_size
    seqs = [list(s) for s in itertools.product(range(V), repeat=T)]
    logp = torch.log_softmax(m(torch.tensor([prompt + s for s in seqs]))[0], -1)
    n = len(prompt)
    out = {}
    for i, s in enumerate(seqs):
        total = 0.0
        for k, t in enumerate(s):
            total += logp[i, n - 1 + k, t].item()
            if t == eos or k == T - 1:
                h = tuple(s[:k + 1])
                out[h] = total / (k + 1) ** length_penalty
                break
    return sorted(out.items(), key=lambda kv: -kv[1])


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_beam_is_exact_with_enough_beams_and_greedy_with_one(pattern):
    m = model_of(PATTERNS[pattern])
    prompts = [[1, 2, 3], [0]]  # ragged
    V, T = 4, 3
    out = generate(m, prompts, "beam", T, num_beams=V ** T, length_penalty=0.0,
                   num_return_sequences=V ** T)
    for b, p in enumerate(prompts):
        ref = exhaustive(m, p, T)
        assert out.tokens[b] == list(ref[0][0])
        nbest = out.stats.nbest[b]
        assert [h["tokens"] for h in nbest] == [list(s) for s, _ in ref]
        torch.testing.assert_close(torch.tensor([h["score"] for h in nbest]),
                                   torch.tensor([s for _, s in ref]), rtol=0, atol=1e-9)
    assert out.stats.strategy == "beam" and out.stats.new_tokens == 2 * T
    assert out.stats.target_calls == 2 + (T - 1)  # ragged prefill row by row, then steps
    greedy = generate(m, prompts, "greedy", 6).tokens
    assert generate(m, prompts, "beam", 6, num_beams=1).tokens == greedy


def test_beam_with_eos_is_exact():
    m = model_of(["attention", "gru"], seed=1)
    V, T, eos = 4, 3, 2
    out = generate(m, [[1, 3]], "beam", T, num_beams=V ** T, eos_id=eos, length_penalty=1.0,
                   num_return_sequences=20)
    ref = exhaustive(m, [1, 3], T, eos=eos, length_penalty=1.0)
    assert [h["tokens"] for h in out.stats.nbest[0]] == [list(s) for s, _ in ref[:20]]
    torch.testing.assert_close(torch.tensor([h["score"] for h in out.stats.nbest[0]]),
                               torch.tensor([s for _, s in ref[:20]]), rtol=0, atol=1e-9)
    assert out.tokens[0] == list(ref[0][0])


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_ragged_batch_equals_separate_runs(pattern):
    m = model_of(PATTERNS[pattern], vocab=8, seed=2, scale=3.0)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 0, 1], [6]]
    kw = dict(num_beams=3, eos_id=7, num_return_sequences=3)
    batch = generate(m, prompts, "beam", 8, **kw)
    alone = [generate(m, [p], "beam", 8, **kw) for p in prompts]
    assert batch.tokens == [a.tokens[0] for a in alone]
    for got, a in zip(batch.stats.nbest, alone):
        assert [h["tokens"] for h in got] == [h["tokens"] for h in a.stats.nbest[0]]
        torch.testing.assert_close(torch.tensor([h["score"] for h in got]),
                                   torch.tensor([h["score"] for h in a.stats.nbest[0]]))
    seen = []
    streamed = generate(m, prompts, "beam", 8, on_token=lambda r, t: seen.append((r, t)), **kw)
    assert seen == [(r, t) for r, toks in enumerate(streamed.tokens) for t in toks]


def test_diverse_beam_without_penalty_is_independent_groups():
    m = model_of(["attention", "mamba"], vocab=6, seed=3)
    prompts = [[1, 2], [3, 4, 5]]
    G, K = 3, 2
    div = generate(m, prompts, "diverse-beam", 5, num_beams=G * K, num_groups=G,
                   diversity_penalty=0.0, eos_id=5)
    one = generate(m, prompts, "beam", 5, num_beams=K, num_return_sequences=K, eos_id=5)
    for b in range(len(prompts)):
        for g in range(G):
            got = [h["tokens"] for h in div.stats.nbest[b] if h["group"] == g]
            assert got == [h["tokens"] for h in one.stats.nbest[b]]
    assert div.tokens == one.tokens


def test_diversity_penalty_raises_distinct_ngrams():
    m = model_of(["attention", "gru"], vocab=8, seed=4, scale=2.0)

    def distinct(lam):
        out = generate(m, [[1, 2, 3]], "diverse-beam", 8, num_beams=6, num_groups=3,
                       diversity_penalty=lam)
        seqs = [h["tokens"] for h in out.stats.nbest[0]]
        assert len(seqs) == 6
        return len({tuple(s[i:i + 2]) for s in seqs for i in range(len(s) - 1)})

    assert distinct(2.0) > distinct(0.0)


def test_errors():
    m = model_of(["gru"])
    with pytest.raises(ConfigError, match="num_beams = 5 is not divisible by num_groups = 2"):
        generate(m, [[1]], "diverse-beam", 3, num_beams=5, num_groups=2)
    with pytest.raises(ConfigError, match="num_return_sequences = 5"):
        generate(m, [[1]], "beam", 3, num_beams=4, num_return_sequences=5)
    with pytest.raises(ConfigError, match="num_beams = 0"):
        generate(m, [[1]], "beam", 3, num_beams=0)
    with pytest.raises(ConfigError, match="strategy 'beam' has no option 'num_groups'"):
        generate(m, [[1]], "beam", 3, num_groups=2)

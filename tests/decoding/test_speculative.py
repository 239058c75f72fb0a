"""Speculative decoding: greedy equals plain greedy, sampling is lossless, errors."""

import itertools
import math

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.decoding.sampling import SamplingConfig, probabilities

PATTERNS = {"attention": ["attention", "attention"], "recurrent": ["mamba", "gru"],
            "hybrid": ["attention", "mamba", "s4d"]}
DRAFTS = {"attention": ["attention"], "recurrent": ["gru"], "hybrid": ["mamba", "attention"]}


def model_of(layers, seed=0, vocab=40, dim=32, scale=4.0):
    torch.manual_seed(seed)
    m = seqlab.models.build_lm(vocab_size=vocab, dim=dim, layers=layers,
                               mixer_options={n: seqlab.mixers.get(n).example_options
                                              for n in set(layers)}).double()
    with torch.no_grad():
        # Mildly peaked: the greedy path is far from ties, yet the output depends on the whole
        # context (a much larger scale makes a bigram model that hides a stale state).
        m.embed.weight.mul_(scale)
    return m


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12]]


@pytest.mark.parametrize("gamma", [1, 3, 5])
@pytest.mark.parametrize("target", list(PATTERNS))
def test_greedy_equals_plain_greedy(target, gamma):
    m = model_of(PATTERNS[target])
    draft_kind = {"attention": "recurrent", "recurrent": "hybrid", "hybrid": "attention"}[target]
    for d in (model_of(DRAFTS[target], seed=1), model_of(DRAFTS[draft_kind], seed=2)):
        plain = generate(m, PROMPTS, "greedy", max_new_tokens=13).tokens
        out = generate(m, PROMPTS, "speculative", max_new_tokens=13, temperature=0, draft=d,
                       gamma=gamma)
        assert out.tokens == plain
        st = out.stats
        assert st.target_calls == len(PROMPTS) + st.verify_calls + st.recompute_calls
        if not m.init_state(1).can_truncate:
            assert st.recompute_calls > 0 or st.mean_accepted == gamma


@pytest.mark.parametrize("target", list(PATTERNS))
def test_draft_equal_to_target_accepts_everything(target):
    m = model_of(PATTERNS[target])
    gamma = 4
    out = generate(m, PROMPTS, "speculative", max_new_tokens=21, temperature=0, draft=m, gamma=gamma)
    assert out.tokens == generate(m, PROMPTS, "greedy", max_new_tokens=21).tokens
    # 1 token from the prefill, then 4 rounds of gamma + 1 = 5 tokens per row
    assert out.stats.verify_calls == 4 and out.stats.recompute_calls == 0
    assert out.stats.mean_accepted == gamma
    assert out.stats.tokens_per_call == pytest.approx(21 * len(PROMPTS) / 4)


def test_stops_and_streaming():
    m, d = model_of(["attention"]), model_of(["gru"], seed=1)
    free = generate(m, [[1, 2, 3]], "greedy", 12).tokens[0]
    stop_at = free[3:5]
    seen = []
    out = generate(m, [[1, 2, 3], [4, 5]], "speculative", 12, temperature=0, draft=d, gamma=3,
                   stop=[stop_at], on_token=lambda r, t: seen.append(t) if r == 0 else None)
    first = next(i for i in range(len(free) - 1) if free[i:i + 2] == stop_at)
    assert out.tokens[0] == free[:first + 2] == seen
    assert len(out.tokens[1]) <= 12
    eos = generate(m, [[1, 2, 3]], "speculative", 12, temperature=0, draft=d, eos_id=free[2]).tokens[0]
    assert eos == free[:free.index(free[2]) + 1]
    for n in (0, 1, 2, 7):
        assert generate(m, PROMPTS, "speculative", n, temperature=0, draft=d, gamma=5).tokens == \
            generate(m, PROMPTS, "greedy", n).tokens


def _chi2_critical(dof, z=3.0902):  # p = 0.001, Wilson-Hilferty
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _exact(m, prompt, steps, cfg):
    """Probability of every continuation of length ``steps`` under plain sampling."""
    V = m.cfg.vocab_size
    seqs = list(itertools.product(range(V), repeat=steps))
    full = torch.tensor([prompt + list(s) for s in seqs])
    logits, _ = m(full)
    P = len(prompt)
    probs = torch.ones(len(seqs), dtype=torch.float64)
    for j in range(steps):
        pj = probabilities(logits[:, P - 1 + j], cfg).double()
        probs *= pj.gather(1, full[:, P + j, None]).squeeze(1)
    return {s: p.item() for s, p in zip(seqs, probs)}


@pytest.mark.parametrize("target,draft,opts", [
    ("hybrid", "recurrent", {}),
    ("attention", "recurrent", {"temperature": 0.7, "top_k": 3}),
    ("recurrent", "attention", {"temperature": 0.7}),
])
def test_sampling_is_lossless(target, draft, opts):
    V, steps, n = 4, 3, 3000
    m = model_of(PATTERNS[target], vocab=V, dim=16, scale=6.0)
    d = model_of(DRAFTS[draft], seed=5, vocab=V, dim=16, scale=6.0)
    prompt = [1, 2]
    exact = _exact(m, prompt, steps, SamplingConfig(**{"temperature": 1.0, **opts}))
    out = generate(m, [prompt] * n, "speculative", steps, seed=0, draft=d, gamma=2,
                   **{"temperature": 1.0, **opts})
    assert out.stats.mean_accepted < 1.9  # the draft differs: rejections happen
    counts = {}
    for t in out.tokens:
        counts[tuple(t)] = counts.get(tuple(t), 0) + 1
    assert all(exact[s] > 0 for s in counts)  # never a token the filters remove
    big = [s for s, p in exact.items() if p * n >= 5]
    rest_p = 1 - sum(exact[s] for s in big)
    obs = [counts.get(s, 0) for s in big] + [n - sum(counts.get(s, 0) for s in big)]
    exp = [exact[s] * n for s in big] + [rest_p * n]
    if exp[-1] < 5:  # lump the rest into the smallest big bin
        obs, exp = obs[:-1], exp[:-1]
        obs[-1] += n - sum(obs)
        exp[-1] += n - sum(exp)
    chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    assert len(obs) >= 4
    assert chi2 < _chi2_critical(len(obs) - 1), (chi2, len(obs))


def test_errors():
    m = model_of(["gru"])
    with pytest.raises(ConfigError, match=r"draft model's vocab_size \(41\) differs .* \(40\)"):
        generate(m, [[1]], "speculative", 4, draft=model_of(["gru"], vocab=41))
    with pytest.raises(ConfigError, match="needs a draft model"):
        generate(m, [[1]], "speculative", 4)
    with pytest.raises(ConfigError, match="gamma = 0"):
        generate(m, [[1]], "speculative", 4, draft=m, gamma=0)

"""Training-free drafting (prompt lookup, adaptive n-gram): exact greedy, lossless sampling,
real speed-ups on repetitive text, the drafters' rules, errors."""

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.decoding.drafters import NGramDrafter, NGramTable, PromptLookup
from seqlab.decoding.sampling import SamplingConfig

from .test_speculative import PATTERNS, PROMPTS, _chi2_critical, _exact, model_of

STRATS = ["prompt-lookup", "ngram"]


def cycle_model(layers, V=16, seed=0):
    """A model whose greedy next token follows a fixed random cycle through the vocabulary
    (the embedding dominates the residual stream, the head maps each token to its successor),
    so on a prompt that repeats the cycle the greedy output continues it."""
    torch.manual_seed(seed)
    m = seqlab.models.build_lm(vocab_size=V, dim=32, layers=layers, tie_embeddings=False,
                               mixer_options={n: seqlab.mixers.get(n).example_options
                                              for n in set(layers)}).double()
    cyc = torch.randperm(V).tolist()
    with torch.no_grad():
        m.embed.weight.zero_()
        m.head.weight.zero_()
        for i in range(V):
            m.embed.weight[cyc[i], cyc[i]] = 30.0
            m.head.weight[cyc[(i + 1) % V], cyc[i]] = 3.0
    return m, cyc


# -- the drafters ------------------------------------------------------------------------------
def test_prompt_lookup_rule():
    d = PromptLookup(max_ngram=3)
    d.extend([5, 6, 7])
    assert d.propose(4) == []  # the suffix never occurred before
    d.extend([1, 2, 3, 9, 1, 2, 4, 8, 2, 3, 0, 1, 2])
    assert d.propose(2) == [4, 8]  # the latest earlier "1 2" (not the older "1 2 3")
    d.extend([5])
    assert d.propose(3) == [6, 7, 1]  # "2 5" is new, "5" alone matches the start
    c = PromptLookup()
    c.extend([1, 2, 3, 1, 2])
    assert c.propose(7) == [3, 1, 2, 3, 1, 2, 3]  # the copy overlaps its own draft
    assert c.propose(0) == []


def test_ngram_rule():
    d = NGramDrafter(max_ngram=3, min_count=2)
    d.extend([1, 2, 3, 1, 2, 3, 1, 2, 4, 5, 1, 2])
    # (1, 2) -> 3 twice, 4 once: exploit the count, although lookup would copy the recent 4
    assert d.propose(1) == [3]
    assert d.explored == 0
    # (2, 3) -> 1 twice: exploit again; the draft extends its own context
    assert d.propose(3) == [3, 1, 2]
    e = NGramDrafter(max_ngram=3, min_count=2)
    e.extend([1, 2, 3, 7, 1, 2, 4, 7, 1, 2])
    # (1, 2) -> 3 once, 4 once: a tie, so explore: the latest occurrence's follower (4)
    assert e.propose(1) == [4] and e.explored == 1
    f = NGramDrafter(min_count=1)
    f.extend([1, 2, 3, 7, 1, 2, 4, 7, 1, 2])
    assert f.propose(1) == [4]  # tie at count 1: explored too
    g = NGramDrafter()
    g.extend([1, 2, 3])
    assert g.propose(4) == []  # nothing ever followed 3


def test_a_shared_table_carries_counts_across_drafters():
    table = NGramTable()
    first = NGramDrafter(min_count=2, table=table)
    first.extend([1, 2, 3, 1, 2, 3])
    second = NGramDrafter(min_count=2, table=table)
    second.extend([5, 1, 2])
    # (1, 2) -> 3 was seen twice by the first drafter: the second exploits it at once
    assert second.propose(1) == [3] and second.explored == 0
    assert NGramDrafter(min_count=2).propose(1) == []     # a drafter of its own knows nothing
    assert len(table) == 4 and table.clock == 5


def test_a_persistent_table_is_lossless_and_learns_across_calls():
    m = model_of(PATTERNS[next(iter(PATTERNS))], scale=4.0)
    table = NGramTable()
    plain = generate(m, PROMPTS, "greedy", max_new_tokens=25).tokens
    calls = []
    for _ in range(3):
        out = generate(m, PROMPTS, "ngram", max_new_tokens=25, temperature=0, draft=table)
        assert out.tokens == plain
        calls.append(out.stats.target_calls)
    assert len(table) > 0 and calls[-1] < calls[0]        # the second call drafts from the first
    with pytest.raises(ConfigError, match="takes as draft a NGramTable"):
        generate(m, PROMPTS, "ngram", max_new_tokens=4, draft=m)
    with pytest.raises(ConfigError, match="takes no draft model"):
        generate(m, PROMPTS, "prompt-lookup", max_new_tokens=4, draft=table)


# -- exactness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("target", list(PATTERNS))
def test_greedy_equals_plain_greedy(target, strategy):
    rejected = 0
    for scale, num_draft in ((1.0, 3), (4.0, 8)):
        m = model_of(PATTERNS[target], scale=scale)
        plain = generate(m, PROMPTS, "greedy", max_new_tokens=25).tokens
        out = generate(m, PROMPTS, strategy, max_new_tokens=25, temperature=0,
                       num_draft=num_draft)
        assert out.tokens == plain
        st = out.stats
        assert st.strategy == strategy
        assert st.target_calls == len(PROMPTS) + st.verify_calls + st.recompute_calls
        assert st.draft_hits > 0 and st.accepted_tokens > 0
        rejected += st.drafted - st.accepted_tokens
        if not m.init_state(1).can_truncate:
            assert st.recompute_calls > 0
        assert st.tokens_per_call == st.new_tokens / st.verify_calls
        assert st.mean_accepted == st.accepted_tokens / sum(len(r) for r in st.accepted)
        assert 0 < st.prefill_s < st.wall_s and st.tokens_per_s == st.new_tokens / st.wall_s
    assert rejected > 0  # the rejection path ran


@pytest.mark.parametrize("strategy", STRATS)
def test_stops_streaming_and_short_budgets(strategy):
    m = model_of(["attention"], scale=1.0)
    free = generate(m, [[1, 2, 3, 1, 2, 3]], "greedy", 12).tokens[0]
    stop_at = free[3:5]
    seen = []
    out = generate(m, [[1, 2, 3, 1, 2, 3], [4, 5]], strategy, 12, temperature=0, stop=[stop_at],
                   on_token=lambda r, t: seen.append(t) if r == 0 else None)
    first = next(i for i in range(len(free) - 1) if free[i:i + 2] == stop_at)
    assert out.tokens[0] == free[:first + 2] == seen
    eos = generate(m, [[1, 2, 3, 1, 2, 3]], strategy, 12, temperature=0, eos_id=free[2]).tokens[0]
    assert eos == free[:free.index(free[2]) + 1]
    for n in (0, 1, 2, 7):
        assert generate(m, PROMPTS, strategy, n, temperature=0, num_draft=5).tokens == \
            generate(m, PROMPTS, "greedy", n).tokens


# -- speed-up on repetitive text --------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("target", list(PATTERNS))
def test_repetitive_prompt_accepts_drafts(target, strategy):
    m, cyc = cycle_model(PATTERNS[target])
    V = len(cyc)
    prompts = [cyc * 2 + cyc[:5], cyc[3:] + cyc, cyc[7:] + cyc[:9]]  # ragged, the cycle repeated
    plain = generate(m, prompts, "greedy", max_new_tokens=40).tokens
    # the construction works: greedy continues each prompt's cycle
    assert plain == [[cyc[(cyc.index(p[-1]) + 1 + j) % V] for j in range(40)] for p in prompts]
    out = generate(m, prompts, strategy, max_new_tokens=40, temperature=0)
    assert out.tokens == plain
    # 1 token from the prefill, then rounds of num_draft + 1 = 9 tokens per row
    assert out.stats.verify_calls == 5
    assert out.stats.tokens_per_call / len(prompts) > 1.5
    # from a one-token prompt the drafters learn the cycle from the model's own outputs
    single = generate(m, [[cyc[0]]], strategy, max_new_tokens=60, temperature=0)
    assert single.tokens == generate(m, [[cyc[0]]], "greedy", max_new_tokens=60).tokens
    assert single.stats.tokens_per_call > 1.5 and single.stats.draft_hits > 0


# -- lossless sampling -------------------------------------------------------------------------
@pytest.mark.parametrize("target,strategy,opts", [
    ("attention", "prompt-lookup", {}),
    ("recurrent", "prompt-lookup", {"temperature": 0.7, "top_k": 3}),
    ("hybrid", "ngram", {"temperature": 0.8}),
])
def test_sampling_is_lossless(target, strategy, opts):
    V, steps, n = 4, 3, 3000
    m = model_of(PATTERNS[target], vocab=V, dim=16, scale=6.0)
    prompt = [1, 2, 3, 1, 2]  # drafts exist from the first round
    exact = _exact(m, prompt, steps, SamplingConfig(**{"temperature": 1.0, **opts}))
    out = generate(m, [prompt] * n, strategy, steps, seed=0, num_draft=2,
                   **{"temperature": 1.0, **opts})
    st = out.stats
    assert 0 < st.accepted_tokens < st.drafted  # both acceptances and rejections
    counts = {}
    for t in out.tokens:
        counts[tuple(t)] = counts.get(tuple(t), 0) + 1
    assert all(exact[s] > 0 for s in counts)  # never a token the filters remove
    big = [s for s, p in exact.items() if p * n >= 5]
    obs = [counts.get(s, 0) for s in big] + [n - sum(counts.get(s, 0) for s in big)]
    exp = [exact[s] * n for s in big] + [(1 - sum(exact[s] for s in big)) * n]
    if exp[-1] < 5:  # lump the rest into the smallest big bin
        obs, exp = obs[:-1], exp[:-1]
        obs[-1] += n - sum(obs)
        exp[-1] += n - sum(exp)
    chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    assert len(obs) >= 4
    assert chi2 < _chi2_critical(len(obs) - 1), (chi2, len(obs))


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATS)
def test_errors(strategy):
    m = model_of(["gru"])
    with pytest.raises(ConfigError, match="num_draft = 0 is not allowed"):
        generate(m, [[1]], strategy, 4, num_draft=0)
    with pytest.raises(ConfigError, match="num_draft = '3' is not allowed"):
        generate(m, [[1]], strategy, 4, num_draft="3")
    with pytest.raises(ConfigError, match="max_ngram = 0 is not allowed"):
        generate(m, [[1]], strategy, 4, max_ngram=0)
    with pytest.raises(ConfigError, match="has no option 'gamma'"):
        generate(m, [[1]], strategy, 4, gamma=3)
    if strategy == "ngram":
        with pytest.raises(ConfigError, match="min_count = 0 is not allowed"):
            generate(m, [[1]], strategy, 4, min_count=0)
    else:
        with pytest.raises(ConfigError, match="has no option 'min_count'"):
            generate(m, [[1]], strategy, 4, min_count=2)

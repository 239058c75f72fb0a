"""Tree speculative decoding: greedy equals plain greedy, sampling is lossless, both trees."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.decoding.sampling import SamplingConfig
from seqlab.decoding.strategies.tree import _conditioned_gumbel
from tests.decoding.test_speculative import (DRAFTS, PATTERNS, PROMPTS, _chi2_critical, _exact,
                                             model_of)

SHAPES = [{"branching": (2, 2, 1)}, {"branching": (3,)}, {"beam_width": 3, "depth": 3}]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("target", list(PATTERNS) + ["attention-rows"])
def test_greedy_equals_plain_greedy(target, shape):
    rows = target.endswith("-rows")
    target = target.removesuffix("-rows")
    m = model_of(PATTERNS[target])
    draft_kind = {"attention": "recurrent", "recurrent": "hybrid", "hybrid": "attention"}[target]
    plain = generate(m, PROMPTS, "greedy", max_new_tokens=13).tokens
    for d in (model_of(DRAFTS[target], seed=1), model_of(DRAFTS[draft_kind], seed=2)):
        out = generate(m, PROMPTS, "tree", max_new_tokens=13, temperature=0, draft=d, **shape,
                       **({"tree_attention": False} if rows else {}))
        assert out.tokens == plain
        st = out.stats
        assert st.options["tree_attention"] == (target == "attention" and not rows)
        assert st.target_calls == len(PROMPTS) + st.verify_calls + st.recompute_calls
        assert st.drafted > 0


@pytest.mark.parametrize("target", list(PATTERNS))
def test_draft_equal_to_target_takes_the_deepest_path(target):
    m = model_of(PATTERNS[target])
    out = generate(m, PROMPTS, "tree", max_new_tokens=16, temperature=0, draft=m,
                   branching=(2, 2, 1, 1, 1))
    assert out.tokens == generate(m, PROMPTS, "greedy", max_new_tokens=16).tokens
    # 1 token from the prefill, then rounds of depth + 1 = 6 tokens per row (the last round 3)
    assert out.stats.verify_calls == 3
    assert out.stats.accepted[0] == [5] * len(PROMPTS)


def test_a_wider_tree_accepts_at_least_as_much_as_a_chain():
    m = model_of(PATTERNS["attention"])
    d = model_of(DRAFTS["attention"], seed=3)
    chain = generate(m, PROMPTS, "tree", 24, temperature=0, draft=d, branching=(1, 1, 1))
    wide = generate(m, PROMPTS, "tree", 24, temperature=0, draft=d, branching=(4, 4, 1))
    assert chain.tokens == wide.tokens
    assert wide.stats.verify_calls <= chain.stats.verify_calls
    assert wide.stats.mean_accepted > chain.stats.mean_accepted


def test_stops_streaming_and_budgets():
    m, d = model_of(["attention"]), model_of(["gru"], seed=1)
    free = generate(m, [[1, 2, 3]], "greedy", 12).tokens[0]
    stop_at = free[3:5]
    seen = []
    out = generate(m, [[1, 2, 3], [4, 5]], "tree", 12, temperature=0, draft=d, stop=[stop_at],
                   on_token=lambda r, t: seen.append(t) if r == 0 else None)
    first = next(i for i in range(len(free) - 1) if free[i:i + 2] == stop_at)
    assert out.tokens[0] == free[:first + 2] == seen
    for n in (0, 1, 2, 7):
        assert generate(m, PROMPTS, "tree", n, temperature=0, draft=d,
                        beam_width=2, depth=4).tokens == generate(m, PROMPTS, "greedy", n).tokens


def test_conditioned_gumbels_keep_the_parent_maximum():
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(5, 7, dtype=torch.float64, generator=g)
    phi[0, 3] = float("-inf")
    parent = torch.randn(5, dtype=torch.float64, generator=g)
    out = _conditioned_gumbel(phi, parent, g)
    assert torch.allclose(out.max(-1).values, parent)
    assert out[0, 3] == float("-inf")


def _chi2(out_tokens, exact, n):
    counts = {}
    for t in out_tokens:
        counts[tuple(t)] = counts.get(tuple(t), 0) + 1
    assert all(exact[s] > 0 for s in counts)  # never a token the filters remove
    big = [s for s, p in exact.items() if p * n >= 5]
    obs = [counts.get(s, 0) for s in big]
    exp = [exact[s] * n for s in big]
    obs.append(n - sum(obs))
    exp.append(n - sum(exp))
    if exp[-1] < 5:  # lump the rest into the smallest big bin
        obs, exp = obs[:-2] + [obs[-2] + obs[-1]], exp[:-2] + [exp[-2] + exp[-1]]
    assert len(obs) >= 4
    return sum((o - e) ** 2 / e for o, e in zip(obs, exp)), len(obs) - 1


@pytest.mark.parametrize("target,draft,opts,shape", [
    ("hybrid", "recurrent", {}, {"branching": (2, 2)}),
    ("attention", "recurrent", {"temperature": 0.7, "top_k": 3}, {"branching": (3, 1)}),
    ("recurrent", "attention", {"temperature": 0.7}, {"beam_width": 3, "depth": 2}),
    ("attention", "hybrid", {"top_p": 0.9}, {"beam_width": 2, "depth": 3}),
    ("attention", "recurrent", {}, {"branching": (2, 2), "tree_attention": False}),
])
def test_sampling_is_lossless(target, draft, opts, shape):
    V, steps, n = 4, 3, 3000
    m = model_of(PATTERNS[target], vocab=V, dim=16, scale=6.0)
    d = model_of(DRAFTS[draft], seed=5, vocab=V, dim=16, scale=6.0)
    prompt = [1, 2]
    exact = _exact(m, prompt, steps, SamplingConfig(**{"temperature": 1.0, **opts}))
    out = generate(m, [prompt] * n, "tree", steps, seed=0, draft=d, **shape,
                   **{"temperature": 1.0, **opts})
    rejected = sum(1 for rnd in out.stats.accepted for c in rnd if c < 2)
    assert rejected > n // 10  # the draft differs: the recursive rejection is exercised
    chi2, dof = _chi2(out.tokens, exact, n)
    assert chi2 < _chi2_critical(dof), (chi2, dof)


def test_tree_attention_equals_branches_as_rows():
    """Same logits at every node either way: the trees' outputs agree draw for draw."""
    m = model_of(PATTERNS["attention"])
    # a recurrent draft grows its tree as batch rows; an attention draft with tree attention too
    for d in (model_of(DRAFTS["recurrent"], seed=4), model_of(DRAFTS["attention"], seed=4)):
        for shape in SHAPES:
            a = generate(m, PROMPTS, "tree", 20, temperature=1.0, seed=3, draft=d, **shape)
            b = generate(m, PROMPTS, "tree", 20, temperature=1.0, seed=3, draft=d,
                         tree_attention=False, **shape)
            assert a.tokens == b.tokens and a.stats.accepted == b.stats.accepted
            assert a.stats.draft_calls <= b.stats.draft_calls
    with pytest.raises(ConfigError, match="tree_attention=True needs"):
        generate(model_of(PATTERNS["hybrid"]), [[1]], "tree", 4, draft=d, tree_attention=True)


def test_errors():
    m = model_of(["gru"])
    with pytest.raises(ConfigError, match="needs a draft model"):
        generate(m, [[1]], "tree", 4)
    with pytest.raises(ConfigError, match="not both"):
        generate(m, [[1]], "tree", 4, draft=m, branching=(2,), beam_width=2, depth=2)
    with pytest.raises(ConfigError, match="branching = "):
        generate(m, [[1]], "tree", 4, draft=m, branching=(2, 0))
    with pytest.raises(ConfigError, match="needs depth"):
        generate(m, [[1]], "tree", 4, draft=m, beam_width=2)
    with pytest.raises(ConfigError, match="pass depth only with beam_width"):
        generate(m, [[1]], "tree", 4, draft=m, depth=2)


def test_recorded_trees_match_the_emitted_tokens():
    """stats.trees holds row 0's tree per round: each accepted path is a parent-linked
    chain of its nodes, and root + accepted tokens + the next round's root spell the output."""
    m = model_of(PATTERNS["attention"])
    d = model_of(DRAFTS["attention"], seed=1)
    out = generate(m, PROMPTS[:1], "tree", max_new_tokens=20, temperature=0, draft=d,
                   branching=(2, 2, 1))
    trees = out.stats.trees
    assert len(trees) == out.stats.verify_calls
    spelled = []
    for t in trees:
        node = {(dd, j): (parent, tok) for dd, j, parent, tok in t["nodes"]}
        assert {dd for dd, *_ in t["nodes"]} <= {0, 1, 2}
        spelled.append(t["root"])
        for k, (dd, j) in enumerate(t["accepted"]):
            assert dd == k
            parent, tok = node[(dd, j)]
            if k:
                assert parent == t["accepted"][k - 1][1]
            spelled.append(tok)
    assert spelled == out.tokens[0][:len(spelled)]
    assert sum(len(t["accepted"]) for t in trees) == out.stats.accepted_tokens

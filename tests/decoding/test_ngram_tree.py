"""Draft trees from the adaptive n-gram table (ngram-tree): the drafter's tree rule, exact
greedy on attention, recurrent and hybrid targets, lossless sampling, a table that persists
across calls, errors."""

import random

import pytest

from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.decoding.drafters import NGramDrafter, NGramTable
from seqlab.decoding.sampling import SamplingConfig

from .test_speculative import PATTERNS, PROMPTS, _chi2_critical, _exact, model_of
from .test_tree import _chi2

TARGETS = list(PATTERNS) + ["attention-rows"]   # -rows: branches as batch rows, not tree attention


def _target(name, **kw):
    rows = name.endswith("-rows")
    return model_of(PATTERNS[name.removesuffix("-rows")], **kw), (
        {"tree_attention": False} if rows else {})


def _misleading_table(rows, V, seed=0):
    """A table that holds each true tri-gram of ``rows`` once and a wrong continuation of the
    same pair twice, so the table confidently ranks a wrong token first and the right one
    second: a chain drafts the wrong one, a tree with two children per node both."""
    rng = random.Random(seed)
    table = NGramTable()
    for row in rows:
        for a, b, c in zip(row, row[1:], row[2:]):
            wrong = (c + rng.randrange(1, V)) % V
            table.add(a, b, c)
            table.add(a, b, wrong)
            table.add(a, b, wrong)
    return table


def _through_a_later_sibling(trees) -> bool:
    """Whether some accepted path of these recorded trees takes a node that is not its
    parent's first child."""
    for t in trees:
        parent = {(d, j): p for d, j, p, _ in t["nodes"]}
        for d, j in t["accepted"]:
            if any(dd == d and p == parent[(d, j)] and jj < j for dd, jj, p, _ in t["nodes"]):
                return True
    return False


# -- the drafter's tree ------------------------------------------------------------------------
def test_tree_rule():
    d = NGramDrafter(max_ngram=3, min_count=2)
    d.extend([1, 2, 3, 1, 2, 3, 1, 2, 4, 5, 1, 2])
    # (1, 2) -> 3 twice, 4 once: confident, so the ranking (3, then 4), no exploration
    tree = d.propose_tree((2, 1))
    assert tree[0] == [(0, 3), (0, 4)]
    # each child's own token extends its context: (2, 3) -> 1 twice (confident) and
    # (2, 4) -> 5 once (unsure: explored, the lookup of "1 2 4" gives 5 as well)
    assert tree[1] == [(0, 1), (1, 5)] and d.explored == 1
    # one child per node is the chain drafter's rule exactly (its table is its own)
    chain = NGramDrafter(max_ngram=3, min_count=2)
    chain.extend([1, 2, 3, 1, 2, 3, 1, 2, 4, 5, 1, 2])
    assert [lv[0][1] for lv in d.propose_tree((1,) * 6)] == chain.propose(6)
    e = NGramDrafter(max_ngram=3, min_count=2)
    e.extend([1, 2, 3, 7, 1, 2, 4, 7, 1, 2])
    # a tie: unsure, so the exploration token (the latest follower, 4) first, then the ranking
    assert e.propose_tree((3,)) == [[(0, 4), (0, 3)]] and e.explored == 1
    # siblings are distinct: the looked-up 4 is also the table's first, and is not repeated
    f = NGramDrafter(min_count=5)
    f.extend([1, 2, 4, 9, 1, 2, 4, 8, 1, 2])
    assert f.propose_tree((3,)) == [[(0, 4)]]
    assert NGramDrafter().propose_tree((2, 2)) == []          # nothing seen: no tree
    # max_nodes fills level by level, the best children of the earlier nodes first
    g = NGramDrafter(min_count=1)
    g.extend([1, 2, 3, 5, 1, 2, 4, 6, 2, 3, 7, 2, 4, 8, 1, 2])
    assert sum(map(len, g.propose_tree((2, 2, 2)))) > 3
    # (2, 4) -> 6, 8 once each: unsure, and the lookup of "1 2 4" finds 6, not the pair's
    # latest follower 8; the budget of 3 ends the tree there
    assert g.propose_tree((2, 2, 2), max_nodes=3) == [[(0, 4), (0, 3)], [(0, 6)]]


# -- exactness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_greedy_equals_plain_greedy(target):
    rejected = 0
    for scale, branching in ((1.0, (2, 2, 1)), (4.0, (3, 2, 1, 1, 1, 1))):
        m, opts = _target(target, scale=scale)
        plain = generate(m, PROMPTS, "greedy", max_new_tokens=25).tokens
        out = generate(m, PROMPTS, "ngram-tree", max_new_tokens=25, temperature=0,
                       branching=branching, **opts)
        assert out.tokens == plain
        st = out.stats
        assert st.strategy == "ngram-tree"
        assert st.options["tree_attention"] == (target == "attention")
        assert st.target_calls == len(PROMPTS) + st.verify_calls + st.recompute_calls
        assert st.draft_hits > 0 and st.accepted_tokens > 0
        rejected += st.drafted - st.accepted_tokens
        if not m.init_state(1).can_truncate:
            assert st.recompute_calls > 0
    assert rejected > 0  # the rejection path ran


@pytest.mark.parametrize("target", TARGETS)
def test_siblings_catch_what_the_chain_misses(target):
    """With the right token ranked second, a chain of the table's best misses it and a tree of
    two children per node takes it: more accepted, no more calls, the same output."""
    m, opts = _target(target, scale=4.0)
    plain = generate(m, PROMPTS, "greedy", max_new_tokens=20).tokens
    rows = [p + t for p, t in zip(PROMPTS, plain)]
    runs = {}
    for branching in ((1, 1, 1, 1), (2, 2, 2, 2)):
        table = _misleading_table(rows, m.vocab_size)
        out = generate(m, PROMPTS, "ngram-tree", max_new_tokens=20, temperature=0,
                       branching=branching, draft=table, **opts)
        assert out.tokens == plain
        runs[branching] = out.stats
    chain, wide = runs[(1, 1, 1, 1)], runs[(2, 2, 2, 2)]
    assert wide.accepted_tokens > chain.accepted_tokens
    assert wide.verify_calls <= chain.verify_calls
    assert _through_a_later_sibling(wide.trees)    # row 0's recorded trees


@pytest.mark.parametrize("target", list(PATTERNS))
def test_one_child_per_node_is_the_ngram_chain(target):
    """branching=(1,)*k drafts exactly what the ``ngram`` strategy's chain of k drafts."""
    m = model_of(PATTERNS[target], scale=1.0)
    tree = generate(m, PROMPTS, "ngram-tree", 25, temperature=0, branching=(1, 1, 1, 1))
    chain = generate(m, PROMPTS, "ngram", 25, temperature=0, num_draft=4)
    assert tree.tokens == chain.tokens
    assert tree.stats.accepted == chain.stats.accepted
    assert tree.stats.drafted == chain.stats.drafted
    assert tree.stats.explored == chain.stats.explored


def test_a_persistent_table_learns_across_calls():
    for target in PATTERNS:
        m = model_of(PATTERNS[target], scale=1.0)
        table = NGramTable()
        plain = generate(m, PROMPTS, "greedy", max_new_tokens=25).tokens
        calls, sizes = [], []
        for _ in range(3):
            out = generate(m, PROMPTS, "ngram-tree", max_new_tokens=25, temperature=0,
                           draft=table, branching=(2, 2, 1, 1))
            assert out.tokens == plain
            calls.append(out.stats.verify_calls)
            sizes.append(len(table))
        assert sizes[0] > 0 and table.clock > sizes[0]  # the calls kept adding to it
        assert calls[-1] < calls[0], (target, calls)    # later calls draft from earlier ones
        fresh = [generate(m, PROMPTS, "ngram-tree", 25, temperature=0,
                          branching=(2, 2, 1, 1)).stats.verify_calls for _ in range(2)]
        # without draft= every row has a table of its own and nothing is kept
        assert fresh[0] == fresh[1] and calls[-1] < fresh[0]


@pytest.mark.parametrize("target", ["attention", "recurrent"])
def test_stops_streaming_budgets_and_node_limit(target):
    m = model_of(PATTERNS[target], scale=1.0)
    free = generate(m, [[1, 2, 3, 1, 2, 3]], "greedy", 12).tokens[0]
    stop_at = free[3:5]
    seen = []
    out = generate(m, [[1, 2, 3, 1, 2, 3], [4, 5]], "ngram-tree", 12, temperature=0,
                   stop=[stop_at], on_token=lambda r, t: seen.append(t) if r == 0 else None)
    first = next(i for i in range(len(free) - 1) if free[i:i + 2] == stop_at)
    assert out.tokens[0] == free[:first + 2] == seen
    for n in (0, 1, 2, 7):
        assert generate(m, PROMPTS, "ngram-tree", n, temperature=0).tokens == \
            generate(m, PROMPTS, "greedy", n).tokens
    plain = generate(m, PROMPTS, "greedy", 20).tokens
    capped = generate(m, PROMPTS, "ngram-tree", 20, temperature=0, branching=(3, 3, 3),
                      max_nodes=2, draft=_misleading_table(PROMPTS, m.vocab_size))
    assert capped.tokens == plain
    assert all(len(t["nodes"]) <= 2 for t in capped.stats.trees)
    assert capped.stats.drafted <= 2 * sum(len(r) for r in capped.stats.accepted)


# -- lossless sampling -------------------------------------------------------------------------
@pytest.mark.parametrize("target,opts", [
    ("attention", {}),
    ("recurrent", {"temperature": 0.7, "top_k": 3}),
    ("hybrid", {"top_p": 0.9}),
    ("attention-rows", {"temperature": 0.8}),
])
def test_sampling_is_lossless(target, opts):
    """Every pair's continuations are in the table (two children per node), so drafts are
    accepted at first, second sibling or not at all; the output still follows the target."""
    V, steps, n = 4, 3, 3000
    m, tree_opts = _target(target, vocab=V, dim=16, scale=6.0)
    table = NGramTable()
    rng = random.Random(1)
    for a in range(V):
        for b in range(V):
            for c in rng.sample(range(V), 3):
                table.add(a, b, c)
    prompt = [1, 2]
    exact = _exact(m, prompt, steps, SamplingConfig(**{"temperature": 1.0, **opts}))
    out = generate(m, [prompt] * n, "ngram-tree", steps, seed=0, draft=table,
                   branching=(2, 2), **tree_opts, **{"temperature": 1.0, **opts})
    st = out.stats
    rounds = [c for rnd in st.accepted for c in rnd]
    assert 0 < st.accepted_tokens and any(c < 2 for c in rounds)  # acceptances and rejections
    chi2, dof = _chi2(out.tokens, exact, n)
    assert chi2 < _chi2_critical(dof), (chi2, dof)


# -- errors ------------------------------------------------------------------------------------
def test_errors():
    m = model_of(["gru"])
    for opts, message in [({"branching": (2, 0)}, r"NGramTreeConfig.branching = \(2, 0\) is not "
                                                  "allowed: expected a non-empty sequence"),
                          ({"branching": ()}, r"branching = \(\) is not allowed"),
                          ({"branching": 2}, "branching = 2 is not allowed: expected a tuple"),
                          ({"max_nodes": 0}, "max_nodes = 0 is not allowed: expected None"),
                          ({"max_ngram": 0}, "max_ngram = 0 is not allowed"),
                          ({"min_count": 0}, "min_count = 0 is not allowed"),
                          ({"num_draft": 4}, "has no option 'num_draft'"),
                          ({"beam_width": 2}, "has no option 'beam_width'")]:
        with pytest.raises(ConfigError, match=message):
            generate(m, [[1]], "ngram-tree", 4, **opts)
    with pytest.raises(ConfigError, match="takes as draft a NGramTable"):
        generate(m, [[1]], "ngram-tree", 4, draft=m)
    with pytest.raises(ConfigError, match="tree_attention=True needs"):
        generate(m, [[1]], "ngram-tree", 4, tree_attention=True)
    with pytest.raises(ConfigError, match="only apply when sampling"):
        generate(m, [[1]], "ngram-tree", 4, top_k=3)

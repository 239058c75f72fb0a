"""The two lossless checks every trained drafter passes (as test_speculative proves them
for draft models): greedy output equal to plain greedy, and sampled continuations drawn
from exactly the target's distribution (a chi-square test on a 4-token vocabulary)."""

from __future__ import annotations

from seqlab.decoding import generate
from seqlab.decoding.sampling import SamplingConfig

from ..test_speculative import _chi2_critical, _exact
from .common import PROMPTS, drafter, target


def check_greedy(m, kind: str) -> None:
    """Batch of ragged prompts, several gammas, an agreeable and a disagreeable drafter,
    stops at every budget; some drafts must be accepted, so the rollbacks are exercised."""
    plain = generate(m, PROMPTS, "greedy", 13).tokens
    accepted = 0
    for d in (drafter(kind, m), drafter(kind, m, noise=0.3, draft_vocab=30)):
        for gamma in (1, 3, 4, 6):
            out = generate(m, PROMPTS, "speculative", 13, draft=d, gamma=gamma)
            assert out.tokens == plain, (kind, gamma)
            accepted += out.stats.accepted_tokens
            st = out.stats
            assert st.target_calls == len(PROMPTS) + st.verify_calls + st.recompute_calls
    assert accepted > 0
    for n in (0, 1, 2):
        assert generate(m, PROMPTS, "speculative", n, draft=drafter(kind, m)).tokens == \
            generate(m, PROMPTS, "greedy", n).tokens


def check_sampling(kind: str, strategy: str, options: dict, n: int = 3000, steps: int = 3) -> None:
    V = 4
    m = target("hybrid", vocab=V, dim=16, scale=6.0)
    d = drafter(kind, m, noise=0.5, window=2)
    prompt = [1, 2]
    opts = {"temperature": 0.9}
    exact = _exact(m, prompt, steps, SamplingConfig(**opts))
    out = generate(m, [prompt] * n, strategy, steps, seed=0, draft=d, **options, **opts)
    assert 0 < out.stats.mean_accepted < 1.9  # accepts some, rejects some
    counts: dict = {}
    for t in out.tokens:
        counts[tuple(t)] = counts.get(tuple(t), 0) + 1
    assert all(exact[s] > 0 for s in counts)
    big = [s for s, p in exact.items() if p * n >= 5]
    obs = [counts.get(s, 0) for s in big] + [n - sum(counts.get(s, 0) for s in big)]
    exp = [exact[s] * n for s in big] + [(1 - sum(exact[s] for s in big)) * n]
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1]
        obs[-1] += n - sum(obs)
        exp[-1] += n - sum(exp)
    chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    assert len(obs) >= 4
    assert chi2 < _chi2_critical(len(obs) - 1), (chi2, len(obs))

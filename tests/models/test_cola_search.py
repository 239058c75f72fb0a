"""MCTS over chains of layers: finds a planted chain, deterministic, within its budget."""

import random

import pytest

from seqlab.config import ConfigError
from seqlab.models.cola_search import ColaSearchConfig, search, search_each, search_split

PLANTED = (0, 1, 1, 3, 4, 4, 7, 8, 10, 10, 11)   # 12 layers: repeats, skips of one and two


def closeness(target):
    """A reward whose single best chain is ``target``: the shared prefix, then exactness."""
    def reward(chain):
        k = next((i for i, (a, b) in enumerate(zip(chain, target)) if a != b),
                 min(len(chain), len(target)))
        return k / len(target) + (1.0 if tuple(chain) == tuple(target) else 0.0)
    return reward


def all_chains(layers, cfg):
    """Every complete chain the moves make (to size the space), by brute force."""
    from seqlab.models.cola_search import _Search

    s, out, todo = _Search(lambda c: 0.0, layers, cfg), [], [(cfg.start,)]
    while todo:
        c = todo.pop()
        moves = s.moves(c)
        out += [] if moves else [c]
        todo += [c + (c[-1] + m,) for m in moves]
    return out


def test_finds_the_planted_chain_with_a_budget_far_below_the_space():
    cfg = ColaSearchConfig(budget=100, seed=0)
    space = all_chains(12, cfg)
    assert PLANTED in space and len(space) > 500 * cfg.budget
    found = search(closeness(PLANTED), 12, cfg)
    assert found.chain == PLANTED and found.reward == pytest.approx(2.0)
    # random search with the same budget does not find it: the tree is what helps
    rng = random.Random(0)
    assert PLANTED not in rng.sample(space, cfg.budget)


def test_deterministic_for_a_seed_and_seed_dependent():
    cfg = ColaSearchConfig(budget=40, seed=3)
    a, b = search(closeness(PLANTED), 8, cfg), search(closeness(PLANTED), 8, cfg)
    assert list(a.scores.items()) == list(b.scores.items()) and a.chain == b.chain
    c = search(closeness(PLANTED), 8, ColaSearchConfig(budget=40, seed=4))
    assert list(c.scores) != list(a.scores)


def test_respects_the_budget_and_scores_each_chain_once():
    calls = []

    def reward(chain):
        calls.append(chain)
        return -len(chain)

    for budget in (1, 7, 25):
        calls.clear()
        found = search(reward, 10, ColaSearchConfig(budget=budget, seed=1))
        assert len(calls) == len(set(calls)) == len(found.scores) == budget
        assert found.reward == max(found.scores.values()) == -len(found.chain)


def test_a_small_space_is_searched_to_the_end_then_stops():
    cfg = ColaSearchConfig(budget=1000, moves=(1, 2), max_repeats=0)
    space = all_chains(5, cfg)
    found = search(lambda c: float(sum(c)), 5, cfg)
    assert sorted(found.scores) == sorted(space) and len(space) < cfg.budget
    assert found.chain == max(space, key=sum)


def test_chains_obey_the_moves_and_limits():
    cfg = ColaSearchConfig(budget=60, moves=(1, 3, 0), max_repeats=2, max_length=9, start=1)
    found = search(lambda c: float(len(set(c))), 12, cfg)
    for chain in found.scores:
        assert chain[0] == 1 and len(chain) <= 9
        assert all(b - a in (1, 3, 0) for a, b in zip(chain, chain[1:]))
        assert chain[-1] == 11 or len(chain) == 9
        assert all(chain[k:k + 4] != (chain[k],) * 4 for k in range(len(chain)))


def test_seeds_are_scored_first_and_ties_prefer_shorter():
    identity = tuple(range(6))
    found = search(lambda c: 1.0, 6, ColaSearchConfig(budget=10), seeds=[identity])
    assert next(iter(found.scores)) == identity
    assert found.chain == min(found.scores, key=len)
    with pytest.raises(ConfigError, match=r"seed chain \[0, 5\] is not a complete chain"):
        search(lambda c: 1.0, 6, ColaSearchConfig(budget=10), seeds=[(0, 5)])


def test_each_and_split():
    targets = [(0, 1, 2, 3, 4, 5), (0, 2, 2, 5)]
    each = search_each(lambda t, c: closeness(t)(c), targets, 6,
                       ColaSearchConfig(budget=60, seed=0))
    assert [r.chain for r in each] == targets
    split = search_split(lambda t, c: closeness(t)(c), targets, 6,
                         ColaSearchConfig(budget=60, seed=0))
    assert split.chain in targets and split.reward == pytest.approx(
        (closeness(targets[0])(split.chain) + closeness(targets[1])(split.chain)) / 2)
    with pytest.raises(ValueError, match="at least one input"):
        search_split(lambda t, c: 0.0, [], 6)


@pytest.mark.parametrize("options, field", [
    ({"budget": 0}, "budget"), ({"moves": ()}, "moves"), ({"moves": (0,)}, "moves"),
    ({"moves": (1, 1)}, "moves"), ({"moves": (1, -1)}, "moves"), ({"max_length": 0}, "max_length"),
    ({"max_repeats": -1}, "max_repeats"), ({"exploration": -0.1}, "exploration"),
    ({"start": -1}, "start"), ({"budget": 2.5}, "budget")], ids=lambda v: str(v))
def test_bad_options_are_config_errors(options, field):
    with pytest.raises(ConfigError, match=f"ColaSearchConfig.{field} = .* is not allowed"):
        ColaSearchConfig(**options)


def test_start_at_the_last_layer_is_the_one_chain():
    found = search(lambda c: 2.0, 6, ColaSearchConfig(start=5))
    assert found.chain == (5,) and found.scores == {(5,): 2.0}


def test_start_outside_the_model_and_nan_rewards():
    with pytest.raises(ConfigError, match=r"start = 6 is not allowed: expected a layer index"):
        search(lambda c: 0.0, 6, ColaSearchConfig(start=6))
    with pytest.raises(ValueError, match="NaN"):
        search(lambda c: float("nan"), 6)

"""Monte Carlo tree search over chains of a model's layers (CoLa, "Skip a Layer or Loop it?
Test-Time Depth Adaptation of Pretrained LLMs").

A chain (``seqlab.models.layer_chain``) is grown from a start layer by moves, each an offset
from the chain's last layer: ``1`` the next layer, ``2`` skip one, ``3`` skip two, ``0``
repeat the current layer. A chain is complete when it reaches the last layer, reaches
``max_length`` or has no allowed move. The search is plain UCT: select children by
``Q/n + c * sqrt(ln N / n)`` down to a node with an untried move, add that child, complete
the chain by uniformly random moves (the rollout), score it with the caller's ``reward``
and add the score to every node on the path. A complete chain is scored once (its score is
remembered), so ``budget`` bounds the calls of ``reward``, the costly part.

The reward is the caller's: the paper searches per input for a chain that answers it right
(:func:`search_each`); :func:`search_split` finds one chain for a whole split (the mean
reward over its inputs). With ``seeds`` (e.g. the model's own chain ``range(n)``) the
search starts from known chains, scored first within the budget.

Example:
    >>> cfg = ColaSearchConfig(budget=32, seed=0)
    >>> found = search(lambda chain: score(model, chain), layers=30, cfg=cfg,
    ...                seeds=[tuple(range(30))])
    >>> found.chain, found.reward, len(found.scores)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqlab.config import Config, ConfigError, option, require


@dataclass(frozen=True)
class ColaSearchConfig(Config):
    """Options of the chain search (see the module docstring)."""

    budget: int = option(64, "chains scored at most: calls of the reward")
    moves: tuple[int, ...] = option((1, 2, 3, 0), "offsets from the last layer: 1 next layer, "
                                    "2 skip one, 3 skip two, 0 repeat it")
    start: int = option(0, "the first layer of every chain")
    max_length: int | None = option(None, "the longest chain; None = twice the layers")
    max_repeats: int = option(1, "runs of one layer in a row beyond the first, at most")
    # On the planted-chain test (rewards in [0, 2], 94,176 chains, budget 100) c = 0.3 found
    # the chain for 10 of 10 seeds, c = 1.0 for 0 of 10: small budgets need exploitation.
    exploration: float = option(0.3, "UCT's c: larger explores more (in the reward's units)")
    seed: int = option(0, "seed of the expansion order and the rollouts")

    def validate(self) -> None:
        require(self.budget >= 1, self, "budget", "an int >= 1")
        require(bool(self.moves) and len(set(self.moves)) == len(self.moves)
                and all(m >= 0 for m in self.moves) and any(m > 0 for m in self.moves),
                self, "moves", "distinct offsets >= 0, at least one of them > 0, e.g. (1, 2, 3, 0)")
        require(self.start >= 0, self, "start", "a layer index >= 0")
        require(self.max_length is None or self.max_length >= 1, self, "max_length",
                "None or an int >= 1")
        require(self.max_repeats >= 0, self, "max_repeats", "an int >= 0")
        require(self.exploration >= 0, self, "exploration", "a number >= 0")


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        chain: the best chain scored (highest reward; ties: the shorter, then the earlier).
        reward: its reward.
        scores: every chain scored, in the order scored, with its reward.
        iterations: tree iterations run (each adds one node).
    """

    chain: tuple[int, ...]
    reward: float
    scores: dict[tuple[int, ...], float] = field(default_factory=dict)
    iterations: int = 0


class _Node:
    __slots__ = ("chain", "children", "untried", "visits", "total", "done")

    def __init__(self, chain: tuple[int, ...], untried: list[int]):
        self.chain = chain
        self.children: dict[int, _Node] = {}
        self.untried = untried   # moves not yet expanded, in a seeded random order
        self.visits, self.total = 0, 0.0
        self.done = not untried  # a complete chain, or a subtree searched to the end


class _Budget(Exception):
    """The reward was called ``budget`` times."""


class _Search:
    def __init__(self, reward: Callable[[tuple[int, ...]], float], layers: int,
                 cfg: ColaSearchConfig):
        if cfg.start >= layers:
            raise ConfigError(f"ColaSearchConfig.start = {cfg.start} is not allowed: expected a "
                              f"layer index in [0, {layers})")
        self.reward, self.layers, self.cfg = reward, layers, cfg
        self.max_length = cfg.max_length or 2 * layers
        self.rng = random.Random(cfg.seed)
        self.scores: dict[tuple[int, ...], float] = {}
        self.root = self._node((cfg.start,))

    def moves(self, chain: tuple[int, ...]) -> list[int]:
        """The moves allowed after ``chain``; none when it is complete."""
        last = chain[-1]
        if last == self.layers - 1 or len(chain) >= self.max_length:
            return []
        run = len(chain) - next((k for k in range(len(chain) - 1, -1, -1) if chain[k] != last),
                                -1) - 1
        return [m for m in self.cfg.moves
                if last + m < self.layers and (m > 0 or run <= self.cfg.max_repeats)]

    def _node(self, chain: tuple[int, ...]) -> _Node:
        untried = self.moves(chain)
        self.rng.shuffle(untried)
        return _Node(chain, untried)

    def score(self, chain: tuple[int, ...]) -> float:
        if chain not in self.scores:
            if len(self.scores) >= self.cfg.budget:
                raise _Budget
            r = float(self.reward(chain))
            if math.isnan(r):
                raise ValueError(f"the reward of chain {list(chain)} is NaN")
            self.scores[chain] = r
        return self.scores[chain]

    def seed(self, chain: Sequence[int]) -> None:
        """Score a known complete chain and add its path to the tree."""
        chain = tuple(chain)
        if chain[:1] != self.root.chain or any(
                b - a not in self.moves(chain[:k + 1]) for k, (a, b) in
                enumerate(zip(chain, chain[1:]))) or self.moves(chain):
            raise ConfigError(f"seed chain {list(chain)} is not a complete chain of the moves "
                              f"{self.cfg.moves} from layer {self.cfg.start}")
        path = [self.root]
        for a, b in zip(chain, chain[1:]):
            path.append(self._child(path[-1], b - a))
        self._backup(path, self.score(chain))

    def _child(self, node: _Node, move: int) -> _Node:
        if move not in node.children:
            node.untried.remove(move)
            node.children[move] = self._node(node.chain + (node.chain[-1] + move,))
        return node.children[move]

    def iterate(self) -> None:
        node, path = self.root, [self.root]
        while not node.untried:
            node = max((c for c in node.children.values() if not c.done), key=lambda c: (
                c.total / c.visits + self.cfg.exploration * math.sqrt(
                    math.log(node.visits) / c.visits)) if c.visits else math.inf)
            path.append(node)
        node = self._child(node, node.untried[-1])
        path.append(node)
        chain = node.chain
        while moves := self.moves(chain):
            chain = chain + (chain[-1] + self.rng.choice(moves),)
        self._backup(path, self.score(chain))

    def _backup(self, path: list[_Node], r: float) -> None:
        for node in reversed(path):
            node.visits += 1
            node.total += r
            node.done = not node.untried and all(c.done for c in node.children.values())


def search(reward: Callable[[tuple[int, ...]], float], layers: int,
           cfg: ColaSearchConfig = ColaSearchConfig(),
           seeds: Iterable[Sequence[int]] = ()) -> SearchResult:
    """UCT search for the chain of ``layers`` layers with the highest ``reward``.

    Args:
        reward: ``reward(chain) -> float``, higher is better; called at most ``cfg.budget``
            times, once per distinct chain.
        layers: the model's number of layers; chains end at layer ``layers - 1``.
        cfg: the budget, the moves, the limits and the seed.
        seeds: complete chains to score first (within the budget), e.g. ``range(layers)``.

    Returns:
        A :class:`SearchResult`; the same for the same arguments (seeded, no clocks).

    Raises:
        ConfigError: ``cfg.start`` outside the model, or a seed the moves cannot make.

    Example:
        >>> found = search(lambda c: -abs(len(c) - 5), layers=8, cfg=ColaSearchConfig(budget=16))
    """
    s = _Search(reward, layers, cfg)
    iterations = 0
    try:
        for chain in seeds:
            s.seed(chain)
        if not s.root.untried:   # the start is the last layer: one chain only
            s.score(s.root.chain)
        # Each iteration adds a node, so a finite tree ends the loop even when rollouts only
        # meet chains scored before; the cap is a guard for huge trees and a tiny budget.
        while not s.root.done and iterations < 100 * cfg.budget:
            s.iterate()
            iterations += 1
    except _Budget:
        pass
    best = max(s.scores, key=lambda c: (s.scores[c], -len(c)))
    return SearchResult(best, s.scores[best], dict(s.scores), iterations)


def search_each(reward: Callable[[Any, tuple[int, ...]], float], inputs: Iterable[Any],
                layers: int, cfg: ColaSearchConfig = ColaSearchConfig(),
                seeds: Sequence[Sequence[int]] = ()) -> list[SearchResult]:
    """One search per input, as the paper does: ``reward(input, chain)``; the same seed for
    each input, so a result depends on its input only."""
    return [search(lambda c, x=x: reward(x, c), layers, cfg, seeds) for x in inputs]


def search_split(reward: Callable[[Any, tuple[int, ...]], float], inputs: Sequence[Any],
                 layers: int, cfg: ColaSearchConfig = ColaSearchConfig(),
                 seeds: Sequence[Sequence[int]] = ()) -> SearchResult:
    """One chain for a whole split: the search with the mean of ``reward(input, chain)`` over
    ``inputs`` (e.g. a validation split, the chain then applied to the test split)."""
    if not inputs:
        raise ValueError("search_split needs at least one input")
    return search(lambda c: sum(reward(x, c) for x in inputs) / len(inputs), layers, cfg, seeds)

"""Pointer-network tasks (Vinyals et al. 2015, arXiv:1506.03134): outputs are input positions.

Three seeded generators, each giving float inputs and, per instance, the target sequence of
input indices followed by the end-of-output token:

* ``sort``: n scalars in [0, 1); target: their argsort (ascending).
* ``hull``: n points in the unit square; target: the convex hull's vertices counter-clockwise,
  starting from the lowest index (Andrew's monotone chain, written here).
* ``tsp``: n points in the unit square; target: the optimal closed tour by Held-Karp dynamic
  programming (n <= 10: O(2^n n^2), vectorised over the batch), starting at index 0 with the
  direction fixed so that ``tour[1] < tour[-1]``. ``nearest_neighbour`` is the baseline tour
  and ``tour_length`` scores any tour.

Example:
    >>> b = make_batch("hull", n=8, batch=4, seed=0, end=20)
    >>> b.points.shape, b.targets[0]          # (4, 8, 2); e.g. [1, 5, 0, 3, 20]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqlab.config import ConfigError

TASKS = ("sort", "hull", "tsp")
HELD_KARP_MAX_N = 10   # 2^9 subsets x 9 x 9: ~50 ms per 1,000 instances; n = 12 is 16x that


@dataclass(frozen=True)
class PointerBatch:
    """One batch of instances of one size.

    Attributes:
        points: (B, n, d) float32 inputs (d = 1 for sort, 2 for hull and tsp).
        targets: per instance the target indices, ending with the end token ``end``.
        n: instance size.
    """

    points: Tensor
    targets: list[list[int]]
    n: int


def input_dim(task: str) -> int:
    """Features per input element: 1 for ``sort``, 2 for ``hull`` and ``tsp``."""
    _check_task(task)
    return 1 if task == "sort" else 2


def make_batch(task: str, n: int, batch: int, seed: int, end: int) -> PointerBatch:
    """``batch`` seeded instances of ``task`` with ``n`` inputs each.

    Args:
        task: ``"sort"``, ``"hull"`` or ``"tsp"``.
        n: inputs per instance (tsp: 3 to ``HELD_KARP_MAX_N``; hull: >= 3; sort: >= 1).
        batch: instances.
        seed: the same seed gives the same instances.
        end: the end-of-output token appended to every target (a model's ``max_n``).

    Raises:
        ConfigError: an unknown task or a size the task cannot take.
    """
    _check_task(task)
    low = 1 if task == "sort" else 3
    high = HELD_KARP_MAX_N if task == "tsp" else end
    if not low <= n <= high:
        why = " (Held-Karp's exact tours; use random_points and nearest_neighbour beyond)" \
            if task == "tsp" else ""
        raise ConfigError(f"{task} instances need {low} <= n <= {high}{why}; got n = {n}")
    rng = np.random.default_rng([seed, n, TASKS.index(task)])
    x = rng.random((batch, n, input_dim(task)))
    if task == "sort":
        targets = np.argsort(x[..., 0], axis=1, kind="stable").tolist()
    elif task == "hull":
        targets = [convex_hull(p) for p in x]
    else:
        targets = held_karp(x)[1].tolist()
    return PointerBatch(torch.tensor(x, dtype=torch.float32), [t + [end] for t in targets], n)


def mixed_batch(task: str, sizes: list[int], seed: int, end: int
                ) -> tuple[Tensor, Tensor, list[list[int]]]:
    """Instances of several sizes in one batch: ``(points (B, max n, d) zero-padded after
    each instance, n (B,), targets)``, grouped by size in ascending order; for size n the
    instances are ``make_batch(task, n, count, seed, end)``'s."""
    counts = {n: sizes.count(n) for n in sorted(set(sizes))}
    N = max(counts)
    points, ns, targets = [], [], []
    for n, c in counts.items():
        b = make_batch(task, n, c, seed, end)
        points.append(torch.nn.functional.pad(b.points, (0, 0, 0, N - n)))
        ns += [n] * c
        targets += b.targets
    return torch.cat(points), torch.tensor(ns), targets


def random_points(n: int, batch: int, seed: int) -> np.ndarray:
    """(batch, n, 2) seeded points in the unit square (tsp instances of any size, no target)."""
    return np.random.default_rng([seed, n, 99]).random((batch, n, 2))


def convex_hull(points: np.ndarray) -> list[int]:
    """Indices of the convex hull's vertices, counter-clockwise from the lowest index.

    Andrew's monotone chain: sort by (x, y), build the lower and upper chains, popping
    points that do not make a strict left turn (collinear points are not vertices).

    Args:
        points: (n, 2) array, n >= 1.
    """
    pts = np.asarray(points, dtype=np.float64)
    order = sorted(range(len(pts)), key=lambda i: (pts[i, 0], pts[i, 1]))
    if len(order) < 3:
        return sorted(order)

    def cross(o: int, a: int, b: int) -> float:
        return float((pts[a, 0] - pts[o, 0]) * (pts[b, 1] - pts[o, 1])
                     - (pts[a, 1] - pts[o, 1]) * (pts[b, 0] - pts[o, 0]))

    def chain(idx) -> list[int]:
        out: list[int] = []
        for i in idx:
            while len(out) >= 2 and cross(out[-2], out[-1], i) <= 0:
                out.pop()
            out.append(i)
        return out

    hull = chain(order)[:-1] + chain(order[::-1])[:-1]   # counter-clockwise
    start = hull.index(min(hull))
    return hull[start:] + hull[:start]


def distances(points: np.ndarray) -> np.ndarray:
    """(..., n, n) Euclidean distances of (..., n, 2) points."""
    p = np.asarray(points, dtype=np.float64)
    return np.sqrt(((p[..., :, None, :] - p[..., None, :, :]) ** 2).sum(-1))


def tour_length(points: np.ndarray, tours) -> np.ndarray:
    """(B,) lengths of closed tours: ``tours`` (B, n) orders of each instance's points (B, n, 2)."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(tours, dtype=np.int64)
    ordered = np.take_along_axis(p, t[..., None], axis=1)
    return np.sqrt(((ordered - np.roll(ordered, -1, axis=1)) ** 2).sum(-1)).sum(-1)


def normalise_tour(tour) -> list[int]:
    """The same closed tour starting at index 0 with ``tour[1] < tour[-1]``."""
    t = [int(i) for i in tour]
    k = t.index(0)
    t = t[k:] + t[:k]
    if len(t) > 2 and t[1] > t[-1]:
        t = [0] + t[:0:-1]
    return t


def held_karp(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal closed tours of a batch of same-size instances by dynamic programming.

    ``dp[S, j]``: the shortest path from node 0 through the set S of other nodes, ending
    at j in S; ``dp[S, j] = min_k dp[S - {j}, k] + d(k, j)``. Masks run in increasing order,
    so every subset is done before its supersets; each mask is one batched numpy step.

    Args:
        points: (B, n, 2), 2 <= n <= ``HELD_KARP_MAX_N``.

    Returns:
        (lengths (B,), tours (B, n) int64, normalised as in ``normalise_tour``).

    Raises:
        ConfigError: n outside [2, HELD_KARP_MAX_N].
    """
    p = np.asarray(points, dtype=np.float64)
    B, n = p.shape[:2]
    if not 2 <= n <= HELD_KARP_MAX_N:
        raise ConfigError(f"held_karp takes 2 <= n <= {HELD_KARP_MAX_N} points; got n = {n}")
    d = distances(p)                         # (B, n, n)
    m = n - 1                                # nodes 1..n-1 are bits 0..m-1
    inner = d[:, 1:, 1:]                     # (B, m, m)
    dp = np.full((B, 1 << m, m), np.inf)
    parent = np.zeros((B, 1 << m, m), dtype=np.int8)
    for j in range(m):
        dp[:, 1 << j, j] = d[:, 0, j + 1]
    for mask in range(1, 1 << m):
        js = np.array([j for j in range(m) if mask >> j & 1])
        if len(js) < 2:
            continue
        prev = mask ^ (1 << js)                                    # (|S|,)
        cand = dp[:, prev, :] + inner[:, :, js].transpose(0, 2, 1)  # (B, |S|, m): via k
        parent[:, mask, js] = cand.argmin(-1)
        dp[:, mask, js] = cand.min(-1)
    full = (1 << m) - 1
    closing = dp[:, full, :] + d[:, 1:, 0]                         # (B, m)
    lengths = closing.min(-1)
    last = closing.argmin(-1)
    rows = np.arange(B)
    path = np.zeros((B, m), dtype=np.int64)
    masks = np.full(B, full)
    for pos in range(m - 1, -1, -1):
        path[:, pos] = last
        nxt = parent[rows, masks, last].astype(np.int64)
        masks = masks ^ (1 << last)
        last = nxt
    tours = np.array([normalise_tour([0] + list(r + 1)) for r in path], dtype=np.int64)
    return lengths, tours.reshape(B, n)


def nearest_neighbour(points: np.ndarray) -> np.ndarray:
    """(B, n) tours: from index 0, always to the nearest unvisited point (normalised)."""
    d = distances(points)
    B, n = d.shape[:2]
    visited = np.zeros((B, n), dtype=bool)
    tour = np.zeros((B, n), dtype=np.int64)
    rows = np.arange(B)
    visited[:, 0] = True
    for pos in range(1, n):
        here = d[rows, tour[:, pos - 1]]                 # (B, n)
        tour[:, pos] = np.where(visited, np.inf, here).argmin(-1)
        visited[rows, tour[:, pos]] = True
    return np.array([normalise_tour(t) for t in tour], dtype=np.int64).reshape(B, n)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"unknown pointer task {task!r}: expected one of {', '.join(TASKS)}")


__all__ = ["HELD_KARP_MAX_N", "PointerBatch", "TASKS", "convex_hull", "distances", "held_karp",
           "input_dim", "make_batch", "nearest_neighbour", "normalise_tour", "random_points",
           "tour_length"]

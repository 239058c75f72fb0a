"""The pointer-network tasks: targets checked against independent answers."""

import itertools

import numpy as np
import pytest

from seqlab.config import ConfigError
from seqlab.tasks.pointer_tasks import (convex_hull, held_karp, make_batch, nearest_neighbour,
                                        normalise_tour, random_points, tour_length)

try:
    from scipy.spatial import ConvexHull
except ImportError:  # the brute-force check below still runs
    ConvexHull = None


def test_sort_targets_are_argsort_and_end():
    b = make_batch("sort", 9, 16, seed=3, end=20)
    assert b.points.shape == (16, 9, 1)
    for x, t in zip(b.points[..., 0].tolist(), b.targets):
        assert t[-1] == 20 and sorted(t[:-1]) == list(range(9))
        assert [x[i] for i in t[:-1]] == sorted(x)


def test_batches_are_seeded():
    a, b = make_batch("hull", 7, 4, seed=5, end=10), make_batch("hull", 7, 4, seed=5, end=10)
    assert a.targets == b.targets and (a.points == b.points).all()
    assert (make_batch("hull", 7, 4, seed=6, end=10).points != a.points).any()


@pytest.mark.parametrize("n", [3, 5, 10, 20], ids=lambda n: f"n{n}")
def test_hull_is_counter_clockwise_from_lowest_index_and_contains_every_point(n):
    b = make_batch("hull", n, 25, seed=n, end=20)
    for pts, t in zip(b.points.double().numpy(), b.targets):
        hull = t[:-1]
        assert t[-1] == 20 and hull[0] == min(hull) and len(set(hull)) == len(hull) >= 3
        # Brute force: every edge turns left and every point lies on its inner side.
        for i, j in zip(hull, hull[1:] + hull[:1]):
            e = pts[j] - pts[i]
            side = e[0] * (pts[:, 1] - pts[i, 1]) - e[1] * (pts[:, 0] - pts[i, 0])
            assert (side >= -1e-12).all()
        if ConvexHull is not None:
            ref = [int(v) for v in ConvexHull(pts).vertices]   # counter-clockwise in 2-D
            k = ref.index(min(ref))
            assert hull == ref[k:] + ref[:k]


def test_hull_skips_collinear_points():
    pts = np.array([[0, 0], [1, 0], [2, 0], [2, 2], [0, 2], [1, 1]], dtype=float)
    assert convex_hull(pts) == [0, 2, 3, 4]


@pytest.mark.parametrize("n", [4, 5, 6, 7], ids=lambda n: f"n{n}")
def test_held_karp_matches_brute_force(n):
    pts = random_points(n, 12, seed=n)
    lengths, tours = held_karp(pts)
    for p, length, tour in zip(pts, lengths, tours):
        best = min(tour_length(p[None], [[0, *perm]])[0]
                   for perm in itertools.permutations(range(1, n)))
        assert length == pytest.approx(best, abs=1e-12)
        assert tour_length(p[None], [tour])[0] == pytest.approx(best, abs=1e-12)
        assert tour[0] == 0 and tour[1] < tour[-1] and sorted(tour) == list(range(n))


def test_tsp_targets_are_held_karp_tours_and_nearest_neighbour_is_no_better():
    b = make_batch("tsp", 8, 10, seed=0, end=20)
    pts = b.points.double().numpy()
    opt = tour_length(pts, [t[:-1] for t in b.targets])
    np.testing.assert_allclose(opt, held_karp(pts)[0], rtol=1e-6)
    nn = nearest_neighbour(pts)
    assert all(sorted(t) == list(range(8)) and t[0] == 0 for t in nn.tolist())
    assert (tour_length(pts, nn) >= opt - 1e-9).all()


def test_nearest_neighbour_follows_the_nearest_point():
    pts = np.array([[[0, 0], [3, 0], [1, 0], [1, 1]]], dtype=float)
    assert nearest_neighbour(pts).tolist() == [normalise_tour([0, 2, 3, 1])]


def test_tour_length_and_normalise():
    square = np.array([[[0, 0], [1, 0], [1, 1], [0, 1]]], dtype=float)
    assert tour_length(square, [[0, 1, 2, 3]])[0] == pytest.approx(4.0)
    assert tour_length(square, [[0, 2, 1, 3]])[0] == pytest.approx(2 + 2 * 2 ** 0.5)
    assert normalise_tour([2, 3, 0, 1]) == [0, 1, 2, 3]
    assert normalise_tour([0, 3, 2, 1]) == [0, 1, 2, 3]


def test_bad_requests_are_named():
    with pytest.raises(ConfigError, match="unknown pointer task 'tour'"):
        make_batch("tour", 5, 2, seed=0, end=10)
    with pytest.raises(ConfigError, match="tsp instances need 3 <= n <= 10"):
        make_batch("tsp", 11, 2, seed=0, end=20)
    with pytest.raises(ConfigError, match="hull instances need 3 <= n <= 10"):
        make_batch("hull", 12, 2, seed=0, end=10)
    with pytest.raises(ConfigError, match="held_karp takes"):
        held_karp(random_points(11, 1, seed=0))

"""dnas.pareto on hand-worked examples (points are (cost, accuracy): cost down, accuracy up)."""

from __future__ import annotations

import random

import pytest

from dnas import pareto


def test_hypervolume_is_the_mean_best_accuracy_over_costs():
    # best 0 on [0, 20), 0.5 on [20, 60), 0.8 on [60, 100]: (0.5*40 + 0.8*40) / 100
    assert pareto.hypervolume([(20, 0.5), (60, 0.8), (70, 0.6), (150, 0.99)], 100) == (
        pytest.approx(0.52)
    )
    assert pareto.hypervolume([], 100) == 0.0
    assert pareto.hypervolume([(100, 0.9), (120, 0.95)], 100) == 0.0  # at or past the reference
    with pytest.raises(ValueError):
        pareto.hypervolume([(1, 0.5)], 0)


def test_front_keeps_the_non_dominated_cheapest_first():
    pts = [(3, 0.6), (1, 0.5), (2, 0.7), (2, 0.7), (4, 0.7), (0.5, 0.4)]
    # (3, .6) is dominated by (2, .7); (4, .7) too; the second (2, .7) is a duplicate.
    assert pareto.nondominated(pts) == [False, True, True, False, False, True]
    front = pareto.front(list(enumerate(pts)), lambda it: it[1][0], lambda it: it[1][1])
    assert [i for i, _ in front] == [5, 1, 2]


def test_ranks_are_successive_fronts():
    pts = [(1, 0.5), (2, 0.7), (2, 0.6), (3, 0.6), (1, 0.4)]
    # front 1: (1,.5), (2,.7); then (2,.6) and (1,.4); then (3,.6), dominated by (2,.6).
    assert pareto.ranks(pts) == [1, 1, 2, 3, 2]
    assert pareto.ranks([]) == [] and pareto.nondominated([]) == []


def test_front_matches_a_brute_force_definition():
    rng = random.Random(0)
    pts = [(rng.randint(1, 20), rng.randint(0, 10) / 10) for _ in range(200)]
    brute = [
        not any((c2 <= c and a2 >= a) and (c2, a2) != (c, a) for c2, a2 in pts) for c, a in pts
    ]
    got = pareto.nondominated(pts)
    # Of equal points only the first is kept; brute force keeps them all.
    firsts = [pts.index(p) == i for i, p in enumerate(pts)]
    assert got == [b and f for b, f in zip(brute, firsts)]

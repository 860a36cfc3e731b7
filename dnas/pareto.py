"""Pareto fronts and hypervolume in dnas's terms: accuracy up, cost (parameters or FLOPs) down.

A thin adaptor over moocore (López-Ibáñez et al., the C implementations behind the EAF and
hypervolume literature): non-dominated filtering, non-dominated sorting (Pareto ranks) and the
2-D hypervolume. The search summary, the report and the benchmarks all use this module, so a
front or a hypervolume means the same thing everywhere.

Points are ``(cost, accuracy)`` pairs. The hypervolume is normalised: the area dominated by the
points from the reference point ``(ref_cost, accuracy 0)``, divided by ``ref_cost``. It is the
mean, over costs c in [0, ref_cost], of the best accuracy reachable at cost <= c; 1.0 would be
100% accuracy at no cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import moocore
import numpy as np

T = TypeVar("T")


def _minimised(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """(cost, accuracy) pairs as an (n, 2) array of objectives that are both minimised."""
    a = np.asarray(points, dtype=float).reshape(-1, 2)
    return np.column_stack([a[:, 0], -a[:, 1]])


def nondominated(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which ``(cost, accuracy)`` points no other point dominates. Of several equal points only
    the first counts as non-dominated."""
    if not len(points):
        return []
    return moocore.is_nondominated(_minimised(points), keep_weakly=False).tolist()


def ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting: rank 1 for the front, 2 for the front of what is left, and so on
    (equal points share a rank)."""
    if not len(points):
        return []
    return (moocore.pareto_rank(_minimised(points)) + 1).astype(int).tolist()


def front(items: Sequence[T], cost: Callable[[T], float], acc: Callable[[T], float]) -> list[T]:
    """The items not dominated in (``acc`` up, ``cost`` down), cheapest first; of items with the
    same cost and accuracy, the first in ``items`` stands for them."""
    keep = nondominated([(cost(it), acc(it)) for it in items])
    members = [it for it, k in zip(items, keep) if k]
    return sorted(members, key=lambda it: (cost(it), -acc(it)))


def hypervolume(points: Sequence[tuple[float, float]], ref_cost: float) -> float:
    """Normalised area dominated by ``(cost, accuracy)`` points up to ``ref_cost`` (see above).
    Points at or beyond ``ref_cost``, or with accuracy <= 0, add nothing."""
    if ref_cost <= 0:
        raise ValueError(f"the reference cost must be > 0, got {ref_cost}")
    inside = [(c, a) for c, a in points if c < ref_cost and a > 0]
    if not inside:
        return 0.0
    return float(moocore.hypervolume(_minimised(inside), ref=[ref_cost, 0.0])) / ref_cost


def crowding(points: Sequence[tuple[float, float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within its own Pareto rank (Deb et al. 2002):
    the normalised perimeter of the box its two neighbours on that front span; a front's two
    ends (and a point alone on its rank) get infinity. Larger = a less crowded place."""
    rank = ranks(points)
    dist = [0.0] * len(points)
    for r in set(rank):
        members = sorted((i for i in range(len(points)) if rank[i] == r), key=lambda i: points[i])
        dist[members[0]] = dist[members[-1]] = math.inf
        for axis in (0, 1):
            values = [points[i][axis] for i in members]
            span = max(values) - min(values)
            for j in range(1, len(members) - 1):
                if span > 0:
                    dist[members[j]] += abs(values[j + 1] - values[j - 1]) / span
    return dist


def order(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of ``(cost, accuracy)`` points, best first, as NSGA-II selects survivors: by
    Pareto rank, then by crowding distance (larger first), then by position (earlier first)."""
    rank, dist = ranks(points), crowding(points)
    return sorted(range(len(points)), key=lambda i: (rank[i], -dist[i], i))

"""Rank agreement for the benchmarks: Kendall's tau-b, ties counted as scipy.stats.kendalltau
counts them (scipy is not a dependency); checked on hand-worked examples at import."""

from __future__ import annotations

import math
from collections.abc import Sequence


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences; nan when either is constant."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else math.nan


# x = 1..4, y = 3, 1, 1, 0: of the six pairs, (2, 3) is tied in y and the other five are
# discordant: tau-b = (0 - 5) / sqrt((5 + 0) * (5 + 1)) = -0.9129.
assert abs(kendall_tau([1, 2, 3, 4], [3, 1, 1, 0]) - (-5 / math.sqrt(30))) < 1e-12
assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0


def _ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their mean rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties at their mean rank, as
    scipy.stats.spearmanr); nan when either is constant."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else math.nan


# Same example: ranks of y are 4, 2.5, 2.5, 1; deviations from 2.5 are (-1.5, -0.5, 0.5, 1.5)
# and (1.5, 0, 0, -1.5): rho = -4.5 / sqrt(5 * 4.5) = -0.9487.
assert abs(spearman_rho([1, 2, 3, 4], [3, 1, 1, 0]) - (-4.5 / math.sqrt(22.5))) < 1e-12

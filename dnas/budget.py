"""Budgets: ``1M-params``, ``800k-params``, ``300M-flops``, ``0.5G-flops``; several must all hold.

FLOP budgets are in fvcore's convention (one multiply-add = one flop), as every FLOP dnas prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dnas.cost import Cost
from dnas.errors import DnasError

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([kmg]?)-(params|flops)$", re.IGNORECASE)
EXAMPLE = "1M-params, 800k-params, 300M-flops or 0.5G-flops"


class BudgetError(DnasError):
    pass


@dataclass(frozen=True)
class Budget:
    metric: Literal["params", "flops"]
    limit: int

    def allows(self, cost: Cost) -> bool:
        return getattr(cost, self.metric) <= self.limit

    def __str__(self) -> str:
        return f"{human(self.limit)}-{self.metric}"


def parse_budget(text: str) -> Budget:
    m = _BUDGET.match(text.strip())
    if not m:
        raise BudgetError(
            f"bad budget {text!r}: write a number, an optional k/M/G and -params or -flops,"
            f" e.g. {EXAMPLE}"
        )
    value = float(m[1]) * _UNITS[m[2].lower()]
    if value <= 0:
        raise BudgetError(f"bad budget {text!r}: the limit must be positive, e.g. {EXAMPLE}")
    return Budget(m[3].lower(), int(value))  # type: ignore[arg-type]


def parse_budgets(texts: list[str] | tuple[str, ...]) -> tuple[Budget, ...]:
    return tuple(parse_budget(t) for t in texts)


def allows_all(budgets: tuple[Budget, ...], cost: Cost) -> bool:
    return all(b.allows(cost) for b in budgets)


def human(n: float) -> str:
    """1234567 -> '1.23M' (for display; exact figures are printed beside it where they matter)."""
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"

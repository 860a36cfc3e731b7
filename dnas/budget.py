"""Budgets: ``1M-params``, ``800k-params``, ``300M-flops``, ``0.5G-flops``, ``2G-memory``; several
must all hold.

FLOP budgets are in fvcore's convention (one multiply-add = one flop), as every FLOP dnas prints.
Memory budgets bound the predicted peak memory of a training step (``dnas.memory``) at the
search's batch size, in bytes with binary prefixes (``2G-memory`` is 2 GiB), as GPU memory is
quoted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from dnas.cost import Cost, count
from dnas.errors import DnasError
from dnas.memory import FLOAT, training_memory
from dnas.spec import Spec

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BINARY = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}  # memory
_BUDGET = re.compile(
    r"^((?:\d+(?:\.\d+)?|\.\d+)(?:e[+-]?\d+)?)\s*([kmg]?)-(params|flops|memory)$",
    re.IGNORECASE | re.ASCII,  # digits 0-9 only: '２０k' made a study name of '__k'
)
EXAMPLE = "1M-params, 800k-params, 300M-flops, 0.5G-flops or 2G-memory"


class BudgetError(DnasError):
    pass


@dataclass(frozen=True)
class Budget:
    metric: Literal["params", "flops", "memory"]
    limit: int  # parameters, flops or bytes

    def allows(self, cost: Cost) -> bool:
        return self.used(cost) <= self.limit

    def used(self, cost: Cost) -> int:
        """What ``cost`` spends of this budget (a memory budget needs ``cost.memory``)."""
        value = getattr(cost, self.metric)
        if value is None:
            raise ValueError("a memory budget needs the cost's memory: count(..., batch_size=)")
        return value

    def __str__(self) -> str:
        if self.metric == "memory":
            return f"{human_bytes(self.limit)}-memory"
        return f"{human(self.limit)}-{self.metric}"


def parse_budget(text: str) -> Budget:
    m = _BUDGET.match(text.strip())
    if not m:
        raise BudgetError(
            f"bad budget {text!r}: write a number, an optional k/M/G and -params, -flops or"
            f" -memory, e.g. {EXAMPLE}"
        )
    units = _BINARY if m[3].lower() == "memory" else _UNITS
    value = float(m[1]) * units[m[2].lower()]  # 1e999 is inf: refused below
    if not 1 <= value < 2**63:
        raise BudgetError(
            f"bad budget {text!r}: the limit must be at least 1 and below 2^63, e.g. {EXAMPLE}"
        )
    return Budget(m[3].lower(), int(value))  # type: ignore[arg-type]


def parse_budgets(texts: list[str] | tuple[str, ...]) -> tuple[Budget, ...]:
    """One budget per metric: two on one metric (``1M-params`` and ``2M-params``) are a slip,
    and one of them would be silently idle."""
    budgets = tuple(parse_budget(t) for t in texts)
    seen: dict[str, str] = {}  # metric -> the text that set it
    for text, b in zip(texts, budgets):
        if b.metric in seen:
            raise BudgetError(
                f"two {b.metric} budgets, {seen[b.metric]!r} and {text!r}: give one per metric"
                " (params, flops, memory)"
            )
        seen[b.metric] = text
    return budgets


def allows_all(budgets: tuple[Budget, ...], cost: Cost) -> bool:
    return all(b.allows(cost) for b in budgets)


def needs_memory(budgets: tuple[Budget, ...]) -> bool:
    """Whether checking ``budgets`` needs a memory prediction (the one cost that needs a batch)."""
    return any(b.metric == "memory" for b in budgets)


def human(n: float) -> str:
    """1234567 -> '1.23M' (for display; exact figures are printed beside it where they matter)."""
    return _short(n, (("", 1), ("k", 10**3), ("M", 10**6), ("G", 10**9)))


def human_bytes(n: float) -> str:
    """2147483648 -> '2G' (binary prefixes, as memory is quoted: G = GiB)."""
    return _short(n, (("", 1), ("k", 2**10), ("M", 2**20), ("G", 2**30)))


def _short(n: float, units: tuple[tuple[str, int], ...]) -> str:
    """Three significant digits in the largest unit that leaves at least 1; the next unit once
    they round to it (999,999 is '1M', not '1e+03k'), whole numbers from 1000 of a unit on
    (1023 KiB is '1023k'; past the largest unit, '5000G'), and an exponent from a million on."""
    if not math.isfinite(n):
        return f"{n:g}"
    unit, scale = units[0]
    for bigger, bigger_scale in units[1:]:
        if abs(_shown(n / scale)) < bigger_scale / scale:
            break
        unit, scale = bigger, bigger_scale
    value = n / scale
    whole = 1000 <= abs(_shown(value)) < 10**6
    return f"{value:.0f}{unit}" if whole else f"{value:.3g}{unit}"


def _shown(value: float) -> float:
    """``value`` as ``_short`` prints it: three significant digits, whole from 1000 on."""
    rounded = float(f"{value:.3g}")
    return float(round(value)) if abs(rounded) >= 1000 else rounded


def bytes_text(n: float) -> str:
    """2147483648 -> '2 GiB', 1536 -> '1.5 KiB', 512 -> '512 bytes' (for messages)."""
    short = human_bytes(n)
    unit = {"G": "GiB", "M": "MiB", "k": "KiB"}.get(short[-1])
    return f"{short[:-1]} {unit}" if unit else f"{short} bytes"


def require_fits(
    spec: Spec,
    available: int | None,
    device: str = "cpu",
    batch_size: int | None = None,
    input_size: tuple[int, int] = (32, 32),
    memory_efficient: bool = False,
) -> None:
    """Refuse, before anything is built, a network whose fp32 weights, or with ``batch_size``
    one training step of it (``dnas.memory``), need more than the ``available`` bytes of
    ``device`` (None: unknown, nothing refused). Without it a name such as wrn-100000000-10
    spends hours building modules, then fails to allocate them.

    Raises:
        DnasError: what it needs, what there is, and what would fit.
    """
    if available is None:
        return
    params = count(spec, input_size).params
    if params * FLOAT > available:
        raise DnasError(
            f"{spec.name} has {params:,} parameters: its weights alone need"
            f" {_gib(params * FLOAT)}, more than the {_gib(available)} of memory available on"
            f" the {device}; choose a smaller model"
        )
    if batch_size is None:
        return
    need = training_memory(spec, batch_size, input_size, memory_efficient, device).peak
    if need > available:
        one = training_memory(spec, 1, input_size, memory_efficient, device).peak
        fits = 0  # memory grows about linearly with the batch: the largest that would fit
        if one <= available:
            fits = 1 + (available - one) * (batch_size - 1) // (need - one)
        advice = f"a batch of at most about {fits:,}" if fits else "a smaller model"
        raise DnasError(
            f"a training step of {spec.name} at batch {batch_size:,} needs {_gib(need)}"
            f" (predicted), more than the {_gib(available)} of memory available on the {device};"
            f" use {advice}"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"

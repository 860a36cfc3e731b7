"""Proposals that are within budget by construction, drawn with Optuna's suggest API.

The default spaces (``dnas.space``) are mostly over any small budget: drawn uniformly, three in
four DenseNet/WRN candidates exceed 1M parameters. Here the choices that bound the cost least
come first and are drawn from fixed lists (family, bottleneck, compression, block type, dropout:
only the values some candidate within budget has), and the two that bound it most come last, as
positions in the range the earlier choices leave feasible:

    DenseNet: bottleneck, θ, dropout -> growth rate k -> layers per block n
    WRN:      block type, dropout    -> widen factor k -> blocks per group N

``*_growth`` and ``*_depth`` are fractions in [0, 1): 0 is the smallest feasible value, values
near 1 the largest. The sampler learns over these fixed distributions (so TPE's model stays
valid across trials), and the closed-form cost (``dnas.cost``) makes the feasible ranges cheap:
each is computed once per combination of earlier choices and cached.

A combination of earlier choices that leaves nothing feasible (only possible when a budget is so
tight that, say, bottleneck alone fits and θ = 1 alone fits but not both) yields the smallest
candidate of that combination, which the caller's guard rejects and counts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from dnas.budget import Budget, allows_all, needs_memory
from dnas.cost import count
from dnas.datasets import DatasetInfo
from dnas.memory import training_memory
from dnas.space import ALL, SPACES, DenseNetSpace, WRNSpace
from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, Spec, WRNSpec

if TYPE_CHECKING:
    import optuna

_BLOCK_NAMES = {v: k for k, v in WRN_BLOCK_TYPES.items()}


class FeasibleSpace:
    """The part of a design space (``all``, ``densenet``, ``densenet-bc``, ``wrn``) within
    ``budgets`` on one dataset, and a way to draw from it."""

    def __init__(
        self,
        space: str,
        info: DatasetInfo,
        budgets: tuple[Budget, ...],
        batch_size: int = 128,
        device: str = "cpu",
    ) -> None:
        """``batch_size`` and ``device`` matter only to a memory budget (``dnas.memory``)."""
        self.info, self.budgets = info, budgets
        self.size = (info.height, info.width)
        self.batch = batch_size if needs_memory(budgets) else None
        self.device = device
        self.spaces = {f: SPACES[f] for f in (ALL if space == "all" else (space,))}
        # The fixed lists: the values that some candidate within budget takes.
        self.choices: dict[str, dict[str, list]] = {}
        for fam, s in self.spaces.items():
            if isinstance(s, DenseNetSpace):
                pairs = [(b, t) for b in s.bottleneck for t in s.compression
                         if self._growths(fam, b, t)]  # fmt: skip
                self.choices[fam] = {
                    "bottleneck": [b for b in s.bottleneck if any(p[0] == b for p in pairs)],
                    "compression": [t for t in s.compression if any(p[1] == t for p in pairs)],
                }
            else:
                self.choices[fam] = {"block": [b for b in s.block_types if self._widens(b)]}
        self.families = [f for f, c in self.choices.items() if all(c.values())]

    def empty(self) -> bool:
        return not self.families

    # ---- feasible ranges (every cost grows with depth: the first depth over budget ends them)

    def _fits(self, spec: Spec) -> bool:
        return allows_all(self.budgets, count(spec, self.size, self.batch, self.device))

    def _prefix(self, specs: Iterator[Spec]) -> int:
        """How many of ``specs`` (shallowest first) fit before the first that does not."""
        n = 0
        for spec in specs:
            if not self._fits(spec):
                break
            n += 1
        return n

    def _densenet(self, b: bool, theta: float, k: int, n: int, p: float = 0.0) -> DenseNetSpec:
        head = dict(num_classes=self.info.num_classes, in_channels=self.info.channels)
        return DenseNetSpec((6 if b else 3) * n + 4, k, b, theta, p, **head)

    def _wrn(self, block: tuple[int, ...], k: int, n: int, p: float = 0.0) -> WRNSpec:
        return WRNSpec(6 * n + 4, k, block, p, num_classes=self.info.num_classes,
                       in_channels=self.info.channels)  # fmt: skip

    def _dropout(self, p: float) -> float:
        """Dropout costs memory (its masks), nothing else: without a memory budget the ranges
        are the same for every rate, so they are computed once."""
        return float(p) if self.batch is not None else 0.0

    @functools.cache  # noqa: B019 - one instance per worker, a few hundred entries
    def _depths(self, fam: str, b: bool, theta: float, k: int, p: float) -> tuple[int, ...]:
        ns = sorted(self.spaces[fam].layers_per_block)
        return tuple(ns[: self._prefix(self._densenet(b, theta, k, n, p) for n in ns)])

    @functools.cache  # noqa: B019
    def _growths(self, fam: str, b: bool, theta: float, p: float = 0.0) -> tuple[int, ...]:
        ks = self.spaces[fam].growth_rates
        return tuple(k for k in ks if self._depths(fam, b, theta, k, p))

    @functools.cache  # noqa: B019
    def _wrn_depths(self, block: tuple[int, ...], k: int, p: float) -> tuple[int, ...]:
        ns = sorted(self.spaces["wrn"].blocks_per_group)
        return tuple(ns[: self._prefix(self._wrn(block, k, n, p) for n in ns)])

    @functools.cache  # noqa: B019
    def _widens(self, block: tuple[int, ...], p: float = 0.0) -> tuple[int, ...]:
        return tuple(k for k in self.spaces["wrn"].widen if self._wrn_depths(block, k, p))

    # ---- drawing

    def suggest(self, trial: optuna.Trial) -> Spec:
        """One candidate; within budget unless the earlier choices leave nothing feasible."""
        family = _choose(trial, "family", self.families)
        choices = self.choices[family]
        if family.startswith("densenet"):
            s: DenseNetSpace = self.spaces[family]
            b = _choose(trial, "densenet_bottleneck", choices["bottleneck"])
            theta = _choose(trial, "densenet_compression", choices["compression"])
            dropout = float(_choose(trial, "densenet_dropout", s.dropout))
            p = self._dropout(dropout)
            growths = self._growths(family, b, theta, p) or s.growth_rates[:1]
            k = _pick(trial, "densenet_growth", growths)
            n = _pick(trial, "densenet_depth", self._depths(family, b, theta, k, p) or (1,))
            return self._densenet(b, theta, k, n, dropout)
        s: WRNSpace = self.spaces["wrn"]
        block = WRN_BLOCK_TYPES[
            _choose(trial, "wrn_block", [_BLOCK_NAMES[b] for b in choices["block"]])
        ]
        dropout = float(_choose(trial, "wrn_dropout", s.dropout))
        p = self._dropout(dropout)
        k = _pick(trial, "wrn_widen", self._widens(block, p) or s.widen[:1])
        n = _pick(trial, "wrn_depth", self._wrn_depths(block, k, p) or (1,))
        return self._wrn(block, k, n, dropout)

    # ---- the initial design

    def feasible(self) -> list[Spec]:
        """Every architecture within budget (dropout 0), from the cached ranges."""
        return self._within(lambda fam: (0.0,))

    def candidates(self) -> list[Spec]:
        """Every candidate within budget: each architecture with each dropout rate its family's
        space tries."""
        return self._within(lambda fam: self.spaces[fam].dropout)

    def _within(self, rates: Callable[[str], Iterable[float]]) -> list[Spec]:
        specs: list[Spec] = []
        for fam in self.families:
            for rate in map(float, rates(fam)):
                p = self._dropout(rate)
                if fam.startswith("densenet"):
                    c = self.choices[fam]
                    for b in c["bottleneck"]:
                        for theta in c["compression"]:
                            for k in self._growths(fam, b, theta, p):
                                specs += [self._densenet(b, theta, k, n, rate)
                                          for n in self._depths(fam, b, theta, k, p)]  # fmt: skip
                else:
                    for block in self.choices[fam]["block"]:
                        for k in self._widens(block, p):
                            specs += [self._wrn(block, k, n, rate)
                                      for n in self._wrn_depths(block, k, p)]  # fmt: skip
        return specs

    def spread(self, count: int) -> list[Spec]:
        """``count`` candidates at points evenly spaced on a log scale over the feasible
        parameter range, smallest first, each the quickest to train of the candidates near its
        point: a start that covers the front's whole cost axis early.

        Near: within a quarter of the spacing between points (the nearest candidate if none
        is). Quickest: the least activation memory kept by a training step (``dnas.memory``),
        which ranks the 30 architectures of benchmarks/results/fidelity.json by their measured
        CPU training time with Spearman rho 0.88, against 0.75 for FLOPs and 0.64 for
        parameters (deep, narrow DenseNets hold a worker for long at few parameters)."""
        by_size = sorted(((count_params(s, self.size), s.name, s) for s in self.feasible()),
                         key=lambda t: t[:2])  # fmt: skip
        if count <= 0 or not by_size:
            return []
        lo, hi = math.log(by_size[0][0]), math.log(by_size[-1][0])
        step = (hi - lo) / (count - 1) if count > 1 else 0.0
        picks: dict[str, Spec] = {}  # by name: a pick leaves the candidates at once
        for i in range(min(count, len(by_size))):
            target = lo + step * i
            rest = [t for t in by_size if t[1] not in picks]
            near = [t for t in rest if abs(math.log(t[0]) - target) <= step / 4]
            near = near or [min(rest, key=lambda t: abs(math.log(t[0]) - target))]
            pick = min(near, key=lambda t: (self.activations(t[2]), t[1]))
            picks[pick[1]] = pick[2]
        return sorted(picks.values(), key=lambda s: count_params(s, self.size))

    def activations(self, spec: Spec) -> int:
        """Bytes of activations a training step keeps (at the memory budget's batch, else 128):
        how long a candidate takes to train, in rank (see ``spread``)."""
        batch = self.batch or 128
        return training_memory(spec, batch, self.size, device=self.device).activations

    def params_for(self, spec: Spec) -> dict[str, object]:
        """The values under which ``suggest`` returns ``spec`` (to enqueue it as a trial): the
        choices as drawn, each fraction at the middle of the spec's slot. Parameters fixed by a
        single choice are left out, as ``suggest`` does not draw them."""
        params: dict[str, object] = {}

        def choice(name: str, options: list | tuple, value: object) -> None:
            if len(options) > 1:
                params[name] = value

        def slot(name: str, values: tuple[int, ...], value: int) -> None:
            params[name] = (values.index(value) + 0.5) / len(values)

        if isinstance(spec, DenseNetSpec):
            fam = next(f for f in self.families if f.startswith("densenet"))
            choice("family", self.families, fam)
            c, s = self.choices[fam], self.spaces[fam]
            b, theta, k, p = spec.bottleneck, spec.compression, spec.growth_rate, spec.dropout
            choice("densenet_bottleneck", c["bottleneck"], b)
            choice("densenet_compression", c["compression"], theta)
            choice("densenet_dropout", s.dropout, p)
            p = self._dropout(p)
            slot("densenet_growth", self._growths(fam, b, theta, p), k)
            slot("densenet_depth", self._depths(fam, b, theta, k, p), spec.block_layers[0])
        else:
            choice("family", self.families, "wrn")
            blocks = [_BLOCK_NAMES[b] for b in self.choices["wrn"]["block"]]
            choice("wrn_block", blocks, _BLOCK_NAMES[spec.block])
            choice("wrn_dropout", self.spaces["wrn"].dropout, spec.dropout)
            p = self._dropout(spec.dropout)
            slot("wrn_widen", self._widens(spec.block, p), spec.widen)
            slot("wrn_depth", self._wrn_depths(spec.block, spec.widen, p), spec.blocks_per_group)
        return params


def count_params(spec: Spec, size: tuple[int, int]) -> int:
    return count(spec, size).params


def _choose(trial: optuna.Trial, name: str, choices: list | tuple):  # noqa: ANN202
    """A categorical parameter, fixed (not suggested) when there is one choice."""
    choices = list(choices)
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def _pick(trial: optuna.Trial, name: str, values: tuple[int, ...]) -> int:
    """One of ``values`` (ascending) by a fraction in [0, 1) the sampler draws."""
    u = trial.suggest_float(name, 0.0, 1.0)
    return values[min(len(values) - 1, int(u * len(values)))]

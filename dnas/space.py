"""The default design spaces: ranges as data, and a pure generator over them.

DenseNet (Huang et al. 2017): three equal dense blocks of n layers, growth rate k, bottleneck
on/off, compression θ, dropout; the CIFAR stem. WRN (Zagoruyko & Komodakis 2016): N blocks per
group (depth 6N + 4), widen factor k, the nine block types of Tables 2 and 3, dropout. Dropout
changes no cost: it is searched (``dnas.proposal``) but not enumerated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dnas.budget import Budget, allows_all
from dnas.cost import Cost, count
from dnas.datasets import DatasetInfo
from dnas.errors import DnasError
from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, Spec, WRNSpec


@dataclass(frozen=True)
class DenseNetSpace:
    layers_per_block: tuple[int, ...] = tuple(range(1, 65))  # n; depth 3n+4 (6n+4 with B)
    growth_rates: tuple[int, ...] = (4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40)
    bottleneck: tuple[bool, ...] = (False, True)
    compression: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    dropout: tuple[float, ...] = (0.0, 0.2)  # the paper's 0.2 without augmentation (§4.2)

    def specs(self, num_classes: int = 10, in_channels: int = 3) -> Iterator[DenseNetSpec]:
        for b in self.bottleneck:
            for theta in self.compression:
                for k in self.growth_rates:
                    for n in self.layers_per_block:
                        depth = (6 if b else 3) * n + 4
                        yield DenseNetSpec(
                            depth, k, b, theta, num_classes=num_classes, in_channels=in_channels
                        )

    def describe(self) -> str:
        return (
            f"DenseNet: n = {_span(self.layers_per_block)} layers per block"
            " (L = 3n+4, 6n+4 with B), "
            f"k in {{{', '.join(map(str, self.growth_rates))}}}, bottleneck on/off, "
            f"θ in {{{', '.join(f'{t:g}' for t in self.compression)}}},"
            f" dropout in {{{', '.join(f'{p:g}' for p in self.dropout)}}}, CIFAR stem"
        )


@dataclass(frozen=True)
class WRNSpace:
    blocks_per_group: tuple[int, ...] = tuple(range(1, 25))  # N; depth 6N+4
    widen: tuple[int, ...] = tuple(range(1, 21))
    block_types: tuple[tuple[int, ...], ...] = tuple(WRN_BLOCK_TYPES.values())
    dropout: tuple[float, ...] = (0.0, 0.3)  # the paper's 0.3 between convolutions (§2.4)

    def specs(self, num_classes: int = 10, in_channels: int = 3) -> Iterator[WRNSpec]:
        for block in self.block_types:
            for k in self.widen:
                for n in self.blocks_per_group:
                    yield WRNSpec(
                        6 * n + 4, k, block, num_classes=num_classes, in_channels=in_channels
                    )

    def describe(self) -> str:
        types = ", ".join(f"B({','.join(map(str, b))})" for b in self.block_types)
        return (
            f"WRN: N = {_span(self.blocks_per_group)} blocks per group (depth 6N+4),"
            f" k = {_span(self.widen)}, {types},"
            f" dropout in {{{', '.join(f'{p:g}' for p in self.dropout)}}}"
        )


def _span(values: tuple[int, ...]) -> str:
    return f"{min(values)}..{max(values)}"


SPACES = {
    "densenet": DenseNetSpace(),
    "densenet-bc": DenseNetSpace(
        bottleneck=(True,), compression=(0.5,)
    ),  # the paper's best variant
    "wrn": WRNSpace(),
}
ALL = ("densenet", "wrn")  # "all": the union (densenet-bc is inside densenet)


@dataclass(frozen=True)
class Candidate:
    spec: Spec
    cost: Cost


def candidates(family: str, dataset: DatasetInfo) -> Iterator[Candidate]:
    """Every spec of the family ('densenet', 'wrn' or 'all') with its exact cost on the dataset."""
    if family != "all" and family not in SPACES:
        raise DnasError(f"unknown space {family!r}; choose all, {', '.join(SPACES)}")
    families = ALL if family == "all" else [family]
    size = (dataset.height, dataset.width)
    for fam in families:
        for spec in SPACES[fam].specs(dataset.num_classes, dataset.channels):
            yield Candidate(spec, count(spec, size))


def within(budgets: tuple[Budget, ...], cands: list[Candidate]) -> list[Candidate]:
    return [c for c in cands if allows_all(budgets, c.cost)]


@dataclass
class SpaceResult:
    family: str
    dataset: str
    budgets: tuple[Budget, ...]
    total: int
    rows: list[dict]  # the candidates that meet every budget, sorted
    seconds: float  # enumeration + exact counting time

    def write_csv(self, path: str | Path) -> None:
        """Every matching row, one line each, to ``path`` (a DnasError if it cannot be written)."""
        import csv

        try:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
        except OSError as e:
            raise DnasError(f"--csv {path}: cannot write it ({e.strerror or e})") from None

    @property
    def dropout(self) -> dict[str, tuple[float, ...]]:
        """The dropout rates ``dnas search`` tries with each architecture, per family."""
        families = ALL if self.family == "all" else (self.family,)
        return {f: SPACES[f].dropout for f in families}

    @property
    def budget_text(self) -> str:
        return " and ".join(map(str, self.budgets)) or "no budget"

    def summary(self) -> dict:
        return {
            "family": self.family,
            "dataset": self.dataset,
            "budgets": [str(b) for b in self.budgets],
            "total": self.total,
            "matching": len(self.rows),
            "seconds": self.seconds,
            "dropout_searched": self.dropout,
            "flops_convention": "fvcore: 1 multiply-add = 1 flop, batch 1",
        }


def row(c: Candidate) -> dict:
    return {
        "name": c.spec.name,
        "family": c.spec.family,
        "depth": c.spec.depth,
        "params": c.cost.params,
        "flops": c.cost.flops,
        "macs": c.cost.macs,
    }


def search_space(
    family: str,
    dataset: str,
    budget_texts: tuple[str, ...] = (),
    sort: str = "params",
    reverse: bool = False,
) -> SpaceResult:
    """Enumerate a family's default space on a dataset and keep what meets every budget.

    Raises:
        DnasError: for a malformed budget, or one that no candidate meets (saying what the
        smallest candidate costs).
    """
    import time

    from dnas.budget import human, parse_budgets
    from dnas.datasets import dataset_info

    budgets = parse_budgets(budget_texts)
    info = dataset_info(dataset)
    t0 = time.perf_counter()
    cands = list(candidates(family, info))
    seconds = time.perf_counter() - t0
    kept = within(budgets, cands)
    if not kept:
        smallest = {m: min(getattr(c.cost, m) for c in cands) for m in ("params", "flops")}
        raise DnasError(
            f"no {family} candidate on {dataset} meets {' and '.join(map(str, budgets))}:"
            " the smallest costs"
            f" {human(smallest['params'])} params ({smallest['params']:,}) and"
            f" {human(smallest['flops'])} flops ({smallest['flops']:,})"
        )
    rows = [row(c) for c in kept]
    rows.sort(key=lambda r: (r[sort], r["name"]), reverse=reverse)
    return SpaceResult(family, dataset, budgets, len(cands), rows, seconds)

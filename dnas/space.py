"""The default design spaces: ranges as data, and a pure generator over them.

DenseNet (Huang et al. 2017): three equal dense blocks of n layers, growth rate k, bottleneck
on/off, compression θ, dropout; the CIFAR stem. WRN (Zagoruyko & Komodakis 2016): N blocks per
group (depth 6N + 4), widen factor k, the nine block types of Tables 2 and 3, dropout. Dropout
changes no cost: it is searched (``dnas.proposal``) but not enumerated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from dnas.budget import Budget, allows_all, needs_memory
from dnas.cost import Cost, count
from dnas.datasets import DatasetInfo
from dnas.errors import (
    DnasError,
    check_replaceable,
    is_stdout,
    write_atomic,
    write_stdout,
    writing,
)
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


def _shape_key(spec: Spec) -> tuple:
    """Everything but the depth: candidates with the same key differ only in depth."""
    if isinstance(spec, DenseNetSpec):
        return ("densenet", spec.growth_rate, spec.bottleneck, spec.compression)
    return ("wrn", spec.widen, spec.block)


def _shallowest(cands: list[Candidate]) -> list[Candidate]:
    first: dict[tuple, Candidate] = {}
    for c in cands:
        key = _shape_key(c.spec)
        if key not in first or c.spec.depth < first[key].spec.depth:
            first[key] = c
    return list(first.values())


def with_memory(
    cands: list[Candidate],
    batch_size: int,
    dataset: DatasetInfo,
    device: str = "cpu",
    limit: int | None = None,
) -> list[Candidate]:
    """The candidates with their predicted training memory at ``batch_size`` (``dnas.memory``).

    With a ``limit`` (bytes), only those within it: memory grows with depth, so once one
    candidate is over, the deeper ones of the same shape are skipped without a prediction.
    """
    size = (dataset.height, dataset.width)
    over: dict[tuple, int] = {}  # shape -> the shallowest depth found over the limit
    kept = []
    for c in sorted(cands, key=lambda c: (_shape_key(c.spec), c.spec.depth)):
        key = _shape_key(c.spec)
        if key in over:
            continue
        memory = count(c.spec, size, batch_size, device).memory
        if limit is not None and memory > limit:
            over[key] = c.spec.depth
            continue
        kept.append(Candidate(c.spec, replace(c.cost, memory=memory)))
    return kept


@dataclass
class SpaceResult:
    family: str
    dataset: str
    budgets: tuple[Budget, ...]
    total: int
    rows: list[dict]  # the candidates that meet every budget, sorted
    seconds: float  # enumeration + exact counting time
    batch_size: int | None = None  # what the memory column is predicted at (None: no column)
    device: str = "cpu"

    def write_csv(self, path: str | Path) -> None:
        """Every matching row, one line each, to ``path`` (a DnasError if it cannot be written)."""
        import csv
        import io
        import stat

        path = Path(path)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)
        data = text.getvalue().encode("utf-8")
        if is_stdout(path):
            with writing(path, "--csv"):
                write_stdout(data)
            return
        ours = lambda head: head.startswith(CSV_HEAD.encode())  # noqa: E731
        check_replaceable(path, "--csv", ours, streams=True)
        try:  # a pipe, device or link (/dev/stdout) is written in place, through the link
            stream = not stat.S_ISREG(path.lstat().st_mode)
        except FileNotFoundError:
            stream = False
        if not stream:  # a full disk leaves the old file, never a part of the new one
            write_atomic(path, data, "--csv")
            return
        try:
            with open(path, "wb") as f:
                f.write(data)
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
            **(
                {}
                if self.batch_size is None
                else {
                    "memory": f"predicted peak bytes of an fp32 SGD training step, batch"
                    f" {self.batch_size}, {self.device} (dnas.memory)"
                }
            ),
        }


CSV_HEAD = "name,family,depth,"  # how a --csv file starts: ``row``'s first keys


def row(c: Candidate) -> dict:
    r = {
        "name": c.spec.name,
        "family": c.spec.family,
        "depth": c.spec.depth,
        "params": c.cost.params,
        "flops": c.cost.flops,
        "macs": c.cost.macs,
    }
    if c.cost.memory is not None:
        r["memory"] = c.cost.memory
    return r


def search_space(
    family: str,
    dataset: str,
    budget_texts: tuple[str, ...] = (),
    sort: str = "params",
    reverse: bool = False,
    batch_size: int | None = None,
    device: str = "cpu",
    info: DatasetInfo | None = None,
) -> SpaceResult:
    """Enumerate a family's default space on a dataset and keep what meets every budget.

    With a ``batch_size`` (or a memory budget, which is then predicted at the search's default
    batch), every row also has its predicted training memory on ``device``. ``info`` describes a
    dataset that is not a named one (an image folder, once read).

    Raises:
        DnasError: for a malformed budget, or one that no candidate meets (saying what the
        smallest candidate costs).
    """
    import time

    from dnas.budget import bytes_text, human, parse_budgets
    from dnas.datasets import dataset_info

    budgets = parse_budgets(budget_texts)
    info = info or dataset_info(dataset)
    if batch_size is None and needs_memory(budgets):
        from dnas.recipes import fast_recipe

        batch_size = fast_recipe().batch_size
    if sort == "memory" and batch_size is None:
        raise DnasError("--sort memory needs a memory column: give --batch-size")
    t0 = time.perf_counter()
    cands = list(candidates(family, info))
    kept = within(tuple(b for b in budgets if b.metric != "memory"), cands)
    if batch_size is not None:
        limit = min((b.limit for b in budgets if b.metric == "memory"), default=None)
        kept = with_memory(kept, batch_size, info, device, limit)
    seconds = time.perf_counter() - t0
    if not kept:
        smallest = {m: min(getattr(c.cost, m) for c in cands) for m in ("params", "flops")}
        memory = ""
        if batch_size is not None:  # memory grows with depth: the shallowest of each shape
            least = min(with_memory(_shallowest(cands), batch_size, info, device),
                        key=lambda c: c.cost.memory)  # fmt: skip
            memory = f" and {bytes_text(least.cost.memory)} of training memory at batch" \
                     f" {batch_size} ({least.spec.name})"  # fmt: skip
        which = "" if family == "all" else f"{family} "
        raise DnasError(
            f"no {which}candidate on {dataset} meets {' and '.join(map(str, budgets))}:"
            " the smallest costs"
            f" {human(smallest['params'])} params ({smallest['params']:,}),"
            f" {human(smallest['flops'])} flops ({smallest['flops']:,}){memory}"
        )
    rows = [row(c) for c in kept]
    rows.sort(key=lambda r: (r[sort], r["name"]), reverse=reverse)
    return SpaceResult(family, dataset, budgets, len(cands), rows, seconds, batch_size, device)

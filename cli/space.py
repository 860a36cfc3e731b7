"""`dnas space`: the design spaces with exact costs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dnas.datasets import DatasetName
from dnas.errors import is_stdout
from dnas.proxies import Proxy
from dnas.space import SPACES

from .common import a_path, out, print_json, user_errors


class Family(str, Enum):
    densenet = "densenet"
    densenet_bc = "densenet-bc"
    wrn = "wrn"
    all = "all"


class SortKey(str, Enum):
    params = "params"
    flops = "flops"
    memory = "memory"
    name = "name"


class MemoryDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


SPACE_HELP = (
    "List every architecture of the default design spaces with exact parameters and FLOPs "
    "(fvcore convention: 1 multiply-add = 1 flop), and how many meet the budgets.\n\n"
    + "\n\n".join(s.describe() for name, s in SPACES.items() if name != "densenet-bc")
    + "\n\ndensenet-bc: the DenseNet space with bottleneck and θ = 0.5 only."
)


def space(
    family: Annotated[Family, typer.Argument(help="Which design space.")] = Family.all,
    budget: Annotated[
        Optional[list[str]],
        typer.Option(
            "--budget",
            "-b",
            help="e.g. 1M-params, 300M-flops, 2G-memory (predicted training memory at"
            " --batch-size, G = GiB); repeat: all must hold.",
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Add a column: the predicted peak memory of an fp32 training step at this batch"
            " (a memory budget alone predicts it at the search's default batch, 128).",
        ),
    ] = None,
    device: Annotated[
        MemoryDevice,
        typer.Option(help="Whose kernels the memory prediction follows."),
    ] = MemoryDevice.cpu,
    dataset: Annotated[
        DatasetName, typer.Option(help="Sets classes, channels and input size.")
    ] = DatasetName.cifar10,  # type: ignore[attr-defined]
    sort: Annotated[SortKey, typer.Option(help="Sort the table by this column.")] = SortKey.params,
    reverse: Annotated[bool, typer.Option("--reverse", help="Largest first.")] = False,
    limit: Annotated[int, typer.Option(min=0, help="Rows to print (0 = all).")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
    csv_path: Annotated[
        Optional[Path],
        typer.Option(
            "--csv",
            help="Also write every matching row to this CSV file (/dev/stdout: the CSV alone).",
            parser=a_path,
        ),
    ] = None,
    proxy: Annotated[
        Optional[Proxy],
        typer.Option(
            help="Add a zero-cost proxy's score at initialisation as a column, for the rows"
            " shown (--limit); see the README for how well each ranks trained accuracy."
        ),
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Where --proxy finds the dataset's images \\[default: dnas's cache].",
            parser=a_path,
        ),
    ] = None,
) -> None:
    from dnas.space import search_space

    with user_errors():
        result = search_space(
            family.value, dataset.value, tuple(budget or ()), sort.value, reverse,
            batch_size, device.value,
        )  # fmt: skip
        rows = result.rows[:limit] if limit else result.rows
        if proxy is not None:
            from dnas.proxies import add_scores

            seconds = add_scores(rows, proxy, dataset.value, data_dir)
        if csv_path:
            result.write_csv(csv_path)
            if is_stdout(csv_path):  # the CSV is this command's output: nothing to mix into it
                return
        if as_json:
            print_json({**result.summary(), "rows": rows})
            return
        out.print(
            f"{result.total:,} candidates in {family.value} on {dataset.value}; "
            f"{len(result.rows):,} meet {result.budget_text}"
            f" (counted in {result.seconds * 1e3:.0f} ms)"
        )
        columns = ["name", "family", "depth", "params", "FLOPs (fvcore)", "MACs (conv+linear)"]
        if result.batch_size is not None:
            columns.append(f"train memory, batch {result.batch_size} ({result.device})")
        if proxy is not None:
            columns.append(f"{proxy.value} (at init)")
        table = Table(*columns)
        for r in rows:
            cells = [r["name"], r["family"], str(r["depth"]), f"{r['params']:,}",
                     f"{r['flops']:,}", f"{r['macs']:,}"]  # fmt: skip
            if "memory" in r:
                cells.append(f"{r['memory'] / 2**20:,.1f} MiB")
            if proxy is not None:
                cells.append(f"{r[proxy.value]:.4g}")
            table.add_row(*cells)
        out.print(table)
        if limit and len(result.rows) > limit:
            out.print(
                f"... {len(result.rows) - limit:,} more"
                " (--limit 0 shows all, --csv FILE writes all)"
            )
        drops = "; ".join(f"{f}: {', '.join(f'{p:g}' for p in d)}"
                          for f, d in result.dropout.items())  # fmt: skip
        out.print(f"searched with each architecture, at no cost: dropout ({drops})")
        if proxy is not None:
            out.print(f"{proxy.value}: {len(rows)} rows scored in {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command(help=SPACE_HELP)(space)

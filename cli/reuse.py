"""`dnas reuse RUN`: feature-reuse heatmaps (DenseNet) or residual ratios (WRN) of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import a_folder, a_path, err, out, print_json, user_errors


def reuse(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run directory (with checkpoint.pt) or a checkpoint file.", parser=a_path
        ),
    ],
    out_file: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="HTML file to write \\[default: RUN/reuse.html].", parser=a_path
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the matrices as JSON on stdout.")
    ] = False,
    dataset: Annotated[
        Optional[str],
        typer.Option(help="WRN: dataset of the validation batch \\[default: the run's]."),
    ] = None,
    data_dir: Annotated[
        Optional[str], typer.Option(help="WRN: dataset cache directory.", parser=a_folder)
    ] = None,
    images: Annotated[
        int, typer.Option(min=1, help="WRN: validation images to measure on.")
    ] = 256,
) -> None:
    """Feature reuse: DenseNet Figure-5 heatmaps from the weights; WRN residual/shortcut ratios."""
    with user_errors():
        from dnas.report import write_reuse_page
        from dnas.reuse import reuse_from_checkpoint

        with err.status(f"measuring feature reuse of {run}..."):
            result = reuse_from_checkpoint(run, dataset, data_dir, images)
        target = out_file or (run if run.is_dir() else run.parent) / "reuse.html"
        page = write_reuse_page(result, target)
        if as_json:
            print_json(result.to_dict())
        else:
            out.print(f"feature reuse of {result.name}: {page}", highlight=False, soft_wrap=True)
        err.print(f"wrote {page}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(reuse)

"""`dnas report STUDY`: the study as one HTML page that opens offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import a_path, err, out, user_errors


def report(
    study: Annotated[str, typer.Argument(help="The study's name, as `dnas search` printed it.")],
    storage: Annotated[
        Optional[str],
        typer.Option(help="Optuna storage URL \\[default: sqlite:///studies/STUDY.db]."),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="Directory for index.html \\[default: reports/STUDY/].", parser=a_path
        ),
    ] = None,
    reuse_top: Annotated[
        int,
        typer.Option(
            min=0, help="Feature-reuse heatmaps for this many of the front's best DenseNets."
        ),
    ] = 2,
) -> None:
    """Write a study's Pareto front, learning curves, importances and feature reuse as HTML."""
    with user_errors():
        from dnas.report import write_report
        from dnas.study import load_study, storage_base

        left_out: list[str] = []
        with err.status(f"writing the report of {study}..."):
            page = write_report(
                load_study(study, storage),
                out_dir or Path("reports") / study,
                reuse_top=reuse_top,
                base=storage_base(storage),
                warn=left_out.append,
            )
        for line in left_out:
            err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
        out.print(
            f"report: {page}  (open it in a browser: {page.resolve().as_uri()})",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command()(report)

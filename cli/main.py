"""`dnas`: the Typer app. Each command lives in its own module and calls one library function."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import signal
from typing import Annotated, Optional

import typer

from dnas import __version__
from dnas.errors import stop_on_sigterm

app = typer.Typer(
    name="dnas",
    help="Search and understand DenseNet and Wide-ResNet architectures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dnas {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Search and understand DenseNet and Wide-ResNet architectures."""
    # `kill -USR1 PID` prints every thread's stack to stderr (a stderr that is a real file)
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    with contextlib.suppress(ValueError):  # not the main thread (an embedding application)
        stop_on_sigterm()  # `kill PID` stops as Ctrl-C does: work kept, workers stopped too


def _register() -> None:
    from . import profile, report, reuse, search, space, train

    for module in (profile, space, search, train, report, reuse):
        module.register(app)


_register()


if __name__ == "__main__":
    app()

"""`dnas`: the Typer app. Each command lives in its own module and calls one library function."""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import io
import os
import signal
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from dnas import __version__
from dnas.errors import stop_on_sigterm

# click's ClickException (a bad option value, a missing argument, an unknown command): newer Typer
# releases vendor click, older ones import it; BadParameter derives from it in both
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(TyperGroup):
    """Usage errors in one line on stderr, as dnas's own errors are, not Typer's boxed panel."""

    def make_context(self, *args, **kwargs):  # the group's own options: `dnas --nope`
        with _one_line([]):
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # the command's name, options and arguments: `dnas train --epochs 0`
        given = getattr(ctx, "_protected_args", None)  # click 8.2 (Typer's own copy); 8.1:
        given = [*(ctx.protected_args if given is None else given), *ctx.args]  # read before
        with _one_line(given):  # the group hands them over to the command
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line(given: list[str]):
    try:
        yield
    except _CLICK_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `dnas` alone prints the help
            raise
        _say_the_value(e, given)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"Error: {e.format_message().rstrip('.')}{hint}", err=True)
        raise typer.Exit(e.exit_code) from None


def _say_the_value(e: Exception, given: list[str]) -> None:
    """Name the refused value in an option's error: Typer's own checks (pydantic's wording) say
    "Input should be greater than or equal to 1", not of what."""
    opts, message = getattr(getattr(e, "param", None), "opts", None), getattr(e, "message", None)
    if not opts or not isinstance(message, str):
        return
    values = [
        b if a in opts else a.split("=", 1)[1]
        for a, b in zip(given, [*given[1:], None])
        if (a in opts and b is not None) or a.split("=", 1)[0] in opts and "=" in a
    ]
    message = message.removeprefix("Value error, ")  # "Value error, 'x' is not one of ..."
    if values and message.startswith("Input should"):  # the last one given is the one used
        message = f"{message[:1].lower()}{message[1:].rstrip('.')}, not {values[-1]!r}"
    e.message = message


app = typer.Typer(
    name="dnas",
    cls=_OneLineErrors,
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


def run() -> None:
    """The `dnas` command: the app, with a failure of its own output (a full disk under
    `> FILE`, a closed descriptor) as one line and exit code 1 (or the command's own failing
    code), not a traceback. (Click already ends quietly with 1 on a closed pipe, as under
    `| head`.) An OSError naming a file is not the output's: shown in full."""
    code: int | str | None = 0
    try:
        try:
            app()
        except SystemExit as e:
            code = e.code
        sys.stdout.flush()  # what is still buffered, before the exit: a failure then is said
    except OSError as e:
        if e.filename is not None or e.errno not in _OUTPUT_ERRORS:
            raise
        with contextlib.suppress(OSError):  # nothing more reaches the broken output
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        with contextlib.suppress(OSError):
            print(f"Error: cannot write the output: {e.strerror}", file=sys.stderr, flush=True)
        raise SystemExit(code or 1) from None
    raise SystemExit(code)


_OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EBADF, errno.EPIPE, errno.EFBIG}


if __name__ == "__main__":
    run()

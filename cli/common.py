"""What every command shares: error handling, consoles, option types."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from dnas.errors import DnasError, Terminated, check_stop

for _name in ("stdout", "stderr"):  # closed by the caller (`>&-`): written nowhere, as by print
    if getattr(sys, _name) is None:
        setattr(sys, _name, open(os.devnull, "w"))  # noqa: SIM115 - open for the process's life
# Wide enough that names and exact counts are never cut when stdout is a pipe or a file.
out = Console(width=None if sys.stdout.isatty() else 160)  # results
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # progress and logs


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user error into one line on stderr and exit code 2; let our own bugs show."""
    try:
        yield
        check_stop()  # a Ctrl-C or SIGTERM that Python dropped on the way: not a success
    except DnasError as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(getattr(e, "exit_code", 2)) from None
    except OSError as e:  # a path the system refuses before any of ours could look at it
        if e.errno != errno.ENAMETOOLONG:
            raise
        path = str(e.filename or "")
        name = max(Path(path).parts or ("",), key=lambda part: len(part.encode()))
        shown = f"{name[:40]!r}..." if len(name) > 40 else repr(name)
        if len(name.encode()) > 255:
            what = f"a file or folder name too long for this system ({len(name):,} characters,"
            what += f" {shown}): at most 255 bytes each"
        else:  # every name fits, the whole path does not (PATH_MAX)
            what = f"a path too long for this system ({len(path.encode()):,} bytes)"
        typer.echo(f"Error: {what}; give a shorter one", err=True)
        raise typer.Exit(2) from None
    except Terminated:
        typer.echo("Terminated.", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # a study database that fails while read (damaged inside, say)
        from dnas.study import storage_failure

        if (why := storage_failure(e)) is None:
            raise
        typer.echo(
            f"Error: the study's database failed: {why}; if it is damaged (malformed), restore"
            " it from a copy or start afresh under another --study",
            err=True,
        )
        raise typer.Exit(2) from None


def a_path(value: str | Path) -> Path:
    """Typer's parser for a path option: an empty one would silently mean the current folder."""
    if isinstance(value, Path):  # a default
        return value
    if not value.strip():
        raise typer.BadParameter("an empty path; give a file or folder name")
    return Path(value)


def a_folder(value: str) -> str:
    """``a_path`` for options that the library takes as text (folder names in SearchConfig)."""
    return str(a_path(value))


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

"""User errors: one line that says what was wrong and what would be right.

The command line prints these without a traceback and exits non-zero; anything else is our bug.
A folder or file the machine refuses (read-only, full, not a folder) is a user error too: its
message names the option that chose the path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class DnasError(ValueError):
    """Bad input from a user: a wrong name, a bad budget, a missing dataset, a corrupt file."""

    exit_code = 2  # what the command line exits with


def check_writable(path: str | Path, what: str) -> None:
    """Refuse, before anything is written, a folder ``path`` that cannot be made or written in:
    its nearest existing ancestor must be a folder this process may write in, and one where the
    kernel lets it create a file (not /proc, a read-only mount): an anonymous one, gone when
    closed, so that nothing is left."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        kind = "a file" if existing.is_file() else "a device or other special file"
        raise DnasError(f"{what} {path}: {existing} is {kind}, not a folder; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DnasError(f"{what} {path}: {existing} is not writable; give a folder you can write")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        why = e.strerror or str(e)
        raise DnasError(f"{what} {path}: cannot write in {existing} ({why}); give another folder")


@contextlib.contextmanager
def writing(path: str | Path, what: str, hint: str = "") -> Iterator[None]:
    """Turn an OSError (read-only, no space, not a folder) while writing ``path`` into one line."""
    try:
        yield
    except OSError as e:
        why = e.strerror or str(e)
        raise DnasError(f"{what} {path}: cannot write it ({why}){hint}") from None


def read_small_file(path: Path, what: str, limit: int, expected: str) -> bytes:
    """A short input file's bytes, read only from a plain file and only up to ``limit`` (a FIFO
    would wait for ever, /dev/zero never ends); each refusal is one line, ``expected`` saying
    what the file should be ("a study file (a short TOML, see studies/*.toml)")."""
    try:
        if Path(path).is_dir():
            raise DnasError(f"{what} {path}: a directory, not {expected}")
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DnasError(f"{what} {path}: not a plain file (a pipe or device); give {expected}")
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise DnasError(f"{what} {path}: no such file; give {expected}") from None
    except OSError as e:
        raise DnasError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    if len(raw) > limit:
        raise DnasError(f"{what} {path}: longer than {limit // 1024} KiB; give {expected}")
    return raw


def check_replaceable(
    path: Path, what: str, ours: Callable[[bytes], bool], streams: bool = False
) -> None:
    """Refuse to write over ``path`` unless it is missing, empty or a file that dnas wrote:
    ``ours`` tells from its first 4 KiB. A user's file named by mistake (``--out README.md``)
    stays. With ``streams`` (a file written in place, not renamed over), a pipe or a device such
    as /dev/stdout is a fine target too."""
    try:
        mode = path.lstat().st_mode
        if streams and stat.S_ISLNK(mode):  # /dev/stdout: a link to this process's pipe or tty
            with contextlib.suppress(OSError):
                mode = path.stat().st_mode
        if streams and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            return
        if not stat.S_ISREG(mode):
            raise DnasError(f"{what} {path}: a folder, link or device; give a file name")
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        return
    except OSError as e:
        raise DnasError(f"{what} {path}: cannot read it ({e.strerror or e}); give another file")
    if head and not ours(head):
        raise DnasError(
            f"{what} {path}: the file exists and dnas did not write it; give a new file name, or"
            " move the file away"
        )


def write_stdout(data: bytes) -> None:
    """``data`` to file descriptor 1 after what Python's sys.stdout holds (a notebook's
    sys.stdout has no descriptor of its own, the process's does)."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def is_stdout(path: Path) -> bool:
    """Whether ``path`` names the very file, pipe or terminal this process's standard output goes
    to (``--csv /dev/stdout``): written there through the open descriptor, at its place and in
    its mode (appending after ``>>``), where opening the name again would start the file over."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(1))
    except (OSError, ValueError):
        return False


# A temporary file of ``write_atomic`` untouched this long was left by a process killed while
# writing it (the largest write, a checkpoint, takes seconds), not one still being written, by
# this machine or another sharing the folder: the next write of the same file removes it.
STALE_WRITE_S = 600.0


def write_atomic(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a reader, or a process
    killed mid-write, sees the old file or the new one, never a part; what an earlier process
    killed mid-write left goes with the next write (``STALE_WRITE_S``). A write the machine
    refuses (a full disk) is one line, and the old file stays."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: workers share pages
    # A rename would replace a device or link, not write it: as root, /dev/null or /dev/stdout
    # (a link to /proc/self/fd/1) for the whole machine.
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(path.lstat().st_mode):
            raise DnasError(
                f"{what} {path}: not a plain file (a folder, link or device); give a file"
            )
    with writing(path, what):
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    for left in partial_writes(path, older_than=STALE_WRITE_S):
        with contextlib.suppress(OSError):  # another writer may be removing it too
            left.unlink()


def partial_writes(path: Path, older_than: float = 0.0) -> list[Path]:
    """What ``write_atomic`` calls on ``path`` killed mid-write left behind (untouched for
    ``older_than`` seconds)."""
    now, found = time.time(), []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):  # gone meanwhile
            if now - tmp.lstat().st_mtime >= older_than:
                found.append(tmp)
    return sorted(found)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's stop, ``timeout``): handled as Ctrl-C is, so that
    what finished is kept and worker processes stop with their parent (exit code 143)."""


_received: type[KeyboardInterrupt] | None = None  # the Ctrl-C or SIGTERM this process was sent


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises ``Terminated`` in this process's main thread, as does SIGHUP
    (a closed terminal; unless ignored, as under ``nohup``), and Ctrl-C (unless ignored, as in a
    shell's background job) ``KeyboardInterrupt``; each is remembered for ``check_stop``, and one
    that Python drops is not printed as "Exception ignored" (``check_stop`` raises it again)."""
    global _received
    _received = None
    if sys.unraisablehook is sys.__unraisablehook__:  # not one an application set
        sys.unraisablehook = _quiet_dropped_stop

    def handler(kind: type[KeyboardInterrupt]) -> Callable[[int, object], None]:
        def raise_it(signum: int, frame: object) -> None:
            global _received
            if kind is Terminated and _received is not None:  # stopping already (the parent
                return  # gone, say, seen twice): let the cleanup finish; a 2nd Ctrl-C still acts
            _received = kind
            raise kind()

        return raise_it

    signal.signal(signal.SIGTERM, handler(Terminated))
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, handler(Terminated))
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, handler(KeyboardInterrupt))


def _quiet_dropped_stop(unraisable: object) -> None:
    """``sys.unraisablehook``: say nothing of a Ctrl-C or SIGTERM that landed where Python cannot
    raise it (a weakref callback, the interpreter's shutdown): ``check_stop`` raises it again.
    Anything else goes to Python's own hook."""
    if isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt) and _received:
        return
    sys.__unraisablehook__(unraisable)  # type: ignore[arg-type]


def check_stop() -> None:
    """Raise again a Ctrl-C or SIGTERM that Python dropped. One that arrives while a weakref or
    garbage-collection callback runs (SQLAlchemy's, say) is printed as "Exception ignored" and
    lost: a search went on to its last trial and exited 0. Called at every training step, after
    every trial and when a command ends."""
    if _received is not None:
        raise _received()


def stop_with_parent(parent: int, every_s: float = 1.0) -> None:
    """From now on, SIGTERM this process once ``parent`` is gone: a worker whose parent was
    killed outright (``kill -9``, the out-of-memory killer) stops as on ``kill PID`` instead of
    training on alone. A thread checks every ``every_s`` seconds."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dnas-parent-watch", daemon=True).start()


def interruption(error: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind ``error``: itself, or the one it was raised while handling
    (library code cut short in its bookkeeping can fail in its ``finally``)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__context__
    return None

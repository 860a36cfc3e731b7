"""A search study on Optuna storage: its name, where it lives, its trial folders, and the typed
record of what each trial produced.

Optuna's user attributes are only the storage of a ``TrialRecord``: this module writes them (one
attribute per field, so optuna-dashboard and ``optuna trials`` show them as columns) and reads
them back into the record. Nothing else in dnas reads a trial's attributes by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dnas.errors import DnasError

STUDY_NAME_RULE = (
    "letters, digits, '-', '_' and '.', starting with a letter, digit or '_' (a '-' would read"
    " as an option), not ending in '.db' or '.db-journal', '-wal', '-shm' (study NAME's database"
    " and SQLite's files beside it), at most 100 characters"
)
_STUDY_NAME = re.compile(
    r"(?!.*\.db(-journal|-wal|-shm)?$)[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", re.IGNORECASE
)
SQLITE = "sqlite:///"

if TYPE_CHECKING:  # optuna is imported where it is used: `dnas --help` stays fast
    import optuna

# Trial states as dnas sees them (a refinement of Optuna's).
WAITING, RUNNING, TRAINED = "waiting", "running", "trained"
OVER_BUDGET, SKIPPED, FAILED, PRUNED = "over budget", "skipped", "failed", "pruned"
STOPPED = "stopped"  # trained to a lower rung only (multi-fidelity): not on the front
REUSED = "reused"  # the same candidate as an earlier trial: its result, told again, not retrained
LOST = "lost"  # interrupted, cut by the time limit, or its worker died mid-trial: retried

# The user-attribute keys: the storage of TrialRecord.
_STARTED = "started_training"  # set when a trial starts training (it may not have finished)
_LEGACY_STARTED = "trained"  # what studies made before 0.2 called it
_WORKER = "worker"  # the process that trains it (``worker_id``)
_AFTER_TIME_LIMIT = "after_time_limit"  # on a queued trial: the trial whose time-limit cut it is
_CONTINUES = "continues"  # on a queued trial: the interrupted or cut trial whose run it continues
_CONTINUED = "continued"  # on a trial that went on with a lost trial's run: that trial
_RESUMED_AT = "resumed_at_epoch"  # ... and the epochs that run had done


# ---- names, storage and folders -------------------------------------------------------------


def check_study_name(name: str) -> str:
    """A study name is used as a path: it must be a safe slug."""
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name):
        raise DnasError(f"bad study name {name!r}: use {STUDY_NAME_RULE}")
    return name


def default_storage(studies_dir: str | Path, name: str) -> str:
    return f"{SQLITE}{Path(studies_dir) / check_study_name(name)}.db"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL, None for any other storage."""
    return Path(url[len(SQLITE) :]) if url.startswith(SQLITE) else None


def trial_root(studies_dir: str | Path, name: str, storage_url: str) -> Path:
    """The folder that holds a study's trial folders. The default storage's study NAME keeps
    ``studies/NAME``; any other storage gets ``studies/NAME-<hash of its URL>``, so two storages
    holding a study of the same name never share (or overwrite) each other's checkpoints."""
    root = Path(studies_dir) / check_study_name(name)
    if storage_url == default_storage(studies_dir, name):
        return root
    digest = hashlib.sha256(storage_url.encode()).hexdigest()[:10]
    return root.with_name(f"{root.name}-{digest}")


def trial_dir(root: Path, number: int) -> Path:
    return root / f"trial-{number:05d}"


def check_lasting(url: str) -> None:
    """Refuse an in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``): each of its
    connections sees an empty database of its own, and all of it is gone when dnas exits."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a malformed URL: Optuna's own message says so later
        return
    memory = parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    if parsed.get_backend_name() == "sqlite" and memory:
        raise DnasError(
            f"storage {url!r} is an in-memory database: the study would be lost when dnas exits;"
            f" give a file, e.g. {SQLITE}studies/NAME.db"
        )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage with heartbeats: a killed worker's trial is failed after a 30 s grace
    period and queued again. SQLite waits for the file lock instead of failing."""
    import optuna

    check_lasting(url)
    kwargs: dict = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=10,
            grace_period=30,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=2
            ),
            **kwargs,
        )
    if url.startswith("sqlite"):
        _immediate_transactions(storage.engine)
    return storage


def _immediate_transactions(engine) -> None:  # noqa: ANN001 - a sqlalchemy Engine
    """Make every SQLite transaction take the write lock when it begins. pysqlite reads outside
    any transaction and SQLite ignores Optuna's SELECT ... FOR UPDATE, so two workers asking at
    once could both see trial 0 waiting and both run it (seen on a loaded 2-core machine: one
    then failed with "Cannot tell a COMPLETE trial"). SQLAlchemy's recipe for pysqlite, with
    BEGIN IMMEDIATE: a read-then-write is atomic, and the others wait (the 120 s timeout)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.isolation_level = None  # pysqlite issues no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # noqa: ANN001
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks go


def cannot_open(url: str, why: str) -> DnasError:
    """The one-line error for a storage that would not open, with what would help: the
    database driver to install, or how a URL is written."""
    why = why.splitlines()[0] if why.strip() else "no reason given"
    if "import DB access module" in why or "No module named" in why:
        scheme = url.partition(":")[0]
        how = "pip install 'dnas[postgres]'" if scheme.startswith("postgres") else "with pip"
        why = f"no Python driver for {scheme} is installed; install one ({how})"
    elif "parse SQLAlchemy URL" in why or "Can't load plugin" in why:
        why += "; write e.g. sqlite:///studies/NAME.db or postgresql://user:password@host/db"
    return DnasError(f"cannot open storage {url!r}: {why}")


def storage_failure(error: BaseException | None) -> str | None:
    """The database's own reason (a full disk, a read-only file) behind whatever Optuna raised
    while handling a failed write (once, an ``AssertionError: Should not reach``); None when the
    storage is not to blame."""
    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    seen: set[int] = set()
    found = None
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sqlalchemy.exc.DBAPIError):
            return str(error.orig if error.orig is not None else error).splitlines()[0]
        if isinstance(error, StorageInternalError):
            found = found or str(error).splitlines()[0]
        error = error.__cause__ or error.__context__
    return found


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """Open an existing study (default storage: ``sqlite:///studies/NAME.db``), or a DnasError."""
    import optuna

    check_study_name(name)
    url = storage or default_storage("studies", name)
    check_lasting(url)
    path = sqlite_path(url)
    if path is not None and path.is_dir():
        raise DnasError(f"{path} is a folder, not a study database; give --storage URL")
    if path is not None and not path.is_file():
        raise DnasError(f"no study database at {path}; give --storage URL for study {name!r}")
    if path is not None:  # Optuna would turn any other file into a new, empty database
        check_database(path)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(url)) or "none"
        raise DnasError(f"no study {name!r} in {url}; studies there: {names}") from None
    except Exception as e:  # a bad URL, an unreachable server, a file that is not a database
        raise cannot_open(url, str(e)) from None


def check_database(path: Path) -> None:
    """Refuse to open ``path`` for reading unless it is a SQLite database: an empty file or
    another program's would be written over with an empty study database."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise DnasError(f"{path}: cannot read it ({e.strerror or e})") from None
    if head != b"SQLite format 3\x00":
        what = "an empty file" if not head else "not a SQLite database"
        raise DnasError(f"{path}: {what}, not a study database; give the study's database")
    check_intact(path)


def check_intact(path: Path, wait_s: float = 5.0) -> None:
    """Refuse a SQLite database that SQLite's ``quick_check`` finds damaged, reading it only:
    Optuna would write a new study's rows into it before failing (tenths of a second per
    hundred MB). One that cannot be read now is left to Optuna, which waits longer: locked by
    a search writing to it, or with a journal that a killed writer left, which only a writable
    connection rolls back."""
    import sqlite3

    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=wait_s)) as db:
            found = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.OperationalError:  # locked, busy, or a hot journal: not known damaged
        return
    except sqlite3.DatabaseError as e:  # "file is not a database", "disk image is malformed"
        found = [str(e)]
    if found != ["ok"]:
        lines = [line for line in "\n".join(found).splitlines() if not line.startswith("***")]
        raise DnasError(
            f"{path}: the study's database is damaged ({(lines or found)[0].strip()}); restore it"
            " from a copy, or start afresh under another study name"
        )


def storage_base(storage: str | None) -> Path | None:
    """For a SQLite study at ``DIR/studies/NAME.db``: DIR, where ``dnas search`` ran (relative
    run folders recorded in the study are relative to it)."""
    path = sqlite_path(storage or default_storage("studies", "x"))
    return None if path is None else path.resolve().parent.parent


# ---- the trial record ---------------------------------------------------------------------


@dataclass
class TrialRecord:
    """What one trial proposed and produced. ``val_acc`` is set only for a trial that measured
    one (trained, or pruned after some epochs); ``problems`` lists attributes that could not be
    read (a damaged or foreign study), each left out of the record."""

    number: int
    state: str  # waiting | running | trained | stopped | reused | over budget | skipped | ...
    name: str | None = None
    family: str | None = None
    params: int | None = None
    flops: int | None = None
    memory: int | None = None  # predicted training memory, bytes (studies with a memory budget)
    violation: float | None = None  # largest relative excess over a budget; <= 0 feasible
    started: bool = False  # training started (counts towards the study's trials)
    val_acc: float | None = None
    metrics: list[dict] = field(default_factory=list)  # per epoch, as in metrics.jsonl
    epochs: int | None = None
    wall_time_s: float | None = None
    images_per_s: float | None = None
    device: str | None = None
    run_dir: str | None = None
    settings: str | None = None  # the training settings (SearchConfig.training_key)
    rungs: dict[int, float] = field(default_factory=dict)  # rung epochs -> validation accuracy
    reused_from: int | None = None  # the trial whose result a duplicate reused
    continued: int | None = None  # the lost trial whose run (folder, checkpoint) this one went on
    resumed_at_epoch: int | None = None  # ... from the end of this epoch
    promoted: list[str] = field(default_factory=list)  # the rungs it passed, and how
    note: str = ""  # why it failed, was pruned, stopped, rejected, skipped or reused
    problems: list[str] = field(default_factory=list)

    @property
    def curve(self) -> list[tuple[int, float]]:
        """(epoch, validation accuracy) for every epoch that measured one."""
        return [
            (int(m["epoch"]), float(m["val_acc"]))
            for m in self.metrics
            if isinstance(m.get("epoch"), int) and _finite(m.get("val_acc"))
        ]


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def record_proposal(trial: optuna.Trial, name: str, family: str, params: int, flops: int,
                    violation: float, settings: str,
                    memory: int | None = None) -> None:  # fmt: skip
    for key, value in (("name", name), ("family", family), ("params", params),
                       ("flops", flops), ("violation", violation),
                       ("settings", settings), ("memory", memory)):  # fmt: skip
        if value is not None:
            trial.set_user_attr(key, value)


def record_constraint(trial: optuna.Trial, violation: float) -> None:
    """The budget constraint Optuna's samplers read. A trial retried after its worker died holds
    its original's already (the same proposal): Optuna keeps it and warns, which is no news."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The constraint value is ignored")
        trial.set_constraint("budget", violation)


def record_rejected(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("rejected", reason)


def record_skipped(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("skipped", reason)


def record_started(trial: optuna.Trial, device: str, run_dir: Path) -> None:
    trial.set_user_attr(_STARTED, True)
    trial.set_user_attr("rungs", {})  # a retried trial inherits its original's attributes
    trial.set_user_attr("promoted", [])
    trial.set_user_attr(_CONTINUED, None)  # (None reads as never set)
    trial.set_user_attr(_RESUMED_AT, None)
    trial.set_user_attr("device", device)
    trial.set_user_attr("run_dir", str(run_dir))


def record_worker(trial: optuna.Trial) -> None:
    trial.set_user_attr(_WORKER, worker_id())


def worker_id() -> str:
    """This process among all that may share a study: the machine's boot id and process-id
    namespace (containers on one host share the boot id, not the pid namespace; the host name
    where there is neither), and the process id."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        machine = f"{boot}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        machine = socket.gethostname()
    return f"{machine}:{os.getpid()}"


def fail_dead_trials(study: optuna.Study) -> int:
    """Fail, as the heartbeat would after its 30 s grace, and so queue again, the running trials
    whose worker was a process of this machine that is gone: a rerun right after ``kill -9``
    would otherwise count the dead trial as one still training. Returns how many."""
    import copy

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage, machine = study._storage, worker_id().rpartition(":")[0]
    trials = study.get_trials(deepcopy=False)
    workers = {t.number: t.user_attrs.get(_WORKER) for t in trials}
    dead = []
    for t in trials:
        worker = workers[t.number]
        if t.state != TrialState.RUNNING or not isinstance(worker, str):
            continue
        history = t.system_attrs.get("retry_history") or [t.system_attrs.get("failed_trial")]
        if worker == workers.get(history[-1]):
            continue  # a retry not yet claimed by its new worker: the name is its original's
        theirs, _, pid = worker.rpartition(":")
        if theirs != machine or not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(UpdateFinishedTrialError):  # another process failed it first
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                dead.append(t._trial_id)
    retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    for trial_id in dead:
        if retry is not None:
            retry(study, copy.deepcopy(storage.get_trial(trial_id)))
    return len(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        pass
    return True


def record_result(trial: optuna.Trial, metrics: list[dict], wall_time_s: float,
                  images_per_s: float) -> None:  # fmt: skip
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("epochs", len(metrics))
    trial.set_user_attr("wall_time_s", wall_time_s)
    trial.set_user_attr("images_per_s", images_per_s)


def record_rung(trial: optuna.Trial, rungs: dict[int, float]) -> None:
    """The validation accuracy at every rung the trial has reached so far."""
    trial.set_user_attr("rungs", {str(k): v for k, v in sorted(rungs.items())})


def record_stopped(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("stopped", reason)


def record_promoted(trial: optuna.Trial, decisions: list[str]) -> None:
    """Each rung the trial passed, and how: 'at epoch 1, promoted: place 2 of 7, ...'."""
    trial.set_user_attr("promoted", decisions)


def record_pruned(trial: optuna.Trial, reason: str) -> None:
    """Why the trial ended pruned: Hyperband or a duplicate still training."""
    trial.set_user_attr("pruned", reason)


def record_reused(trial: optuna.Trial, number: int) -> None:
    trial.set_user_attr("reused_from", number)


def record_failure(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("failure", reason.splitlines()[0][:500] if reason else "failed")


def record_interrupted(
    trial: optuna.Trial,
    note: str = "interrupted while training; queued again",
    time_limit: bool = False,
) -> None:
    """Stopped by Ctrl-C, SIGTERM or (``time_limit``) the search's time limit while training:
    not a failure of its own (it does not count towards ``--trials``), and queued again, behind
    the trials already waiting: a rerun continues its run from the last completed epoch if
    ``--trials`` leaves room after them (``lost_runs``). The queued trial remembers a
    time-limit cut (``cut_before``)."""
    trial.set_user_attr("interrupted", note)
    mark = {_CONTINUES: trial.number}
    if time_limit:
        mark[_AFTER_TIME_LIMIT] = trial.number
    trial.study.enqueue_trial(trial.params, user_attrs=mark)


def cut_before(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int | None:
    """The trial whose cut by the time limit queued this one, None if it was not queued so."""
    return trial.user_attrs.get(_AFTER_TIME_LIMIT)


def lost_runs(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The trials whose run this one was queued to go on with, the likeliest first: the one
    lost last before it (interrupted, cut by the time limit, or failed with its worker: then
    Optuna's heartbeat queued it, copying the lost trial's attributes, and noted the trials it
    retries), then the one that trial was itself queued for, whose folder it may have died
    before taking over. Empty for a trial queued for itself."""
    import optuna

    with warnings.catch_warnings():  # the retry history is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)
    found = [history[-1]] if isinstance(history, list) and history else []
    found.append(trial.user_attrs.get(_CONTINUES))
    runs = [n for n in found if type(n) is int and 0 <= n < trial.number]
    return list(dict.fromkeys(runs))


def record_continued(trial: optuna.Trial, lost: int, epochs: int) -> None:
    """The trial went on with the run of trial ``lost``, which had done ``epochs``."""
    trial.set_user_attr(_CONTINUED, lost)
    trial.set_user_attr(_RESUMED_AT, epochs)


def awaited_runs(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The trials whose run folders must be kept: those waiting or running, and the lost ones
    whose run they may go on with (one waiting may take a lost folder over at any moment)."""
    from optuna.trial import TrialState as S

    pending = [t for t in trials if t.state in (S.WAITING, S.RUNNING)]
    return {t.number for t in pending} | {n for t in pending for n in lost_runs(t)}


def queued_again(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial was interrupted or cut and queued again (it may not have ended yet)."""
    return "interrupted" in trial.user_attrs


def started(trial: optuna.trial.FrozenTrial) -> bool:
    a = trial.user_attrs
    return a.get(_STARTED) is True or a.get(_LEGACY_STARTED) is True


def counts_towards_trials(trial: optuna.trial.FrozenTrial, settings: str | None = None) -> bool:
    """Whether a trial counts towards the study's ``--trials``: it started training and is
    training, finished, was pruned or failed by itself, with the training ``settings`` (when
    given) of the search counting. A trial whose worker died (failed by the heartbeat, with no
    failure of its own) does not: Optuna queues it again."""
    from optuna.trial import TrialState as S

    if not started(trial):
        return False
    theirs = trial.user_attrs.get("settings")
    if settings is not None and isinstance(theirs, str) and theirs != settings:
        return False  # trained for a search of other epochs, subset, ...: not this one's
    return trial.state in (S.COMPLETE, S.PRUNED, S.RUNNING) or "failure" in trial.user_attrs


class _Reader:
    """Reads one trial's attributes with their types, noting each that does not fit."""

    def __init__(self, attrs: dict) -> None:
        self.attrs, self.problems = attrs, []

    def get(self, key: str, kind: type, check=None):  # noqa: ANN001, ANN202
        if key not in self.attrs or self.attrs[key] is None:
            return None
        value = self.attrs[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok and kind is float:
            ok = math.isfinite(value)
        if ok and check is not None:
            ok = check(value)
        if not ok:
            self.problems.append(f"{key}={_short(value)} is not a valid {kind.__name__}")
            return None
        return value

    def texts(self, key: str) -> list[str]:
        value = self.attrs.get(key)
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        self.problems.append(f"{key}={_short(value)} is not a list of texts")
        return []

    def rungs(self) -> dict[int, float]:
        value = self.attrs.get("rungs")
        if value is None:
            return {}
        try:
            out = {int(k): float(v) for k, v in value.items()}
            if all(k > 0 and math.isfinite(v) for k, v in out.items()):
                return out
        except (AttributeError, TypeError, ValueError):
            pass
        self.problems.append(f"rungs={_short(value)} is not a map of epochs to accuracies")
        return {}

    def metrics(self) -> list[dict]:
        value = self.attrs.get("metrics")
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            self.problems.append(f"metrics={_short(value)} is not a list of per-epoch records")
            return []
        return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """The record of an Optuna trial; malformed attributes are left out and listed in
    ``problems``, never raised."""
    from optuna.trial import TrialState as S

    r = _Reader(trial.user_attrs)
    rec = TrialRecord(
        number=trial.number,
        state=WAITING,
        name=r.get("name", str),
        family=r.get("family", str) or _str(trial.params.get("family")),
        params=r.get("params", int, lambda v: v >= 0),
        flops=r.get("flops", int, lambda v: v >= 0),
        memory=r.get("memory", int, lambda v: v >= 0),
        violation=r.get("violation", float),
        started=started(trial) and trial.state != S.WAITING,  # a retry bears its original's
        metrics=r.metrics() or _intermediate(trial),
        epochs=r.get("epochs", int, lambda v: v >= 0),
        wall_time_s=r.get("wall_time_s", float, lambda v: v >= 0),
        images_per_s=r.get("images_per_s", float, lambda v: v >= 0),
        device=r.get("device", str),
        run_dir=r.get("run_dir", str),
        settings=r.get("settings", str),
        rungs=r.rungs(),
        promoted=r.texts("promoted"),
        reused_from=r.get("reused_from", int, lambda v: 0 <= v < trial.number),
    )
    continued = r.get(_CONTINUED, int, lambda v: 0 <= v < trial.number)
    resumed = r.get(_RESUMED_AT, int, lambda v: v >= 1)
    if continued is not None and resumed is not None:
        rec.continued, rec.resumed_at_epoch = continued, resumed
    rejected, skipped = r.get("rejected", str), r.get("skipped", str)
    failure, stopped, pruned = r.get("failure", str), r.get("stopped", str), r.get("pruned", str)
    interrupted = r.get("interrupted", str)
    curve = rec.curve
    if rejected and not rec.started:
        violation = f" (violation {rec.violation:+.2f})" if rec.violation is not None else ""
        rec.state, rec.note = OVER_BUDGET, f"{rejected}: never built{violation}"
    elif skipped and not rec.started:
        rec.state, rec.note = SKIPPED, skipped
    elif trial.state == S.FAIL and failure:
        rec.state, rec.note = FAILED, failure
    elif trial.state == S.FAIL:  # interrupted, or failed by the heartbeat or fail_dead_trials
        lost = "lost with its worker (killed, out of memory, or its machine gone)"
        rec.state, rec.note = LOST, interrupted or lost
    elif trial.state == S.PRUNED:
        rec.state = PRUNED
        if curve:
            rec.val_acc = curve[-1][1]
        rec.note = pruned or (f"pruned after epoch {curve[-1][0]}" if curve else "pruned")
    elif trial.state == S.COMPLETE:
        acc = trial.values[0] if trial.values else None
        if rec.reused_from is not None and not rec.started and _finite(acc):
            rec.state, rec.val_acc = REUSED, float(acc)
            rec.note = f"the same candidate as trial {rec.reused_from}: its result, not retrained"
        elif rec.started and _finite(acc) and stopped:
            rec.state, rec.val_acc, rec.note = STOPPED, float(acc), stopped
        elif rec.started and _finite(acc):
            rec.state, rec.val_acc = TRAINED, float(acc)
            rec.note = "; ".join(rec.promoted)
        else:
            rec.state, rec.note = FAILED, "complete without a measured accuracy"
    elif trial.state == S.RUNNING:
        rec.state = RUNNING
    if rec.epochs is None and curve and rec.state in (TRAINED, STOPPED, PRUNED):
        rec.epochs = curve[-1][0]
    if rec.wall_time_s is None and trial.duration is not None and rec.started:
        rec.wall_time_s = trial.duration.total_seconds()
    rec.problems = r.problems
    return rec


def _intermediate(trial: optuna.trial.FrozenTrial) -> list[dict]:
    """Per-epoch accuracies a trial reported to Optuna (``trial.report``) when it recorded no
    metrics of its own: a trial pruned by Hyperband stops before it does."""
    return [
        {"epoch": int(e), "val_acc": float(v)}
        for e, v in sorted(trial.intermediate_values.items())
        if _finite(v)
    ]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def read_all(study: optuna.Study) -> list[TrialRecord]:
    return [read(t) for t in study.get_trials(deepcopy=False)]

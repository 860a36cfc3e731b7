"""Architecture search on Optuna: workers run trials (``dnas.trial``) on one study until it has
its trained trials; then the study is summarised, pruned of off-front checkpoints and reported.

Optuna's storage is the distributed engine: any number of ``dnas search`` processes, on any
machines, can share one study. Every failure ends in one line: a bad input before any trial, a
run of trials failing the same way (the search stops), a search with no trained trial, Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import random
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import msgspec
import optuna

from dnas import study as records
from dnas.budget import needs_memory, parse_budgets, require_fits
from dnas.config import DATA_SEED, Objective, Sampler, SearchConfig
from dnas.datasets import DatasetInfo, image_folder
from dnas.device import Device, visible_gpu, worker_gpu
from dnas.errors import (
    DnasError,
    Terminated,
    check_stop,
    check_writable,
    interruption,
    stop_on_sigterm,
    stop_with_parent,
    writing,
)
from dnas.proposal import FeasibleSpace
from dnas.study import TrialRecord
from dnas.summary import MAX_DUPLICATES, SearchSummary, prune_checkpoints, retrain, summarize
from dnas.trial import EpochCallback, TrialRunner

MAX_SAME_FAILURES = 3  # consecutive failed trials with one reason stop the search
MAX_FAILURES = 10  # consecutive failed trials, whatever their reasons, stop it too
MAX_REJECTED = 10_000  # over-budget proposals one worker may draw before it gives up
POLL_S = 5.0  # with local workers, the study is read this often for trials a dead worker left
_SCHEMA_RACE = ("duplicate key", "already exists", "unique constraint", "duplicate entry")


class SearchFailed(DnasError):
    """The search ran but trained nothing usable: the first failure's reason."""

    exit_code = 1


class SearchInterrupted(DnasError):
    """Ctrl-C (exit 130) or SIGTERM (143): what finished, and how to resume."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrialEvent:
    """What a progress display needs after each finished trial."""

    record: TrialRecord
    trained: int  # trials trained (or training) in the study
    target: int | None
    best_acc: float | None


TrialCallback = Callable[[TrialEvent], None]


@contextlib.contextmanager
def _experimental() -> Iterator[None]:
    """Silence Optuna's "experimental" warnings where dnas uses such a feature on purpose
    (multivariate and grouped TPE, metric names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(config: SearchConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; local worker ``worker`` draws its own random stream. (Only the
    sampler's: a trial trains with ``--seed`` + its number, whichever worker runs it.)"""
    seed = (config.seed + 1000 * worker) % 2**32
    if config.sampler is Sampler.random:
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler is Sampler.nsga2:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    # Constraints come from each trial's ``set_constraint`` (Optuna 5).
    with _experimental():
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=5
        )


def _database_option(config: SearchConfig) -> str:
    """The option that chose the SQLite database's folder, for messages."""
    return "--studies-dir" if config.storage is None else "the --storage database folder"


def open_study(config: SearchConfig, worker: int = 0) -> optuna.Study:
    """Create or load the study (safe when several workers start at once), with local worker
    ``worker``'s sampler."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # dnas reports trials and failures itself
    pareto_study = config.objective is Objective.pareto
    directions = ["maximize", "minimize"] if pareto_study else ["maximize"]
    pruner = (
        optuna.pruners.NopPruner()
        if pareto_study
        else optuna.pruners.HyperbandPruner(
            min_resource=config.min_epochs or 1,
            max_resource=config.epochs,
            reduction_factor=config.reduction_factor,
        )
    )
    path = records.sqlite_path(config.storage_url)
    if path is not None:
        with writing(path.parent, _database_option(config)):
            path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(6):
        try:
            study = optuna.create_study(
                storage=records.open_storage(config.storage_url),
                study_name=config.study_name,
                directions=directions,
                sampler=make_sampler(config, worker),
                pruner=pruner,
                load_if_exists=True,
            )
            break
        except Exception as e:  # a bad URL, an unreachable server, a missing driver
            # Workers started together race to create the schema on an empty database: the
            # losers see a duplicate-key error and simply try again once the winner is done.
            if any(text in str(e).lower() for text in _SCHEMA_RACE):
                time.sleep(0.5 + random.random() * attempt)
                continue
            why = records.storage_failure(e) or str(e)  # the database's reason, not Optuna's guess
            raise DnasError(f"cannot open storage {config.storage_url!r}: {why}".splitlines()[0])
    else:
        raise DnasError(f"cannot open storage {config.storage_url!r}: schema creation collided")
    try:  # Optuna reads every attribute as JSON, and a damaged one stops it anywhere
        study.get_trials(deepcopy=False)
        stored = study.user_attrs
    except (TypeError, ValueError) as e:
        raise DnasError(
            f"study {config.study_name!r} in {config.storage_url}: its stored attributes are not"
            f" JSON ({e}); the database is damaged: repair it, or give another --study"
        ) from None
    if [d.name.lower() for d in study.directions] != directions:
        was = "pareto" if len(study.directions) == 2 else "accuracy"
        raise DnasError(
            f"study {config.study_name!r} was created with --objective {was}; use that,"
            " or another --study"
        )
    _check_same_problem(stored, config)
    with _experimental():
        study.set_metric_names(["val_acc", config.cost.value] if pareto_study else ["val_acc"])
    if "budgets" not in stored:  # what the report needs to draw the study
        for key, value in (("budgets", list(config.budgets)), ("dataset", config.dataset),
                           ("space", config.space.value), ("objective", config.objective.value),
                           ("cost", config.cost.value)):  # fmt: skip
            study.set_user_attr(key, value)
    return study


def _check_same_problem(stored: dict, config: SearchConfig) -> None:
    """A study is one problem: the budgets, dataset, space and cost metric it was created with.
    Others would mix their results into it, or change the sampler's space under it (training
    settings may change: ``--trials`` counts each one's trials)."""
    given = {"budgets": list(config.budgets), "dataset": config.dataset,
             "space": config.space.value, "cost": config.cost.value}  # fmt: skip
    if config.objective is not Objective.pareto:
        del given["cost"]  # an accuracy study has no cost objective
    for key, value in given.items():
        was = stored.get(key, value)
        if was == value or (key == "budgets" and _same_budgets(was, value)):
            continue
        if key == "dataset" and (folder := _folder(was)) is not None and folder == _folder(value):
            continue  # one image folder, spelt another way (~/d, /home/u/d, d/)
        if key == "budgets" and isinstance(was, list):
            option = " ".join(f"--budget {b}" for b in was)
        else:
            option = f"--{key} {was}"
        raise DnasError(
            f"study {config.study_name!r} was created with {option}; use that, or another --study"
        )


def _folder(dataset: object) -> Path | None:
    """The folder an ``imagefolder:PATH`` dataset names, resolved; None for another dataset."""
    path = image_folder(dataset)
    return None if path is None else Path(path).expanduser().resolve()


def _same_budgets(a: object, b: list[str]) -> bool:
    """The same limits, however spelt (``1M-params``, ``1000k-params``)."""
    try:
        return set(parse_budgets(a)) == set(parse_budgets(b))  # type: ignore[arg-type]
    except (DnasError, TypeError, AttributeError):  # a study written by hand or another version
        return False


def trained_count(
    study: optuna.Study, exclude: int | None = None, settings: str | None = None
) -> int:
    """Trials that trained or are training (a heartbeat-failed one is retried, so not counted),
    other than trial number ``exclude`` (a retried trial inherits its original's attributes),
    with the training ``settings`` when given (``SearchConfig.training_key``)."""
    return sum(
        t.number != exclude and records.counts_towards_trials(t, settings)
        for t in study.get_trials(deepcopy=False)
    )


def _failure_kind(reason: str) -> str:
    """A failure reason with its numbers blanked: 'loss nan at step 5' ~ 'loss inf at step 9'."""
    return re.sub(r"\b(nan|inf|[-+]?\d[\d.e+-]*)\b", "#", reason.lower())


def _same_failures(study: optuna.Study) -> str | None:
    """Why the search should stop: the study's last MAX_SAME_FAILURES finished trials failed the
    same way, or its last MAX_FAILURES failed whatever the reasons (over-budget and skipped
    proposals count neither way). None while trials still train."""
    reasons: list[str] = []
    for t in reversed(study.get_trials(deepcopy=False)):
        rec = records.read(t)
        if rec.state in (records.TRAINED, records.STOPPED, records.PRUNED):
            break
        if rec.state == records.FAILED:
            reasons.append(rec.note)
            if len(reasons) == MAX_FAILURES:
                return f"the last {MAX_FAILURES} trials failed; the latest: {reasons[0]}"
            kinds = {_failure_kind(r) for r in reasons}
            if len(reasons) == MAX_SAME_FAILURES and len(kinds) == 1:
                return f"the last {MAX_SAME_FAILURES} trials failed with {reasons[0]}"
    return None


def run_worker(
    config: SearchConfig,
    data: object | None = None,
    study: optuna.Study | None = None,
    on_trial: TrialCallback = lambda e: None,
    on_epoch: EpochCallback = lambda e: None,
    worker: int = 0,
    deadline: float | None = None,
) -> str | None:
    """Run trials in this process (local worker ``worker``) until the study has
    ``config.trials`` trained ones, the timeout passes, or trials keep failing the same way
    (returned as the reason to stop)."""
    from dnas.data import load_data
    from dnas.device import device_name, resolve_device

    config = msgspec.structs.replace(config, device=Device(resolve_device(config.device.value)))
    if data is None:
        data = load_data(config.dataset, config.data_dir, config.device.value, config.val_size,
                         config.train_subset, DATA_SEED)  # fmt: skip
    study = study or open_study(config, worker)
    if deadline is None and config.timeout_s is not None:  # time.monotonic(), shared by workers
        deadline = time.monotonic() + config.timeout_s

    def counter(study: optuna.Study, exclude: int) -> int:
        return trained_count(study, exclude, config.training_key)

    runner = TrialRunner(config, data, parse_budgets(config.budgets),
                         device_name(config.device.value), counter, on_epoch,
                         deadline)  # fmt: skip
    stop: list[str] = []

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        check_stop()  # before the next trial: one that Python dropped stops the search here
        (event,) = _events(study.get_trials(deepcopy=False), [trial.number], config)
        on_trial(event)
        trained = trained_count(study, None, config.training_key)  # now, not as the event was
        if (reason := _same_failures(study)) is not None:
            stop.append(reason)
        if runner.rejected > MAX_REJECTED:
            stop.append(f"{runner.rejected} proposals in a row were over budget")
        exhausted = runner.duplicates_in_a_row >= MAX_DUPLICATES  # not a failure: said by summary
        late = runner.deadline is not None and time.monotonic() > runner.deadline
        if stop or exhausted or late or (config.trials is not None and trained >= config.trials):
            study.stop()

    # A worker killed earlier left its trial RUNNING: let the heartbeat mark it failed (and queue
    # it again) before counting, or the dead trial would count as one still training; one of
    # this machine's is known dead at once.
    records.fail_dead_trials(study)
    with _experimental():
        optuna.storages.fail_stale_trials(study)
    if config.trials is None or trained_count(study, None, config.training_key) < config.trials:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            study.optimize(runner, timeout=left, callbacks=[callback],
                           catch=(Exception,), gc_after_trial=True)  # fmt: skip
        except BaseException as e:
            if (why := records.storage_failure(e)) is not None:
                raise DnasError(
                    f"the study's storage {config.storage_url} refused to save a trial ({why});"
                    " the completed trials are kept: free space or make it writable, then rerun"
                    " the same command"
                ) from None
            if (cause := interruption(e)) is None:
                raise
            runner.release()
            raise cause from None
    return stop[0] if stop else None


# ---- many workers on this machine -----------------------------------------------------------


def worker_capacity(device: str) -> int:
    """How many workers this machine can run: one per visible GPU, or per CPU core."""
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def _worker_entry(config: SearchConfig, index: int, threads: int, parent: int,
                  events: Connection, deadline: float | None) -> None:  # fmt: skip
    import torch

    stop_on_sigterm()  # the parent forwards its SIGTERM here
    stop_with_parent(parent)  # and one killed outright sends nothing
    torch.set_num_threads(threads)
    try:  # the parent prints each epoch, and reads each finished trial from the study at once
        reason = run_worker(
            msgspec.structs.replace(config, workers=1),
            on_trial=lambda e: events.send(e.record.number),
            on_epoch=events.send,
            worker=index,
            deadline=deadline,
        )
    except KeyboardInterrupt as e:  # Ctrl-C reaches every process; the parent says what is kept
        os._exit(143 if isinstance(e, Terminated) else 130)
    except DnasError as e:  # one line, as the parent's own (a full disk under the storage)
        print(f"Error: worker {index}: {e}", file=sys.stderr, flush=True)
        os._exit(e.exit_code)
    os._exit(3 if reason else 0)


def _run_processes(
    config: SearchConfig,
    study: optuna.Study,
    on_trial: TrialCallback,
    on_epoch: EpochCallback = lambda e: None,
    deadline: float | None = None,
) -> str | None:
    """N local workers: one per GPU when several are visible, CPU threads split otherwise, all
    stopping at one ``deadline`` (``time.monotonic()``). This process reports each epoch the
    workers send and each trial they finish (from the study, as soon as a worker says so, and
    every few seconds for trials a dead worker left). Returns why to stop when a worker failed
    or was killed (``_workers_failed``)."""
    import multiprocessing as mp

    import torch

    ctx = mp.get_context("spawn")
    ngpu = torch.cuda.device_count() if config.device is Device.cuda else 0
    threads = max(1, worker_capacity("cpu") // config.workers)
    procs, pipes = [], []  # a pipe of its own per worker: one killed mid-send blocks no other
    reported = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def relay(timeout: float) -> bool:
        """Report what the workers sent within ``timeout`` (an EpochEvent, or the number of a
        trial that finished); whether anything came."""
        if not pipes:
            time.sleep(timeout)
            return False
        ready = wait(pipes, timeout)
        for pipe in ready:
            try:
                item = pipe.recv()
            except (EOFError, OSError, pickle.UnpicklingError):  # the worker has ended
                pipes.remove(pipe)
                pipe.close()
                continue
            if isinstance(item, int):
                _report_new(study, config, reported, on_trial)
            else:
                on_epoch(item)
        return bool(ready)

    try:
        for i in range(config.workers):
            receive, send = ctx.Pipe(duplex=False)
            args = (config, i, threads, os.getpid(), send, deadline)
            p = ctx.Process(target=_worker_entry, args=args)
            with visible_gpu(worker_gpu(i, ngpu) if ngpu > 1 else None):
                p.start()  # the worker's environment is this process's, now
            send.close()  # the worker's end: the pipe reads as ended once the worker is gone
            procs.append(p)
            pipes.append(receive)
        while any(p.is_alive() for p in procs):
            poll = time.monotonic() + POLL_S
            while time.monotonic() < poll and any(p.is_alive() for p in procs):
                check_stop()
                relay(0.5)
            _report_new(study, config, reported, on_trial)
        while relay(0):  # what the last workers sent before they ended
            pass
        _report_new(study, config, reported, on_trial)
        check_stop()  # the workers stopped on the same Ctrl-C: not their failure
        return _workers_failed([p.exitcode for p in procs])
    except Terminated:  # sent to this process alone (Ctrl-C reaches the whole process group)
        for p in procs:
            p.terminate()
        raise
    finally:  # wait for the workers, never leave one behind
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        for pipe in pipes:
            pipe.close()


def _workers_failed(exit_codes: list[int | None]) -> str | None:
    """Why the search stops for its workers' exit codes, None when none failed. 0: done; 3:
    stopped on repeated failures (the study says which); 130/143: a Ctrl-C or SIGTERM sent to
    the worker alone; negative: killed by that signal (kill -9, the out-of-memory killer); both
    print nothing. Any other: the worker's own error, printed on stderr."""
    import signal

    why, again = [], "rerun the same command to resume"
    for i, code in enumerate(exit_codes):
        if code in (None, 0, 3):
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            how = " (kill -9, or the out-of-memory killer)" if name == "SIGKILL" else ""
            why.append(f"worker {i} was killed by {name}{how}; {again}")
        elif code in (130, 143):
            why.append(f"worker {i} was stopped by {'SIGTERM' if code == 143 else 'Ctrl-C'}"
                       f" sent to it alone; {again}")  # fmt: skip
        else:
            why.append(f"worker {i} (exit {code}) failed; its error is printed above")
    return "; ".join(why) or None


def _report_new(study: optuna.Study, config: SearchConfig, reported: set[int],
                on_trial: TrialCallback) -> None:  # fmt: skip
    """Call ``on_trial`` for every finished trial not reported yet, in the order they finished."""
    trials = study.get_trials(deepcopy=False)
    fresh = [t.number for t in trials if t.state.is_finished() and t.number not in reported]
    for event in _events(trials, fresh, config):
        reported.add(event.record.number)
        on_trial(event)


def _events(trials: list, numbers: list[int], config: SearchConfig) -> list[TrialEvent]:
    """Progress events for trials ``numbers``, from one read of the study's trials, in the order
    they finished; each with the study as it was then: the trials started by then and the best
    accuracy trained by then (several may have finished since the last read)."""
    if not numbers:
        return []
    by_number = {t.number: t for t in trials}
    recs = {t.number: records.read(t) for t in trials}
    ours = [t for t in trials if records.counts_towards_trials(t, config.training_key)]
    events = []
    for n in sorted(numbers, key=lambda n: (_finished_at(by_number[n]), n)):
        then = _finished_at(by_number[n])
        started = [t for t in ours if t.datetime_start is None or t.datetime_start <= then]
        best = max((recs[t.number].val_acc for t in started if _finished_at(t) <= then
                    and recs[t.number].state == records.TRAINED), default=None)  # fmt: skip
        events.append(TrialEvent(recs[n], len(started), config.trials, best))
    return events


def _finished_at(trial: optuna.trial.FrozenTrial) -> datetime.datetime:
    """When a trial finished; the end of time for one that has not (yet)."""
    return trial.datetime_complete or datetime.datetime.max


# ---- the search -------------------------------------------------------------------------------


def _check_study_folders(config: SearchConfig, database: Path | None) -> None:
    """The study's trial and report folders must be folders, and trial folders must belong to
    its database: with the database gone, trial 0 would meet the old trial 0's run."""
    root = config.trial_root
    for folder, option in ((root, "--study"), (config.report_dir, "--study")):
        if folder.exists() and not folder.is_dir():
            raise DnasError(f"{folder} is a file, not study {config.study_name}'s folder; choose"
                            f" another {option}")  # fmt: skip
    gone = database is not None and (not database.exists() or database.stat().st_size == 0)
    if gone and root.is_dir() and any(root.glob("trial-*")):
        raise DnasError(
            f"{root} holds the trial folders of an earlier study {config.study_name}, whose"
            f" database {database} is missing or empty: restore the database, or move {root}"
            " away to start afresh"
        )


def prepare(config: SearchConfig, log: Callable[[str], None] = lambda s: None) -> SearchConfig:
    """Check everything that can be checked before any trial, and settle the device and the
    number of workers. Writes nothing."""
    from dnas.datasets import dataset_info
    from dnas.device import resolve_device
    from dnas.report.page import check_report

    device = Device(resolve_device(config.device.value))
    check_writable(config.studies_dir, "--studies-dir")
    check_writable(config.reports_dir, "--reports-dir")
    database = records.sqlite_path(config.storage_url)
    if database is not None:
        check_writable(database.parent, _database_option(config))
    _check_study_folders(config, database)
    check_report(config.report_dir)  # a foreign page there would be refused after the trials
    if not config.dataset.startswith("imagefolder:"):  # an image folder's size is known once read
        check_feasible(config, dataset_info(config.dataset), device)
    workers = config.workers
    capacity = worker_capacity(device.value)
    if workers > capacity:
        where = "visible GPUs" if device is Device.cuda else "CPU cores"
        log(f"--workers {workers}: this machine has {capacity} {where}; using {capacity} workers")
        workers = capacity
    return msgspec.structs.replace(config, device=device, workers=workers)


def check_feasible(config: SearchConfig, info: DatasetInfo, device: Device) -> None:
    """Raise unless some candidate meets the budgets on this dataset and, on a CPU, the smallest
    can train at the batch size in this machine's memory (on a GPU each trial checks for itself:
    asking here would hold a CUDA context all along)."""
    from dnas.device import available_memory
    from dnas.names import parse_name
    from dnas.space import search_space

    batch = config.train_batch_size if needs_memory(parse_budgets(config.budgets)) else None
    space = search_space(config.space.value, info.name, config.budgets, batch_size=batch,
                         device=device.value, info=info)  # fmt: skip
    if device is Device.cpu:
        smallest = min(space.rows, key=lambda r: (r["params"], r["name"]))["name"]
        require_fits(parse_name(smallest, info.num_classes, info.channels),
                     available_memory("cpu"), "cpu", config.train_batch_size,
                     (info.height, info.width))  # fmt: skip


def enqueue_initial_design(
    study: optuna.Study, config: SearchConfig, info: DatasetInfo
) -> list[str]:
    """A new Pareto study sampled by TPE first trains ``config.initial_design`` candidates
    spread evenly over log parameters, smallest (quickest) first, so that its front covers the
    cost axis before the sampler has a model; the baselines (random, NSGA-II) get none. A
    study that has trials already, or another machine's copy of the same, enqueues nothing
    twice. Returns the names enqueued."""
    if (
        config.initial_design == 0
        or config.objective is not Objective.pareto
        or config.sampler not in (Sampler.auto, Sampler.tpe)
        or study.get_trials(deepcopy=False)
    ):
        return []
    from dnas.device import resolve_device

    device = resolve_device(config.device.value)  # "auto" too: the design ranks by memory
    space = FeasibleSpace(config.space.value, info, parse_budgets(config.budgets),
                          config.train_batch_size, device)  # fmt: skip
    picks = space.spread(config.initial_design)
    for spec in picks:
        study.enqueue_trial(space.params_for(spec), skip_if_exists=True)
    return [s.name for s in picks]


def search(
    config: SearchConfig,
    log: Callable[[str], None] = lambda s: None,
    on_trial: TrialCallback = lambda e: None,
    on_epoch: EpochCallback = lambda e: None,
) -> SearchSummary:
    """Run (or resume) a search with ``config.workers`` worker processes, then summarise it,
    keep only the front's checkpoints and write the report.

    Raises:
        DnasError: bad input, found before any trial (nothing is written then).
        SearchFailed: the search stopped on repeated failures, or trained nothing.
        SearchInterrupted: Ctrl-C; what finished is kept and a rerun resumes.
    """
    from dnas.data import load_data

    config = prepare(config, log)
    deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
    # Loading the data checks the sizes (--val-size, --train-subset) before any file is written;
    # separate workers load their own, so this copy stays on the CPU.
    where = config.device.value if config.workers == 1 else "cpu"
    data = load_data(config.dataset, config.data_dir, where, config.val_size,
                     config.train_subset, DATA_SEED)  # fmt: skip
    if config.dataset.startswith("imagefolder:"):
        check_feasible(config, data.info, config.device)
    if config.retrain_top and len(data.test_y) == 0:  # an image folder without test/
        raise DnasError(
            f"--retrain-top tests the retrained models: {data.info.name} has no test images;"
            " give its test split (PATH/test/CLASS/...) or leave out --retrain-top"
        )
    study = open_study(config)  # the storage is reachable; the schema exists before workers start
    log(f"study {config.study_name} in {config.storage_url}: {config.workers} worker(s) on"
        f" {config.device.value}")  # fmt: skip
    start = enqueue_initial_design(study, config, data.info)
    if start:
        log(f"initial design: {', '.join(start)}")
    t0 = time.perf_counter()
    stop = None
    try:
        if config.workers == 1:
            stop = run_worker(config, data, study, on_trial, on_epoch, deadline=deadline)
        else:
            stop = _run_processes(config, study, on_trial, on_epoch, deadline)
        check_stop()  # not a finished search: no retraining, no "done"
    except KeyboardInterrupt as e:
        summary = _finish(study, config, t0)
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        raise SearchInterrupted(
            f"{how}: {summary.complete} trained trials are kept in {config.storage_url};"
            " rerun the same command to resume",
            exit_code=143 if isinstance(e, Terminated) else 130,
        ) from None
    summary = _finish(study, config, t0)
    reached = (
        config.trials is not None
        and trained_count(study, None, config.training_key) >= config.trials
    )
    if stop is None and not reached:  # the workers' processes stopped on failures
        stop = _same_failures(study)
    if config.retrain_top and not stop and summary.front:
        summary.final = retrain(study, config, summary.front, log)
    from dnas.report import write_report

    try:
        summary.report = str(write_report(study, config.report_dir, warn=log))
    except DnasError as e:
        again = f"dnas report {config.study_name} --storage {config.storage_url} --out DIR"
        raise DnasError(f"{e}; the trials are kept: write the report with `{again}`") from None
    if stop:
        raise SearchFailed(f"stopped: {stop} (report: {summary.report})")
    if summary.complete == 0:
        why, limit = summary.first_failure, config.timeout_s
        cut = any(r.state == records.LOST and (r.note or "").startswith("cut by the time limit")
                  for r in records.read_all(study))  # fmt: skip
        from optuna.trial import TrialState

        queued = any(t.state == TrialState.WAITING and records.cut_before(t) is not None
                     for t in study.get_trials(deepcopy=False))  # fmt: skip
        if why is None and (cut or limit is not None and summary.wall_time_s >= limit):
            why = "no trial finished training within the time limit"
            if queued:
                why += " (a trial it cut is queued again: rerun, or give a longer --timeout)"
            elif cut:
                why += (
                    " (give a longer --timeout: a trial cut again, with no epoch finished in"
                    " half the limit or more, is not queued again)"
                )
        elif why is None and summary.lost:
            why = f"{summary.lost} trial(s) ended with their worker (killed or out of memory)"
        raise SearchFailed(f"no trained trial in study {config.study_name}: {why or 'none ran'}")
    return summary


def _finish(study: optuna.Study, config: SearchConfig, t0: float) -> SearchSummary:
    """Summarise the study and delete the checkpoints of finished trials off the front (a trial
    another process is still training keeps its own, and so does a lost one whose run a queued
    trial may go on with)."""
    summary = summarize(study, config, time.perf_counter() - t0)
    pending = records.awaited_runs(study.get_trials(deepcopy=False))
    prune_checkpoints(config.trial_root, {m.number for m in summary.front} | pending)
    return summary

"""Architecture search on Optuna: the checks before any trial, then one worker (``dnas.worker``)
or several on this machine (``dnas.local_workers``) run trials on one study until it has its
trained trials; then the study is summarised, pruned of off-front checkpoints and reported.

Optuna's storage is the distributed engine: any number of ``dnas search`` processes, on any
machines, can share one study. Every failure ends in one line: a bad input before any trial, a
run of trials failing the same way (the search stops), a search with no trained trial, Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import optuna

from dnas import study as records
from dnas.budget import needs_memory, parse_budgets, require_fits
from dnas.config import DATA_SEED, Objective, Sampler, SearchConfig
from dnas.datasets import DatasetInfo
from dnas.device import Device
from dnas.errors import DnasError, Terminated, check_stop, check_writable
from dnas.local_workers import run_local_workers, worker_capacity
from dnas.proposal import FeasibleSpace
from dnas.summary import SearchSummary, prune_checkpoints, retrain, summarize
from dnas.trial import EpochCallback
from dnas.worker import (
    TrialCallback,
    database_option,
    open_study,
    run_worker,
    same_failures,
    trained_count,
)


class SearchFailed(DnasError):
    """The search ran but trained nothing usable: the first failure's reason."""

    exit_code = 1


class SearchInterrupted(DnasError):
    """Ctrl-C (exit 130) or SIGTERM (143): what finished, and how to resume."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _check_study_folders(config: SearchConfig, database: Path | None) -> None:
    """The study's trial and report folders must be folders, and trial folders must belong to
    its database: with the database gone, trial 0 would meet the old trial 0's run."""
    root = config.trial_root
    for folder, option in ((root, "--study"), (config.report_dir, "--study")):
        if folder.exists() and not folder.is_dir():
            raise DnasError(f"{folder} is a file, not study {config.study_name}'s folder; choose"
                            f" another {option}")  # fmt: skip
    gone = database is not None and (not database.exists() or database.stat().st_size == 0)
    if database is not None and database.is_file() and not gone:
        records.check_database(database)  # before Optuna writes this study's rows into it
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
        check_writable(database.parent, database_option(config))
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
    if deadline is not None and time.monotonic() >= deadline:  # before the study is written
        raise DnasError(
            f"--timeout {config.timeout_s:g}s ran out before the first trial, while the data"
            " loaded and the space was checked; give a longer --timeout"
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
            stop = run_local_workers(config, study, on_trial, on_epoch, deadline, log)
        check_stop()  # not a finished search: no retraining, no "done"
        ended = time.monotonic()  # before the summary, retraining and report take their time
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
        stop = same_failures(study)
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
        late = deadline is not None and ended >= deadline
        why = _why_nothing_trained(study, config, summary, late)
        raise SearchFailed(f"no trained trial in study {config.study_name}: {why}")
    return summary


def _finish(study: optuna.Study, config: SearchConfig, t0: float) -> SearchSummary:
    """Summarise the study and delete the checkpoints of finished trials off the front (a trial
    another process is still training keeps its own, and so does a lost one whose run a queued
    trial may go on with)."""
    summary = summarize(study, config, time.perf_counter() - t0)
    pending = records.awaited_runs(study.get_trials(deepcopy=False))
    prune_checkpoints(config.trial_root, {m.number for m in summary.front} | pending)
    return summary


def _why_nothing_trained(
    study: optuna.Study, config: SearchConfig, summary: SearchSummary, late: bool
) -> str:
    """Why a search that stopped on no failure of its own trained no trial: the first trial's
    failure, the time limit (``late``: it has passed; and whether a trial it cut waits to go
    on), or lost workers."""
    from optuna.trial import TrialState

    if summary.first_failure:
        return summary.first_failure
    cut = any(r.state == records.LOST and (r.note or "").startswith("cut by the time limit")
              for r in records.read_all(study))  # fmt: skip
    if cut or late:
        queued = any(t.state == TrialState.WAITING and records.cut_before(t) is not None
                     for t in study.get_trials(deepcopy=False))  # fmt: skip
        if queued:
            return (
                "no trial finished training within the time limit (a trial it cut is queued"
                " again: rerun, or give a longer --timeout)"
            )
        if cut:
            return (
                "no trial finished training within the time limit (give a longer --timeout: a"
                " trial cut again, with no epoch finished in half the limit or more, is not"
                " queued again)"
            )
        return (
            "no trial finished training within the time limit (give a longer --timeout: it"
            " ran out before a trial finished an epoch)"
        )
    if summary.lost:
        return f"{summary.lost} trial(s) ended with their worker (killed or out of memory)"
    return "none ran"

"""One worker of a search: it opens the study (created or loaded, with its sampler and pruner,
refusing another problem's study) and runs trials (``dnas.trial``) in this process until the study
has its trained trials, the deadline passes, or trials keep failing the same way.

``dnas.search`` runs one in its own process, or several through ``dnas.local_workers``; any number
of ``dnas search`` processes, on any machines, can share one study through Optuna's storage.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import optuna

from dnas import study as records
from dnas.budget import parse_budgets
from dnas.config import DATA_SEED, Objective, Sampler, SearchConfig
from dnas.datasets import image_folder
from dnas.device import Device
from dnas.errors import DnasError, check_stop, interruption, writing
from dnas.study import TrialRecord
from dnas.summary import MAX_DUPLICATES
from dnas.trial import EpochCallback, TrialRunner

MAX_SAME_FAILURES = 3  # consecutive failed trials with one reason stop the search
MAX_FAILURES = 10  # consecutive failed trials, whatever their reasons, stop it too
MAX_REJECTED = 10_000  # over-budget proposals one worker may draw before it gives up
_SCHEMA_RACE = ("duplicate key", "already exists", "unique constraint", "duplicate entry")


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


def database_option(config: SearchConfig) -> str:
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
        with writing(path.parent, database_option(config)):
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
            raise records.cannot_open(config.storage_url, why) from None
    else:
        raise records.cannot_open(config.storage_url, "schema creation collided")
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
    study: optuna.Study,
    exclude: int | None = None,
    settings: str | None = None,
    trials: list[optuna.trial.FrozenTrial] | None = None,
) -> int:
    """Trials that trained or are training (a heartbeat-failed one is retried, so not counted),
    other than trial number ``exclude`` (a retried trial inherits its original's attributes),
    with the training ``settings`` when given (``SearchConfig.training_key``). ``trials``: the
    study's, read already."""
    return sum(
        t.number != exclude and records.counts_towards_trials(t, settings)
        for t in (study.get_trials(deepcopy=False) if trials is None else trials)
    )


def _failure_kind(reason: str) -> str:
    """A failure reason with its numbers blanked: 'loss nan at step 5' ~ 'loss inf at step 9'."""
    return re.sub(r"\b(nan|inf|[-+]?\d[\d.e+-]*)\b", "#", reason.lower())


def same_failures(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None
) -> str | None:
    """Why the search should stop: the study's last MAX_SAME_FAILURES finished trials failed the
    same way, or its last MAX_FAILURES failed whatever the reasons (over-budget and skipped
    proposals count neither way). None while trials still train. ``trials``: the study's, read
    already."""
    reasons: list[str] = []
    for t in reversed(study.get_trials(deepcopy=False) if trials is None else trials):
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
        trials = study.get_trials(deepcopy=False)  # one read for the event and the checks
        (event,) = trial_events(trials, [trial.number], config)
        on_trial(event)
        trained = trained_count(study, None, config.training_key, trials)  # now, not as then
        if (reason := same_failures(study, trials)) is not None:
            stop.append(reason)
        if runner.rejected > MAX_REJECTED:
            stop.append(f"{runner.rejected} proposals in a row were over budget")
        exhausted = (  # not a failure: the summary says so
            runner.duplicates_in_a_row >= MAX_DUPLICATES and runner.queue_untried(study) is None
        )
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


def trial_events(trials: list, numbers: list[int], config: SearchConfig) -> list[TrialEvent]:
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

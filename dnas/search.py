"""Architecture search on Optuna: every trial really trains its candidate.

Data flows name -> spec -> cost -> trial -> study. The budget is a hard constraint known before
training: each proposal's cost is computed in closed form first, an over-budget proposal is never
built, and it is told to the sampler as an infeasible trial (``constraints_func``) so the sampler
learns where the infeasible region is at no training cost. Optuna's storage is the distributed
engine: any number of ``dnas search`` processes, on any machines, can share one study.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna

from dnas.budget import Budget, parse_budgets
from dnas.cost import Cost, count
from dnas.datasets import DatasetInfo
from dnas.errors import DnasError
from dnas.space import ALL, SPACES
from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, Spec, WRNSpec

# Optuna marks heartbeats, grouped TPE and metric names experimental; dnas pins their use here.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

OBJECTIVES = ("pareto", "accuracy")
SAMPLERS = ("auto", "tpe", "nsga2", "random")


@dataclass(frozen=True)
class SearchConfig:
    """One search. A study's name and storage identify it; rerunning the same config resumes it."""

    budgets: tuple[str, ...] = ("1M-params",)
    space: str = "all"  # densenet | wrn | all
    dataset: str = "cifar10"
    trials: int | None = (
        20  # trained trials the study should reach (over-budget proposals not counted)
    )
    timeout_s: float | None = None  # this command's wall-time limit
    epochs: int = 3  # per trial (the fidelity)
    train_subset: int | None = None  # training images per trial (class-stratified)
    val_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    objective: str = (
        "pareto"  # pareto: (val acc max, cost min); accuracy: val acc under the budget
    )
    cost: str = "params"  # params | flops: the second objective
    sampler: str = "auto"
    study: str | None = None  # default: derived from space, dataset and budgets
    storage: str | None = None  # default: sqlite:///studies/STUDY.db
    workers: int = 1
    device: str = "cpu"
    seed: int = 0
    data_dir: str | None = None
    studies_dir: str = "studies"
    reports_dir: str = "reports"  # the HTML report goes to REPORTS_DIR/STUDY/index.html
    retrain_top: int = 0
    final_epochs: int = 30

    def __post_init__(self) -> None:
        if self.space != "all" and self.space not in SPACES:
            raise DnasError(f"unknown space {self.space!r}; choose all, {', '.join(SPACES)}")
        if self.objective not in OBJECTIVES:
            raise DnasError(
                f"unknown objective {self.objective!r}; choose {' or '.join(OBJECTIVES)}"
            )
        if self.cost not in ("params", "flops"):
            raise DnasError(f"unknown cost {self.cost!r}; choose params or flops")
        if self.sampler not in SAMPLERS:
            raise DnasError(
                f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}"
            )
        if self.trials is None and self.timeout_s is None:
            raise DnasError("give --trials N or --timeout (e.g. 2h), or both")
        if self.trials is not None and self.trials < 1:
            raise DnasError(f"--trials must be >= 1, got {self.trials}")
        if self.epochs < 1 or self.workers < 1:
            raise DnasError("--epochs and --workers must be >= 1")
        parse_budgets(self.budgets)  # raises a one-line BudgetError for a malformed one

    @property
    def study_name(self) -> str:
        return self.study or "-".join([self.space, self.dataset, *self.budgets])

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.studies_dir) / self.study_name}.db"

    @property
    def trial_dir(self) -> Path:
        return Path(self.studies_dir) / self.study_name


# ---- the search space as Optuna parameters -------------------------------------------------


def suggest_spec(trial: optuna.Trial, space: str, info: DatasetInfo) -> Spec:
    """Draw an architecture from the default spaces (``dnas.space``) with Optuna's suggest API."""
    family = trial.suggest_categorical("family", list(ALL)) if space == "all" else space
    head = dict(num_classes=info.num_classes, in_channels=info.channels)
    if family.startswith("densenet"):
        s = SPACES[family]
        n = trial.suggest_int(
            "densenet_layers_per_block", min(s.layers_per_block), max(s.layers_per_block)
        )
        k = trial.suggest_categorical("densenet_growth_rate", list(s.growth_rates))
        b = _choose(trial, "densenet_bottleneck", s.bottleneck)
        theta = _choose(trial, "densenet_compression", s.compression)
        return DenseNetSpec((6 if b else 3) * n + 4, k, b, theta, **head)
    s = SPACES["wrn"]
    n = trial.suggest_int("wrn_blocks_per_group", min(s.blocks_per_group), max(s.blocks_per_group))
    k = trial.suggest_int("wrn_widen", min(s.widen), max(s.widen))
    block = trial.suggest_categorical("wrn_block", list(WRN_BLOCK_TYPES))
    return WRNSpec(6 * n + 4, k, WRN_BLOCK_TYPES[block], **head)


def _choose(trial: optuna.Trial, name: str, choices: tuple):  # noqa: ANN202
    """A categorical parameter, fixed (not suggested) when the space allows one value."""
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def violation(budgets: tuple[Budget, ...], cost: Cost) -> float:
    """Largest relative excess over a budget: <= 0 feasible (Optuna's constraint convention)."""
    return max(getattr(cost, b.metric) / b.limit - 1.0 for b in budgets)


def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    seed = config.seed
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    # Constraints come from each trial's ``set_constraint`` (Optuna 5).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)


def _storage(config: SearchConfig) -> optuna.storages.BaseStorage:
    url = config.storage_url
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {}
    if url.startswith("sqlite"):
        # Several local workers share one file: wait for the lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=10,
        grace_period=30,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=2
        ),
        **kwargs,
    )


def open_study(config: SearchConfig) -> optuna.Study:
    directions = ["maximize", "minimize"] if config.objective == "pareto" else ["maximize"]
    pruner = (
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
        if config.objective == "accuracy"
        else optuna.pruners.NopPruner()
    )
    for attempt in range(6):
        try:
            study = optuna.create_study(
                storage=_storage(config),
                study_name=config.study_name,
                directions=directions,
                sampler=make_sampler(config),
                pruner=pruner,
                load_if_exists=True,
            )
            break
        except Exception as e:  # a bad URL, an unreachable server, a missing driver
            # Workers started together race to create the schema on an empty database: the
            # losers see a duplicate-key error and simply try again once the winner is done.
            if "duplicate key" in str(e).lower() or "already exists" in str(e).lower():
                time.sleep(0.5 + random.random() * attempt)
                continue
            raise DnasError(
                f"cannot open storage {config.storage_url!r}: {e}".splitlines()[0]
            ) from None
    else:
        raise DnasError(
            f"cannot open storage {config.storage_url!r}: schema creation kept colliding"
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise DnasError(
            f"study {config.study_name!r} was created with --objective "
            f"{'pareto' if len(study.directions) == 2 else 'accuracy'}; use that, or another --study"
        )
    study.set_metric_names(
        ["val_acc", config.cost] if config.objective == "pareto" else ["val_acc"]
    )
    if "budgets" not in study.user_attrs:  # what the report needs to draw the study
        for key, value in (
            ("budgets", list(config.budgets)),
            ("dataset", config.dataset),
            ("space", config.space),
            ("objective", config.objective),
            ("cost", config.cost),
        ):
            study.set_user_attr(key, value)
    return study


# ---- trials --------------------------------------------------------------------------------

TRAINED = "trained"  # user attr set when a trial starts training


def trained_count(study: optuna.Study, exclude: int | None = None) -> int:
    """Trials that trained or are training (a heartbeat-failed one is retried, so not counted),
    other than trial number ``exclude`` (a retried trial inherits its original's attributes)."""
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.RUNNING,
    )
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.number == exclude:
            continue
        if t.user_attrs.get(TRAINED) and (t.state in states or "failure" in t.user_attrs):
            n += 1
    return n


@dataclass
class Objective:
    config: SearchConfig
    info: DatasetInfo
    data: object  # dnas.data.DataSplits, loaded once per worker
    budgets: tuple[Budget, ...]
    on_epoch: Callable[[optuna.Trial, int, dict], None] = lambda *a: None
    rejected: int = 0

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        from dnas.train import TrainConfig, train

        spec = suggest_spec(trial, self.config.space, self.info)
        cost = count(spec, (self.info.height, self.info.width))
        v = violation(self.budgets, cost)
        for key, value in (
            ("name", spec.name),
            ("family", spec.family),
            ("params", cost.params),
            ("flops", cost.flops),
            ("violation", v),
        ):
            trial.set_user_attr(key, value)
        trial.set_constraint("budget", v)
        objective_cost = float(getattr(cost, self.config.cost))
        if v > 0:
            # Never built: the sampler sees an infeasible trial and learns from it for free.
            self.rejected += 1
            trial.set_user_attr("rejected", "over budget")
            return (0.0, objective_cost) if self.config.objective == "pareto" else 0.0
        if (
            self.config.trials is not None
            and trained_count(trial.study, exclude=trial.number) >= self.config.trials
        ):
            trial.study.stop()
            # Another worker took the last slot between this one's check and its proposal.
            trial.set_user_attr("skipped", "the study already has its trials")
            raise optuna.TrialPruned("the study already has its trials")
        trial.set_user_attr(TRAINED, True)
        import torch

        device = self.config.device
        trial.set_user_attr("device", torch.cuda.get_device_name() if device == "cuda" else "cpu")
        tcfg = TrainConfig(
            recipe="fast",
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            seed=self.config.seed + trial.number,
            device=device,
            train_subset=self.config.train_subset,
            val_size=self.config.val_size,
        )

        def on_epoch(epoch: int, metrics: dict) -> None:
            self.on_epoch(trial, epoch, metrics)
            if self.config.objective == "accuracy":  # Optuna prunes single-objective studies only
                trial.report(metrics["val_acc"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        run_dir = (self.config.trial_dir / f"trial-{trial.number:05d}").resolve()
        try:
            result = train(spec, self.data, tcfg, run_dir=run_dir, on_epoch=on_epoch)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # an OOM or a bug in one trial must not end the study
            trial.set_user_attr("failure", f"{type(e).__name__}: {e}".splitlines()[0][:500])
            raise
        trial.set_user_attr("metrics", result.metrics)
        trial.set_user_attr("epochs", len(result.metrics))
        trial.set_user_attr("wall_time_s", result.wall_time_s)
        trial.set_user_attr("images_per_s", result.images_per_s)
        trial.set_user_attr("run_dir", str(run_dir))
        if result.diverged or result.final_val_acc is None or math.isnan(result.final_val_acc):
            trial.set_user_attr("failure", result.reason or "diverged")
            raise RuntimeError(result.reason or "diverged")
        acc = float(result.final_val_acc)
        return (acc, objective_cost) if self.config.objective == "pareto" else acc


# ---- one worker, and many --------------------------------------------------------------------


def check_feasible(config: SearchConfig, info: DatasetInfo) -> int:
    """Error before any trial if no candidate of the space meets the budgets; else how many do."""
    from dnas.space import search_space

    return len(search_space(config.space, info.name, config.budgets).rows)


def run_worker(
    config: SearchConfig,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] = lambda s, t: None,
    on_epoch: Callable[[optuna.Trial, int, dict], None] = lambda *a: None,
) -> int:
    """Run trials in this process until the study has ``config.trials`` trained ones or the
    timeout passes. Returns the number of over-budget proposals this worker rejected."""
    from dnas.data import load_data

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config)
    data = load_data(
        config.dataset,
        config.data_dir,
        config.device,
        config.val_size,
        config.train_subset,
        config.seed,
    )
    objective = Objective(config, data.info, data, parse_budgets(config.budgets), on_epoch)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        on_trial(study, trial)
        if config.trials is not None and trained_count(study) >= config.trials:
            study.stop()
        if objective.rejected > 10_000:
            study.stop()

    # A worker killed earlier left its trial RUNNING: let the heartbeat mark it failed (and queue
    # it again) before counting, or the dead trial would count as one still training.
    optuna.storages.fail_stale_trials(study)
    if config.trials is None or trained_count(study) < config.trials:
        study.optimize(
            objective,
            timeout=config.timeout_s,
            callbacks=[callback],
            catch=(Exception,),
            gc_after_trial=True,
        )
    return objective.rejected


@dataclass
class FrontMember:
    number: int
    name: str
    params: int
    flops: int
    val_acc: float
    epochs: int
    wall_time_s: float
    run_dir: str


@dataclass
class SearchSummary:
    study: str
    storage: str
    dataset: str
    budgets: list[str]
    trained: int
    complete: int
    failed: int
    pruned: int
    rejected_over_budget: int
    front: list[FrontMember]
    best: FrontMember | None
    wall_time_s: float
    final: list[dict] = field(default_factory=list)
    report: str | None = None  # path of the HTML report

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(study: optuna.Study, config: SearchConfig, wall_time_s: float) -> SearchSummary:
    trials = study.get_trials(deepcopy=False)
    S = optuna.trial.TrialState
    done = [t for t in trials if t.state == S.COMPLETE and t.user_attrs.get(TRAINED)]
    front = pareto_front(done, cost=lambda t: t.user_attrs["params"], acc=lambda t: t.values[0])
    members = [
        FrontMember(
            t.number,
            t.user_attrs["name"],
            t.user_attrs["params"],
            t.user_attrs["flops"],
            t.values[0],
            t.user_attrs.get("epochs", 0),
            t.user_attrs.get("wall_time_s", 0.0),
            t.user_attrs.get("run_dir", ""),
        )
        for t in front
    ]
    best = max(members, key=lambda m: (m.val_acc, -m.params), default=None)
    return SearchSummary(
        study=config.study_name,
        storage=config.storage_url,
        dataset=config.dataset,
        budgets=list(config.budgets),
        trained=sum(1 for t in trials if t.user_attrs.get(TRAINED)),
        complete=len(done),
        failed=sum(1 for t in trials if t.state == S.FAIL),
        pruned=sum(1 for t in trials if t.state == S.PRUNED),
        rejected_over_budget=sum(1 for t in trials if t.user_attrs.get("rejected")),
        front=members,
        best=best,
        wall_time_s=wall_time_s,
        final=study.user_attrs.get("final", []),
    )


def pareto_front(items: list, cost: Callable, acc: Callable) -> list:
    """The items not dominated in (``acc`` up, ``cost`` down), cheapest first. Shared by the
    search summary (Optuna trials) and the report (its trial rows)."""
    front: list = []
    for item in sorted(items, key=lambda it: (cost(it), -acc(it))):
        if not front or acc(item) > acc(front[-1]):
            front.append(item)
    return front


def prune_checkpoints(study: optuna.Study, keep: set[int]) -> None:
    """Delete the checkpoints of trials off the front (their metrics stay in the study)."""
    for t in study.get_trials(deepcopy=False):
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and t.number not in keep:
            ckpt = Path(run_dir) / "checkpoint.pt"
            if ckpt.exists():
                ckpt.unlink()


def search(
    config: SearchConfig,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] = lambda s, t: None,
    on_epoch: Callable[[optuna.Trial, int, dict], None] = lambda *a: None,
) -> SearchSummary:
    """Run (or resume) a search with ``config.workers`` worker processes and summarize it."""
    from dnas.datasets import dataset_info

    info = dataset_info(config.dataset) if not config.dataset.startswith("imagefolder:") else None
    if info is not None:
        check_feasible(config, info)
    t0 = time.perf_counter()
    if config.workers == 1:
        run_worker(config, on_trial, on_epoch)
    else:
        _run_processes(config)
    study = open_study(config)
    summary = summarize(study, config, time.perf_counter() - t0)
    prune_checkpoints(study, {m.number for m in summary.front})
    if config.retrain_top:
        summary.final = retrain(study, config, summary.front)
    from dnas.report import write_report

    summary.report = str(write_report(study, Path(config.reports_dir) / config.study_name))
    return summary


def _worker_entry(config: SearchConfig, index: int, threads: int) -> None:
    import os

    import torch

    torch.set_num_threads(threads)
    run_worker(replace(config, workers=1, seed=config.seed + 1000 * index))
    os._exit(0)


def _run_processes(config: SearchConfig) -> None:
    """N local workers: one per GPU when several are visible, CPU threads split otherwise."""
    import multiprocessing as mp
    import os

    import torch

    ctx = mp.get_context("spawn")
    ngpu = torch.cuda.device_count() if config.device == "cuda" else 0
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    procs = []
    for i in range(config.workers):
        if ngpu > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i % ngpu)
        p = ctx.Process(target=_worker_entry, args=(config, i, threads))
        p.start()
        procs.append(p)
    for p in procs:
        p.join()


def retrain(study: optuna.Study, config: SearchConfig, front: list[FrontMember]) -> list[dict]:
    """Retrain the K most accurate front members for ``final_epochs`` and evaluate on the test
    set; recorded in the study's user attrs under 'final', apart from the validation numbers."""
    from dnas.data import load_data
    from dnas.names import parse_name
    from dnas.train import TrainConfig, train

    data = load_data(
        config.dataset, config.data_dir, config.device, config.val_size, None, config.seed
    )
    results = []
    for m in sorted(front, key=lambda m: -m.val_acc)[: config.retrain_top]:
        spec = parse_name(m.name, data.info.num_classes, data.info.channels)
        tcfg = TrainConfig(
            recipe="fast",
            epochs=config.final_epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            device=config.device,
            eval_test=True,
        )
        run_dir = config.trial_dir / "final" / m.name
        r = train(spec, data, tcfg, run_dir=run_dir, resume=(run_dir / "checkpoint.pt").exists())
        results.append(
            {
                "name": m.name,
                "trial": m.number,
                "epochs": config.final_epochs,
                "params": m.params,
                "search_val_acc": m.val_acc,
                "final_val_acc": r.final_val_acc,
                "test_acc": r.test_acc,
                "run_dir": str(run_dir),
            }
        )
    study.set_user_attr("final", results)
    return results


def hypervolume(points: list[tuple[float, float]], ref_cost: float) -> float:
    """Area dominated by (cost, accuracy) points, cost minimised and accuracy maximised, from the
    reference point (ref_cost, 0), divided by ref_cost: 1.0 would be 100% accuracy at no cost.

    It is the mean, over costs c in [0, ref_cost], of the best accuracy reachable at cost <= c.
    """
    area, best = 0.0, 0.0
    pts = sorted((c, a) for c, a in points if c <= ref_cost)
    for (c, a), nxt in zip(pts, [p[0] for p in pts[1:]] + [ref_cost]):
        best = max(best, a)
        area += (nxt - c) * best
    return area / ref_cost

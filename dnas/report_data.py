"""Study -> plain data for the report's figures (``dnas.report`` turns these into Plotly).

Nothing here draws or trains. A trial's accuracy is shown only when the trial really trained:
over-budget proposals were never built (their stored values are placeholders), failed trials have
none, pruned trials keep the last validation accuracy they reported, marked as such.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from dnas.budget import Budget, BudgetError, parse_budget
from dnas.search import hypervolume
from dnas.search import pareto_front as search_front

MIN_IMPORTANCE_TRIALS = 10
# Full-training epochs behind the papers' published errors (DenseNet §4.2; WRN §3).
PAPER_EPOCHS = {("densenet", "SVHN"): 40, ("densenet", ""): 300, ("wrn", ""): 200}

TRAINED, OVER_BUDGET, FAILED, PRUNED, RUNNING = (
    "trained",
    "over budget",
    "failed",
    "pruned",
    "running",
)


@dataclass
class TrialRow:
    """One trial as the report shows it. ``val_acc`` is None unless the trial measured one."""

    number: int
    name: str
    family: str
    params: int | None
    flops: int | None
    state: str  # trained | over budget | failed | pruned | running | waiting
    val_acc: float | None
    epochs: int | None
    wall_time_s: float | None
    curve: list[tuple[int, float]]  # (epoch, validation accuracy)
    note: str = ""  # failure reason, pruning, rejection
    run_dir: str = ""
    front: tuple[str, ...] = ()  # the cost metrics on whose front this trial lies


@dataclass
class StudyInfo:
    name: str
    dataset: str | None
    budgets: list[Budget]
    bad_budgets: list[str]  # budget strings that did not parse (shown, not drawn)
    space: str | None
    objective: str
    cost: str  # the cost objective of a Pareto study: params or flops
    counts: dict[str, int]
    final: list[dict] = field(default_factory=list)


@dataclass
class Reference:
    """A published result: test error at the paper's full training recipe."""

    name: str
    family: str
    params: int
    flops: int
    error: float  # %
    column: str  # the paper's dataset column, e.g. C10+
    epochs: int
    source: str

    @property
    def accuracy(self) -> float:
        return 1.0 - self.error / 100.0


@dataclass
class ParetoData:
    metric: str  # params | flops
    trained: list[TrialRow]
    front: list[TrialRow]  # cheapest first
    pruned: list[TrialRow]  # with a partial accuracy
    untrained: list[TrialRow]  # over budget, failed or pruned before training, with a known cost
    budgets: list[int]  # limits on this metric
    references: list[Reference]


@dataclass
class HistoryData:
    numbers: list[int]  # trial numbers of the trained trials, in order
    best_acc: list[float]  # best validation accuracy so far
    hypervolume: list[float] | None  # normalised; None for a single-objective study
    hv_metric: str
    hv_reference: int | None  # the cost at which the hypervolume's reference point sits


@dataclass
class ImportanceData:
    groups: dict[str, dict[str, float]]  # "densenet" / "wrn" / "all" -> param -> importance
    reason: str = ""  # why some or all are missing


def _get(attrs: dict, key: str, kind: type):  # noqa: ANN202
    v = attrs.get(key)
    try:
        return None if v is None else kind(v)
    except (TypeError, ValueError):
        return None


def _curve(t: optuna.trial.FrozenTrial) -> list[tuple[int, float]]:
    metrics = t.user_attrs.get("metrics")
    if isinstance(metrics, list) and metrics:
        out = []
        for i, m in enumerate(metrics, start=1):
            if isinstance(m, dict) and isinstance(m.get("val_acc"), (int, float)):
                out.append((int(m.get("epoch", i)), float(m["val_acc"])))
        return out
    return sorted((int(k), float(v)) for k, v in t.intermediate_values.items() if math.isfinite(v))


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    S = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        curve = _curve(t)
        acc, note = None, ""
        if a.get("rejected"):
            state, note = (
                OVER_BUDGET,
                f"{a['rejected']}: never built"
                f" (violation {_get(a, 'violation', float) or 0:+.2f})",
            )
        elif t.state == S.FAIL:
            state, note = FAILED, str(a.get("failure", "failed"))
        elif t.state == S.PRUNED:
            state = PRUNED
            if curve:
                acc = curve[-1][1]
                note = f"pruned after epoch {curve[-1][0]}"
            else:
                note = "pruned before training"
        elif t.state == S.COMPLETE and t.values:
            state, acc = TRAINED, float(t.values[0])
        elif t.state == S.RUNNING:
            state = RUNNING
        else:
            state = t.state.name.lower()
        epochs = _get(a, "epochs", int)
        if epochs is None and curve and state in (TRAINED, PRUNED):
            epochs = curve[-1][0]
        wall = _get(a, "wall_time_s", float)
        if wall is None and t.duration is not None and state in (TRAINED, PRUNED, FAILED):
            wall = t.duration.total_seconds()
        rows.append(
            TrialRow(
                number=t.number,
                name=str(a.get("name", "?")),
                family=str(a.get("family", t.params.get("family", "?"))),
                params=_get(a, "params", int),
                flops=_get(a, "flops", int),
                state=state,
                val_acc=acc if acc is None or math.isfinite(acc) else None,
                epochs=epochs,
                wall_time_s=wall,
                curve=curve,
                note=note,
                run_dir=str(a.get("run_dir", "")),
            )
        )
    return rows


def pareto_front(rows: list[TrialRow], metric: str) -> list[TrialRow]:
    """Trained trials not dominated in (validation accuracy up, ``metric`` down), cheapest
    first."""
    trained = [
        r
        for r in rows
        if r.state == TRAINED and r.val_acc is not None and getattr(r, metric) is not None
    ]
    trained.sort(key=lambda r: r.number)  # ties go to the earlier trial
    return search_front(trained, cost=lambda r: getattr(r, metric), acc=lambda r: r.val_acc)


def study_info(study: optuna.Study, rows: list[TrialRow]) -> StudyInfo:
    attrs = study.user_attrs
    budgets, bad = [], []
    for text in attrs.get("budgets") or []:
        try:
            budgets.append(parse_budget(str(text)))
        except BudgetError:
            bad.append(str(text))
    objective = str(
        attrs.get("objective") or ("pareto" if len(study.directions) == 2 else "accuracy")
    )
    names = study.metric_names or []
    cost = str(attrs.get("cost") or (names[1] if len(names) == 2 else "params"))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    dataset = attrs.get("dataset")
    final = attrs.get("final")
    return StudyInfo(
        study.study_name,
        str(dataset) if dataset else None,
        budgets,
        bad,
        str(attrs["space"]) if attrs.get("space") else None,
        objective,
        cost if cost in ("params", "flops") else "params",
        counts,
        final if isinstance(final, list) else [],
    )


def references(dataset: str | None) -> list[Reference]:
    """The papers' models with a published error on ``dataset``'s column (C10+, C100+, SVHN)."""
    from dnas.cost import count
    from dnas.names import parse_name
    from dnas.zoo import DATASET_COLUMN, PAPER_MODELS

    column = DATASET_COLUMN.get(dataset or "")
    if column is None:
        return []
    out = []
    for name, m in PAPER_MODELS.items():
        if column not in m.errors:
            continue
        spec = parse_name(name, 100 if column == "C100+" else 10)
        cost = count(spec)
        family = spec.family
        epochs = PAPER_EPOCHS.get((family, column), PAPER_EPOCHS[(family, "")])
        out.append(
            Reference(
                name, family, cost.params, cost.flops, m.errors[column], column, epochs, m.source
            )
        )
    return out


def pareto_data(
    rows: list[TrialRow], info: StudyInfo, metric: str, refs: list[Reference]
) -> ParetoData:
    front = pareto_front(rows, metric)
    on_front = {r.number for r in front}
    for r in front:
        r.front = (*r.front, metric) if metric not in r.front else r.front
    trained = [
        r
        for r in rows
        if r.state == TRAINED and r.val_acc is not None and getattr(r, metric) is not None
    ]
    return ParetoData(
        metric=metric,
        trained=[r for r in trained if r.number not in on_front],
        front=front,
        pruned=[
            r
            for r in rows
            if r.state == PRUNED and r.val_acc is not None and getattr(r, metric) is not None
        ],
        untrained=[
            r
            for r in rows
            if r.val_acc is None
            and getattr(r, metric) is not None
            and r.state in (OVER_BUDGET, FAILED, PRUNED)
        ],
        budgets=[b.limit for b in info.budgets if b.metric == metric],
        references=refs,
    )


def history(rows: list[TrialRow], info: StudyInfo) -> HistoryData:
    trained = sorted(
        (r for r in rows if r.state == TRAINED and r.val_acc is not None), key=lambda r: r.number
    )
    numbers, best, hv = [], [], []
    metric = info.cost
    limits = [b.limit for b in info.budgets if b.metric == metric]
    costs = [getattr(r, metric) for r in trained if getattr(r, metric) is not None]
    ref = min(limits) if limits else (int(max(costs) * 1.1) if costs else None)
    front: list[tuple[float, float]] = []
    value = 0.0
    for r in trained:
        numbers.append(r.number)
        best.append(max(best[-1], r.val_acc) if best else r.val_acc)
        c = getattr(r, metric)
        if ref and c is not None and not any(a >= r.val_acc and fc <= c for a, fc in front):
            front = [(a, fc) for a, fc in front if not (r.val_acc >= a and c <= fc)] + [
                (r.val_acc, c)
            ]
            value = hypervolume([(c, a) for a, c in front], ref)
        hv.append(value)
    pareto = info.objective == "pareto" and ref is not None
    return HistoryData(numbers, best, hv if pareto else None, metric, ref if pareto else None)


def importances(
    study: optuna.Study, rows: list[TrialRow], minimum: int = MIN_IMPORTANCE_TRIALS
) -> ImportanceData:
    """PED-ANOVA importances of the architecture parameters for validation accuracy, per family
    (the two families' parameters never occur together), over the trained trials only."""
    trained = {r.number for r in rows if r.state == TRAINED}
    by_family: dict[str, list[optuna.trial.FrozenTrial]] = {}
    all_trials = []
    for t in study.get_trials(deepcopy=False):
        if t.number in trained:
            all_trials.append(t)
            by_family.setdefault(
                str(t.user_attrs.get("family", t.params.get("family", "?"))), []
            ).append(t)
    groups, reasons = {}, []
    candidates = list(by_family.items())
    if len(by_family) > 1:
        candidates.insert(0, ("all", all_trials))
    for family, trials in candidates:
        if len(trials) < minimum:
            reasons.append(
                f"{family}: {len(trials)} trained trials, importances need at least {minimum}"
            )
            continue
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created" line
        try:
            tmp = optuna.create_study(direction="maximize")
        finally:
            optuna.logging.set_verbosity(verbosity)
        for t in trials:
            params = {k: v for k, v in t.params.items() if not (family != "all" and k == "family")}
            tmp.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={k: t.distributions[k] for k in params},
                    value=float(t.values[0]),
                )
            )
        try:
            # PED-ANOVA: no scikit-learn needed (fANOVA's random forest would need it).
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            with (
                warnings.catch_warnings()
            ):  # "some regimes have < 2 trials": the note below says so
                warnings.simplefilter("ignore", UserWarning)
                groups[family] = optuna.importance.get_param_importances(tmp, evaluator=evaluator)
        except (RuntimeError, ValueError, ZeroDivisionError) as e:
            reasons.append(f"{family}: {e}".splitlines()[0])
    return ImportanceData(groups, "; ".join(reasons))


def checkpoint_path(run_dir: str, base: Path | None = None) -> Path | None:
    """A run's checkpoint, looked up as recorded and then relative to ``base``."""
    if not run_dir:
        return None
    for root in (Path(run_dir), (base / run_dir) if base else None):
        if root is not None and (root / "checkpoint.pt").is_file():
            return root / "checkpoint.pt"
    return None


def reuse_for_front(
    front: list[TrialRow], top: int, base: Path | None = None
) -> tuple[list, list[str]]:
    """Feature-reuse matrices of the ``top`` most accurate DenseNets of the front, and a note per
    one that could not be drawn."""
    results, notes = [], []
    dense = sorted((r for r in front if r.family == "densenet"), key=lambda r: -(r.val_acc or 0))[
        :top
    ]
    for r in dense:
        path = checkpoint_path(r.run_dir, base)
        if path is None:
            notes.append(
                f"trial {r.number} ({r.name}): no checkpoint at"
                f" {r.run_dir or 'an unrecorded run directory'}"
            )
            continue
        from dnas.errors import DnasError
        from dnas.reuse import densenet_reuse
        from dnas.train import load_model

        try:
            _, model = load_model(path)
            results.append((r, densenet_reuse(model)))
        except DnasError as e:
            notes.append(f"trial {r.number} ({r.name}): {e}")
    return results, notes

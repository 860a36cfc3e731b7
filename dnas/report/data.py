"""Study -> plain data for the report's figures (the figure modules turn these into Plotly).

Nothing here draws or trains. Trials are read as ``dnas.study.TrialRecord``s: a trial's accuracy
is shown only when the trial really measured one (over-budget proposals were never built, failed
trials have none, pruned trials keep the last validation accuracy they reported, marked as such).
Fronts and hypervolumes come from ``dnas.pareto``. What cannot be read (a damaged or foreign
study, a checkpoint that is not the trial's) is left out and said in ``ReportData.warnings``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from dnas.budget import Budget, BudgetError, parse_budget
from dnas.errors import DnasError
from dnas.pareto import front, hypervolume, nondominated
from dnas.study import FAILED, OVER_BUDGET, PRUNED, STOPPED, TRAINED, TrialRecord, read
from dnas.trial_table import load_trials

MIN_IMPORTANCE_TRIALS = 10
COSTS = ("params", "flops")
# Full-training epochs behind the papers' published errors (DenseNet §4.2; WRN §3).
PAPER_EPOCHS = {("densenet", "SVHN"): 40, ("densenet", ""): 300, ("wrn", ""): 200}


@dataclass
class StudyInfo:
    name: str
    dataset: str | None
    budgets: list[Budget]
    bad_budgets: list[str]  # budget strings that did not parse (shown, not drawn)
    space: str | None
    objective: str
    cost: str  # the cost objective of a Pareto study: params or flops
    counts: dict[str, int]  # trials per state
    final: list[dict] = field(default_factory=list)  # retrained front members, test accuracy
    problems: list[str] = field(default_factory=list)  # study attributes left out


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
    trained: list[TrialRecord]  # trained, off the front
    front: list[TrialRecord]  # cheapest first
    pruned: list[TrialRecord]  # with a partial accuracy
    stopped: list[TrialRecord]  # stopped at a lower rung (multi-fidelity), its accuracy there
    untrained: list[TrialRecord]  # over budget, failed or pruned before training, with a cost
    budgets: list[int]  # limits on this metric
    references: list[Reference]
    on_front: set[int] = field(default_factory=set)  # the front's trial numbers


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


@dataclass
class ReuseData:
    """Feature reuse of the front's best DenseNets: (record, ``dnas.reuse.DenseNetReuse``)."""

    results: list[tuple[TrialRecord, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one per member not shown, and why
    failures: dict[int, str] = field(default_factory=dict)  # trial -> why its checkpoint failed


@dataclass
class ReportData:
    """Everything the study's page shows."""

    info: StudyInfo
    records: list[TrialRecord]
    pareto: dict[str, ParetoData]  # by cost metric
    history: HistoryData
    importances: ImportanceData
    reuse: ReuseData = field(default_factory=ReuseData)

    def fronts_of(self, number: int) -> tuple[str, ...]:
        """The cost metrics on whose front trial ``number`` lies."""
        return tuple(m for m, p in self.pareto.items() if number in p.on_front)

    @property
    def on_any_front(self) -> set[int]:
        return set().union(*(p.on_front for p in self.pareto.values()))

    @property
    def warnings(self) -> list[str]:
        """What was left out, and why: a line per unreadable study attribute, then one per trial
        (e.g. ``trial 7: metrics='x' is not a list of per-epoch records; left out``)."""
        lines = [f"study: {p}; left out" for p in self.info.problems]
        per_trial: dict[int, list[str]] = {}
        for r in self.records:
            if r.problems:
                per_trial[r.number] = ["; ".join(r.problems) + "; left out"]
        for number, why in self.reuse.failures.items():
            per_trial.setdefault(number, []).append(f"no feature reuse: {why}")
        lines += [f"trial {n}: {'; '.join(texts)}" for n, texts in sorted(per_trial.items())]
        return lines


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- trials ----------------------------------------------------------------------------------


# ---- the study -------------------------------------------------------------------------------


class _StudyReader:
    """Reads the study's own attributes with their types, noting each that does not fit."""

    def __init__(self, attrs: dict) -> None:
        self.attrs, self.problems = attrs, []

    def text(self, key: str) -> str | None:
        value = self.attrs.get(key)
        if value is None or isinstance(value, str):
            return value or None
        self.problems.append(f"{key}={_shown(value)} is not a string")
        return None

    def listed(self, key: str, what: str) -> list:
        value = self.attrs.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.append(f"{key}={_shown(value)} is not a list of {what}")
            return []
        return value


def study_info(study: optuna.Study, records: list[TrialRecord]) -> StudyInfo:
    try:
        r = _StudyReader(study.user_attrs)
        names = study.metric_names or []
    except (TypeError, ValueError):  # Optuna reads them as JSON: a damaged database
        r, names = _StudyReader({}), []
        r.problems.append("its attributes are not JSON (a damaged database)")
    dataset, space, objective, cost = (
        r.text(k) for k in ("dataset", "space", "objective", "cost")
    )
    if cost is not None and cost not in COSTS:
        r.problems.append(f"cost={_shown(cost)} is not one of {', '.join(COSTS)}")
        cost = None
    budgets, bad = [], []
    for text in r.listed("budgets", "budgets"):
        try:
            budgets.append(parse_budget(str(text)))
        except BudgetError:
            bad.append(str(text))
    final = r.listed("final", "retrained front members")
    records_only = [f for f in final if isinstance(f, dict)]
    if len(records_only) < len(final):
        kept = len(final) - len(records_only)
        r.problems.append(f"final: {kept} of {len(final)} entries are not records")
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.state] = counts.get(rec.state, 0) + 1
    default_cost = names[1] if len(names) == 2 and names[1] in COSTS else "params"
    return StudyInfo(
        name=study.study_name,
        dataset=dataset,
        budgets=budgets,
        bad_budgets=bad,
        space=space,
        objective=objective or ("pareto" if len(study.directions) == 2 else "accuracy"),
        cost=cost or default_cost,
        counts=counts,
        final=records_only,
        problems=r.problems,
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


# ---- the front -------------------------------------------------------------------------------


def _measured(records: list[TrialRecord], state: str, metric: str) -> list[TrialRecord]:
    return [
        r
        for r in records
        if r.state == state and r.val_acc is not None and getattr(r, metric) is not None
    ]


def pareto_front(records: list[TrialRecord], metric: str) -> list[TrialRecord]:
    """Trained trials not dominated in (validation accuracy up, ``metric`` down), cheapest
    first; of equal trials the earliest stands for them."""
    trained = sorted(_measured(records, TRAINED, metric), key=lambda r: r.number)
    return front(trained, cost=lambda r: getattr(r, metric), acc=lambda r: r.val_acc)


def pareto_data(
    records: list[TrialRecord], info: StudyInfo, metric: str, refs: list[Reference]
) -> ParetoData:
    members = pareto_front(records, metric)
    on_front = {r.number for r in members}
    return ParetoData(
        metric=metric,
        trained=[r for r in _measured(records, TRAINED, metric) if r.number not in on_front],
        front=members,
        pruned=_measured(records, PRUNED, metric),
        stopped=_measured(records, STOPPED, metric),
        untrained=[
            r
            for r in records
            if r.val_acc is None
            and getattr(r, metric) is not None
            and r.state in (OVER_BUDGET, FAILED, PRUNED)
        ],
        budgets=[b.limit for b in info.budgets if b.metric == metric],
        references=refs,
        on_front=on_front,
    )


def history(records: list[TrialRecord], info: StudyInfo) -> HistoryData:
    """Best accuracy so far and the front's hypervolume after each trained trial."""
    trained = sorted(
        (r for r in records if r.state == TRAINED and r.val_acc is not None),
        key=lambda r: r.number,
    )
    metric = info.cost
    limits = [b.limit for b in info.budgets if b.metric == metric]
    costs = [getattr(r, metric) for r in trained if getattr(r, metric) is not None]
    ref = min(limits) if limits else (int(max(costs) * 1.1) if costs else None)
    numbers, best, hv = [], [], []
    members: list[tuple[float, float]] = []  # the front so far, (cost, accuracy)
    value = 0.0
    for r in trained:
        numbers.append(r.number)
        best.append(max(best[-1], r.val_acc) if best else r.val_acc)
        c = getattr(r, metric)
        if ref and c is not None:
            candidates = [*members, (c, r.val_acc)]
            keep = nondominated(candidates)
            if keep[-1]:  # a new front member: the front and its hypervolume changed
                members = [p for p, k in zip(candidates, keep) if k]
                value = hypervolume(members, ref)
        hv.append(value)
    pareto = info.objective == "pareto" and ref is not None
    return HistoryData(numbers, best, hv if pareto else None, metric, ref if pareto else None)


# ---- importances -----------------------------------------------------------------------------


def importances(
    study: optuna.Study,
    records: list[TrialRecord],
    minimum: int = MIN_IMPORTANCE_TRIALS,
    trials: list[optuna.trial.FrozenTrial] | None = None,
) -> ImportanceData:
    """PED-ANOVA importances of the architecture parameters for validation accuracy, per family
    (the two families' parameters never occur together), over the trained trials only.

    Args:
        trials: the study's trials, as ``load_trials`` reads them; None: read them here.
    """
    by_family: dict[str, list[int]] = {}
    for r in records:
        if r.state == TRAINED:
            by_family.setdefault(r.family or "?", []).append(r.number)
    groups, reasons = {}, []
    candidates = list(by_family.items())
    if len(by_family) > 1:
        candidates.insert(0, ("all", [n for numbers in by_family.values() for n in numbers]))
    if any(len(numbers) >= minimum for _, numbers in candidates):
        trained = sorted(n for numbers in by_family.values() for n in numbers)
        held = _trained_in_memory(study, trained, trials)
        index = {n: i for i, n in enumerate(trained)}  # trial numbers in ``held``
    for group, numbers in candidates:
        if len(numbers) < minimum:
            reasons.append(
                f"{group}: {len(numbers)} trained trials, importances need at least {minimum}"
            )
            continue
        try:
            chosen = {index[n] for n in numbers}
            groups[group] = _ped_anova(held, chosen, drop_family=group != "all")
        except (RuntimeError, ValueError, ZeroDivisionError) as e:
            reasons.append(f"{group}: {e}".splitlines()[0])
    return ImportanceData(groups, "; ".join(reasons))


def _trained_in_memory(
    study: optuna.Study, numbers: list[int], trials: list[optuna.trial.FrozenTrial] | None
) -> optuna.Study:
    """A study in memory holding trials ``numbers`` (complete) of ``study``, renumbered from 0 in
    that order, with only their parameters and values. Optuna's importance evaluators read a
    study: this one never makes them reload a stored study's every trial through Optuna."""
    by_number = {t.number: t for t in (load_trials(study) if trials is None else trials)}
    held = optuna.create_study(directions=study.directions)
    held.add_trials(
        optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values)
        for t in (by_number[n] for n in numbers)
    )
    return held


def _ped_anova(study: optuna.Study, numbers: set[int], drop_family: bool) -> dict[str, float]:
    """PED-ANOVA (no scikit-learn needed, unlike fANOVA's random forest) of the parameters of
    trials ``numbers`` for their validation accuracy; the other trials are left out (NaN)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    params = sorted({k for t in trials for k in t.params} - ({"family"} if drop_family else set()))

    def loss(t: optuna.trial.FrozenTrial) -> float:  # PED-ANOVA looks for low values
        return -float(t.values[0]) if t.number in numbers else math.nan

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():  # "some regimes have < 2 trials": the page's note says so
        warnings.simplefilter("ignore", UserWarning)
        return optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=params, target=loss
        )


# ---- feature reuse of the front --------------------------------------------------------------


def checkpoint_path(run_dir: str | None, base: Path | None = None) -> Path | None:
    """A run's checkpoint, looked up as recorded and then relative to ``base``; None where there
    is none, or where the file system refuses the recorded name (too long, say)."""
    roots = [Path(run_dir)] + ([base / run_dir] if base else []) if run_dir else []
    roots = [root for root in roots if _holds(root.is_dir)]
    if not roots:
        return None  # and torch stays unimported
    from dnas.checkpoint import CHECKPOINT

    return next((root / CHECKPOINT for root in roots if _holds((root / CHECKPOINT).is_file)), None)


def _holds(test: Callable[[], bool]) -> bool:
    try:
        return test()
    except OSError:
        return False


def _densenet_reuse(rec: TrialRecord, path: Path):  # noqa: ANN202 - a DenseNetReuse
    """The reuse matrices of the trial's checkpoint, or a DnasError saying why not."""
    from dnas.checkpoint import load_model
    from dnas.reuse import densenet_reuse

    try:
        spec, model = load_model(path)
    except DnasError:
        raise
    except Exception as e:  # whatever a damaged file makes torch raise is the file's fault
        why = f"{type(e).__name__}: {e}".splitlines()[0][:160]
        raise DnasError(f"{path} is not a readable dnas checkpoint ({why})") from None
    if (rec.name is not None and spec.name != rec.name) or spec.family != "densenet":
        raise DnasError(f"{path} holds {spec.name}, not the trial's {rec.name or 'DenseNet'}")
    return densenet_reuse(model)


def front_reuse(front: list[TrialRecord], top: int, base: Path | None = None) -> ReuseData:
    """Feature-reuse matrices of the ``top`` most accurate DenseNets of the front, and a note
    for each one that could not be drawn (a missing checkpoint, or one that is not the trial's:
    damaged, foreign, another model)."""
    out = ReuseData()
    dense = [r for r in front if r.family == "densenet"]
    for r in sorted(dense, key=lambda r: -(r.val_acc or 0))[:top]:
        label = f"trial {r.number} ({r.name or '?'})"
        path = checkpoint_path(r.run_dir, base)
        if path is None:
            where = (r.run_dir or "an unrecorded run directory")[:200]
            out.notes.append(f"{label}: no checkpoint at {where}")
            continue
        try:
            out.results.append((r, _densenet_reuse(r, path)))
        except DnasError as e:
            out.notes.append(f"{label}: {e}")
            out.failures[r.number] = str(e)
    return out


# ---- all of it -------------------------------------------------------------------------------


def build_report_data(
    study: optuna.Study, *, reuse_top: int = 2, base: Path | None = None
) -> ReportData:
    """Everything the page shows, as plain data.

    Args:
        reuse_top: how many of the front's most accurate DenseNets get feature-reuse heatmaps
            (their checkpoints must still exist).
        base: where relative run directories are also looked for (``dnas search`` records them
            relative to its working directory), e.g. the directory that holds ``studies/``.
    """
    trials = load_trials(study)
    records = [read(t) for t in trials]
    info = study_info(study, records)
    refs = references(info.dataset)
    pareto = {m: pareto_data(records, info, m, refs) for m in COSTS}
    reuse = front_reuse(pareto[info.cost].front, reuse_top, base) if reuse_top else ReuseData()
    return ReportData(
        info,
        records,
        pareto,
        history(records, info),
        importances(study, records, trials=trials),
        reuse,
    )

"""One search trial: an Optuna proposal -> spec -> exact cost -> (if within budget) training.

The budget is a hard constraint known before training: each proposal's cost is computed in
closed form first; an over-budget proposal is never built and is told to the sampler as an
infeasible trial (``trial.set_constraint``), so the sampler learns the infeasible region for free.
What the trial produced is written through ``dnas.study``'s record functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from dnas import study as records
from dnas.budget import Budget
from dnas.config import Objective, SearchConfig
from dnas.cost import Cost, count
from dnas.datasets import DatasetInfo
from dnas.space import ALL, SPACES
from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, Spec, WRNSpec

EpochCallback = Callable[[optuna.Trial, int, dict], None]


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


class StudyFull(optuna.TrialPruned):
    """Another worker took the study's last slot between this one's check and its proposal."""


@dataclass
class TrialRunner:
    """Optuna's objective for one worker: ``study.optimize(TrialRunner(...))``."""

    config: SearchConfig
    data: object  # dnas.data.DataSplits, loaded once per worker
    budgets: tuple[Budget, ...]
    device_name: str
    count_trained: Callable[[optuna.Study, int], int]  # trials trained, other than number N
    on_epoch: EpochCallback = lambda *a: None
    rejected: int = 0

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # a bad proposal, an OOM, a bug: recorded, the study goes on
            records.record_failure(trial, f"{type(e).__name__}: {e}")
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        from dnas.train import TrainConfig, train

        info = self.data.info
        spec = suggest_spec(trial, self.config.space.value, info)
        cost = count(spec, (info.height, info.width))
        v = violation(self.budgets, cost)
        records.record_proposal(trial, spec.name, spec.family, cost.params, cost.flops, v)
        trial.set_constraint("budget", v)
        pareto = self.config.objective is Objective.pareto
        objective_cost = float(getattr(cost, self.config.cost.value))
        if v > 0:
            # Never built: the sampler sees an infeasible trial and learns from it for free.
            self.rejected += 1
            records.record_rejected(trial, "over budget")
            return (0.0, objective_cost) if pareto else 0.0
        target = self.config.trials
        if target is not None and self.count_trained(trial.study, trial.number) >= target:
            trial.study.stop()
            records.record_skipped(trial, "the study already has its trials")
            raise StudyFull("the study already has its trials")
        run_dir = records.trial_dir(self.config.trial_root, trial.number).resolve()
        records.record_started(trial, self.device_name, run_dir)
        tcfg = TrainConfig(
            recipe="fast",
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            seed=self.config.seed + trial.number,
            device=self.data.device.type,
            train_subset=self.config.train_subset,
            val_size=self.config.val_size,
        )

        def on_epoch(epoch: int, metrics: dict) -> None:
            self.on_epoch(trial, epoch, metrics)
            if not pareto:  # Optuna prunes single-objective studies only
                trial.report(metrics["val_acc"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        result = train(spec, self.data, tcfg, run_dir=run_dir, on_epoch=on_epoch)
        records.record_result(trial, result.metrics, result.wall_time_s, result.images_per_s)
        acc = result.final_val_acc
        if result.diverged or acc is None or math.isnan(acc):
            raise RuntimeError(result.reason or "no validation accuracy")
        return (float(acc), objective_cost) if pareto else float(acc)

"""One search trial: an Optuna proposal -> spec -> exact cost -> training, rung by rung.

Proposals are within budget by construction (``dnas.proposal``); the budget is still checked on
each proposal's exact cost, and one over it is never built and is told to the sampler as an
infeasible trial (``trial.set_constraint``). What the trial produced is written through
``dnas.study``'s record functions.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from dnas import study as records
from dnas.budget import Budget, needs_memory
from dnas.config import Objective, SearchConfig
from dnas.cost import Cost, count
from dnas.fidelity import Decision, decide
from dnas.proposal import FeasibleSpace
from dnas.spec import Spec

if TYPE_CHECKING:
    from dnas.train import TrainConfig


def violation(budgets: tuple[Budget, ...], cost: Cost) -> float:
    """Largest relative excess over a budget: <= 0 feasible (Optuna's constraint convention)."""
    return max(b.used(cost) / b.limit - 1.0 for b in budgets)


class StudyFull(optuna.TrialPruned):
    """Another worker took the study's last slot between this one's check and its proposal."""


class CutByTimeLimit(Exception):
    """``--timeout`` passed while the trial trained. The cut says nothing of the candidate: like
    an interruption, it does not count towards ``--trials`` and is queued again (a rerun of the
    command goes on with its run: ``TrialRunner._go_on``), where a pruned trial would stay
    half-trained for good. A retry cut again without finishing an epoch, though it had half
    the limit or more, is longer than the limit allows, and is pruned (queued again, it would
    take every rerun's time)."""


@dataclass(frozen=True)
class EpochEvent:
    """What a progress display needs after each epoch of a trial."""

    number: int  # the trial
    name: str
    epoch: int  # 1-based
    epochs: int  # the top rung
    val_acc: float | None
    images_per_s: float


EpochCallback = Callable[[EpochEvent], None]


@dataclass
class TrialRunner:
    """Optuna's objective for one worker: ``study.optimize(TrialRunner(...))``.

    A trial proposes a candidate within budget (``dnas.proposal``), reuses the result of an
    identical candidate the study already trained, and otherwise trains it rung by rung
    (``dnas.fidelity``): from the checkpoint of the last rung, under a learning-rate schedule
    defined over the top rung, so a candidate that reaches the top rung has exactly the weights
    of one trained there directly.
    """

    config: SearchConfig
    data: object  # dnas.data.DataSplits, loaded once per worker
    budgets: tuple[Budget, ...]
    device_name: str
    count_trained: Callable[[optuna.Study, int], int]  # trials trained, other than number N
    on_epoch: EpochCallback = lambda e: None
    deadline: float | None = None  # time.monotonic() after which training stops
    rejected: int = 0  # proposals the budget guard refused (zero unless the budget is odd)
    duplicates_in_a_row: int = 0
    space: FeasibleSpace = field(init=False)
    trial: optuna.Trial | None = field(default=None, init=False)  # the last one started
    epochs_trained: int = field(default=0, init=False)  # by the last trial, in this process
    time_left: float | None = field(default=None, init=False)  # before the deadline, at its start

    def __post_init__(self) -> None:
        cfg = self.config
        self.space = FeasibleSpace(cfg.space.value, self.data.info, self.budgets,
                                   cfg.train_batch_size, self.data.device.type)  # fmt: skip

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.trial, self.epochs_trained = trial, 0
        self.time_left = None if self.deadline is None else self.deadline - time.monotonic()
        records.record_worker(trial)  # first: a retried trial inherits its dead original's
        try:
            return self._run(trial)
        except optuna.TrialPruned as e:
            records.record_pruned(trial, str(e))
            raise
        except CutByTimeLimit as e:
            before = records.cut_before(trial)
            if before is not None and self._too_long():
                records.record_pruned(trial, f"{e} with no epoch finished in half the limit or"
                                      f" more, as trial {before} was cut before it: not queued"
                                      " again")  # fmt: skip
                raise optuna.TrialPruned(str(e)) from None
            records.record_interrupted(trial, f"{e}; queued again", time_limit=True)
            raise
        except Exception as e:  # a bad proposal, an OOM, a bug: recorded, the study goes on
            records.record_failure(trial, f"{type(e).__name__}: {e}")
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a rerun trains this candidate again
            if records.started(trial):
                records.record_interrupted(trial)
            raise

    def _too_long(self) -> bool:
        """Whether the trial just cut is longer than the time limit allows: it finished no epoch
        though it had half the limit or more (one started late says nothing)."""
        limit = self.config.timeout_s or 0.0
        return self.epochs_trained == 0 and (self.time_left or 0.0) >= limit / 2

    def release(self) -> None:
        """After Ctrl-C or SIGTERM: the last trial, if the interruption came before Optuna
        recorded its end, is failed (queued again if it trained), never left running."""
        trial = self.trial
        if trial is None:
            return
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        if frozen.state is not optuna.trial.TrialState.RUNNING:
            return
        if records.started(frozen) and "interrupted" not in frozen.user_attrs:
            records.record_interrupted(trial)
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _values(self, acc: float, cost: float) -> float | tuple[float, float]:
        return (acc, cost) if self.config.objective is Objective.pareto else acc

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        info = self.data.info
        spec = self.space.suggest(trial)
        batch = self.config.train_batch_size if needs_memory(self.budgets) else None
        cost = count(spec, (info.height, info.width), batch, self.data.device.type)
        v = violation(self.budgets, cost)
        records.record_proposal(trial, spec.name, spec.family, cost.params, cost.flops, v,
                                self.config.training_key, cost.memory)  # fmt: skip
        records.record_constraint(trial, v)
        objective_cost = float(getattr(cost, self.config.cost.value))
        if v > 0:  # the guard: the proposal is never built, the sampler learns it for free
            self.rejected += 1
            records.record_rejected(trial, "over budget")
            return self._values(0.0, objective_cost)
        same = self._same_candidate(trial, spec.name)
        if same is not None:
            self.duplicates_in_a_row += 1
            if same.state == records.RUNNING:
                records.record_skipped(trial, f"the same candidate as trial {same.number},"
                                       " which is still training")  # fmt: skip
                raise optuna.TrialPruned(f"the same candidate as trial {same.number}")
            records.record_reused(trial, same.number)
            return self._values(same.val_acc, objective_cost)
        self.duplicates_in_a_row = 0
        target = self.config.trials
        if target is not None and self.count_trained(trial.study, trial.number) >= target:
            trial.study.stop()
            records.record_skipped(trial, "the study already has its trials")
            raise StudyFull("the study already has its trials")
        run_dir = records.trial_dir(self.config.trial_root, trial.number).resolve()
        records.record_started(trial, self.device_name, run_dir)
        acc = self._train(trial, spec, objective_cost, run_dir)
        return self._values(acc, objective_cost)

    def queue_untried(self, study: optuna.Study) -> Spec | None:
        """A candidate within budget that the study has not trained (nor is training) with these
        settings, drawn at random (seeded) and queued as the next trial: after MAX_DUPLICATES
        proposals in a row of candidates it had, a sampler keeping to what it knows is no sign
        that the space is exhausted (under 1,300 parameters TPE proposed one of two candidates
        30 times). None when there is none: then it is. A candidate queued before, whatever
        became of it (failed, pruned, trained with other settings), is not queued again: Optuna
        would skip the same values, and the search would never end."""
        trials = study.get_trials(deepcopy=False)
        done, key = (records.TRAINED, records.STOPPED, records.RUNNING), self.config.training_key
        recs = map(records.read, trials)
        tried = {r.name for r in recs if r.settings == key and r.state in done}
        queued = [t.system_attrs.get("fixed_params", t.params) for t in trials]
        untried = [s for s in self.space.candidates() if s.name not in tried]
        untried = sorted((s for s in untried if self.space.params_for(s) not in queued),
                         key=lambda s: s.name)  # fmt: skip
        if not untried:
            return None
        spec = random.Random(f"{self.config.seed} {len(trials)}").choice(untried)
        study.enqueue_trial(self.space.params_for(spec))
        self.duplicates_in_a_row = 0
        return spec

    def _same_candidate(self, trial: optuna.Trial, name: str) -> records.TrialRecord | None:
        """An earlier trial of the same architecture and training settings that trained (to the
        top rung, else to the rung where it stopped) or is training; None if there is none."""
        found = []
        for t in trial.study.get_trials(deepcopy=False):
            rec = records.read(t)
            if rec.number == trial.number or rec.name != name:
                continue
            if rec.settings == self.config.training_key and (
                rec.state in (records.TRAINED, records.STOPPED)
                or (rec.state == records.RUNNING and rec.started and not records.queued_again(t))
            ):
                found.append(rec)
        order = (records.TRAINED, records.STOPPED, records.RUNNING)
        return min(found, key=lambda r: (order.index(r.state), r.number), default=None)

    def _train(self, trial: optuna.Trial, spec: Spec, cost: float, run_dir: Path) -> float:
        """Train rung by rung; the accuracy at the rung where the candidate stopped. A trial
        queued again for a lost one goes on with its run (``_go_on``)."""
        from dnas.train import TrainConfig, train

        config = self.config
        pareto = config.objective is Objective.pareto
        rungs = config.rungs if pareto else (config.epochs,)  # single objective: Hyperband
        tcfg = TrainConfig(recipe="fast", epochs=config.epochs, batch_size=config.batch_size,
                           lr=config.lr, seed=config.seed + trial.number,
                           device=self.data.device.type, train_subset=config.train_subset,
                           val_size=config.val_size)  # fmt: skip
        tcfg, before, promoted = self._go_on(trial, spec, tcfg, run_dir, rungs[-1])
        done = [len(before)]  # epochs completed

        def on_epoch(epoch: int, metrics: dict) -> None:
            done[0] = epoch
            self.epochs_trained += 1
            self.on_epoch(EpochEvent(trial.number, spec.name, epoch, config.epochs,
                                     metrics["val_acc"], metrics["images_per_s"]))  # fmt: skip
            if not pareto:  # Optuna prunes single-objective studies only
                trial.report(metrics["val_acc"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        if not pareto:  # Hyperband judges the lost run's epochs as they came, one by one
            for m in before:
                trial.report(m["val_acc"], m["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {m['epoch']}")
        # The rungs the lost run reached: passed if it trained on, or was promoted there; at
        # the last, it may have been lost before the decision, which is then taken now.
        reached = {r: m["val_acc"] for m in before for r in rungs if m.get("epoch") == r}
        passed = {r for r in reached if r < len(before) or any(p.startswith(f"at epoch {r},")
                                                               for p in promoted)}  # fmt: skip
        promoted = [p for p in promoted if any(p.startswith(f"at epoch {r},") for r in passed)]
        if reached:
            records.record_rung(trial, reached)
            records.record_promoted(trial, promoted)
        for i, rung in enumerate(rungs):
            if rung in passed:
                continue
            if rung in reached:
                acc = reached[rung]
            else:
                result = train(spec, self.data, tcfg, run_dir=run_dir,
                               resume=i > 0 or bool(before), on_epoch=on_epoch,
                               should_stop=lambda r=rung: done[0] >= r,
                               on_progress=self._check_time)  # fmt: skip
                # each rung resumes the run: its wall time covers the rungs before it too
                records.record_result(trial, result.metrics, result.wall_time_s,
                                      result.images_per_s)  # fmt: skip
                acc = result.final_val_acc
                if result.diverged or acc is None or math.isnan(acc):
                    raise RuntimeError(result.reason or "no validation accuracy")
                reached[rung] = acc
                records.record_rung(trial, reached)
            if rung == rungs[-1]:
                break
            decision = self._decide(trial, rung, acc, cost)
            if not decision.promote:
                records.record_stopped(trial, f"at epoch {rung}, {decision}")
                break
            promoted.append(f"at epoch {rung}, {decision}")
            records.record_promoted(trial, promoted)
        return acc

    def _go_on(
        self, trial: optuna.Trial, spec: Spec, tcfg: TrainConfig, run_dir: Path, epochs: int
    ) -> tuple[TrainConfig, list[dict], list[str]]:
        """For a trial queued again for a lost one (interrupted, cut by the time limit, or
        failed with its worker), take over that trial's run folder, so that training goes on
        from its last completed epoch with its seed, as if never stopped. Returns the training
        settings, the epochs done and the lost trial's promotions; for any other trial, or a
        lost run that cannot go on (none, another run's, damaged, or done), ``tcfg`` and
        nothing done."""
        from dnas.train import resume_point

        if run_dir.exists():
            return tcfg, [], []
        trials = trial.study.get_trials(deepcopy=False)
        for lost in records.lost_runs(trials[trial.number]):
            old = records.trial_dir(self.config.trial_root, lost)
            point = None if old.is_symlink() else resume_point(old, spec, tcfg, self.data)
            if point is None or not 0 < len(point[1]) < epochs:
                continue
            seed, metrics = point
            try:
                os.replace(old, run_dir)
            except OSError:  # gone meanwhile, or it cannot move (permissions)
                continue
            records.record_continued(trial, lost, len(metrics))
            return replace(tcfg, seed=seed), metrics, list(records.read(trials[lost]).promoted)
        return tcfg, [], []

    def _check_time(self, epoch: int, step: int, steps: int, running: dict) -> None:
        """Called every few training steps: past the deadline (``--timeout``), the trial ends
        here (``CutByTimeLimit``)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CutByTimeLimit(f"cut by the time limit at epoch {epoch}, step {step}")

    def _decide(self, trial: optuna.Trial, rung: int, acc: float, cost: float) -> Decision:
        """Successive halving on the Pareto ranks among every candidate at this rung so far."""
        metric = self.config.cost.value
        points = {trial.number: (cost, acc)}
        for rec in records.read_all(trial.study):  # not a lost one: its retry stands for it
            if (rec.number != trial.number and rung in rec.rungs and rec.state != records.LOST
                    and rec.settings == self.config.training_key
                    and getattr(rec, metric) is not None):  # fmt: skip
                points[rec.number] = (float(getattr(rec, metric)), rec.rungs[rung])
        return decide(trial.number, points, self.config.reduction_factor)

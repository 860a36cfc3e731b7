"""What a search leaves: its summary (the counts, the front against the study's cost metric),
the front's checkpoints (every other trial's pruned), and the front retrained and tested.

Reads the study through ``dnas.study``'s typed records; written by ``dnas.search`` at the end
of every run, read by the command line (``--json`` prints ``SearchSummary.to_dict()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna

from dnas import pareto
from dnas import study as records
from dnas.config import DATA_SEED, Objective, SearchConfig
from dnas.errors import partial_writes
from dnas.study import TrialRecord

MAX_DUPLICATES = 30  # proposals in a row of candidates already trained: nothing new is coming


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
    cost: str  # the metric the front trades accuracy against
    device: str
    trained: int  # candidates that started training (all rungs)
    complete: int  # trained to the top rung: the only results on the front
    stopped: int  # stopped at a lower rung by successive halving
    failed: int
    lost: int  # interrupted, cut by the time limit or died with their worker: queued again
    pruned: int
    rejected_over_budget: int  # proposals the budget guard refused (the target is zero)
    reused: int  # duplicates answered with an earlier trial's result, not retrained
    retrained_duplicates: int  # trained candidates identical to an earlier trained one
    exhausted: bool  # the last MAX_DUPLICATES proposals were all candidates already trained
    rungs: list[int]  # successive-halving rungs (epochs); [] for Hyperband (--objective accuracy)
    front: list[FrontMember]
    best: FrontMember | None
    wall_time_s: float
    first_failure: str | None = None
    final: list[dict] = field(default_factory=list)
    report: str | None = None  # path of the HTML report

    def to_dict(self) -> dict:
        return asdict(self)


def _member(r: TrialRecord) -> FrontMember:
    return FrontMember(r.number, r.name or "?", r.params or 0, r.flops or 0, r.val_acc or 0.0,
                       r.epochs or 0, r.wall_time_s or 0.0, r.run_dir or "")  # fmt: skip


def summarize(study: optuna.Study, config: SearchConfig, wall_time_s: float) -> SearchSummary:
    recs = records.read_all(study)
    metric = config.cost.value
    done = [r for r in recs if r.state == records.TRAINED and getattr(r, metric) is not None
            and r.settings in (None, config.training_key)]  # fmt: skip
    members = [_member(r) for r in pareto.front(done, lambda r: getattr(r, metric),
                                                lambda r: r.val_acc)]  # fmt: skip
    failures = [r.note for r in recs if r.state == records.FAILED]
    final = study.user_attrs.get("final")
    return SearchSummary(
        study=config.study_name,
        storage=config.storage_url,
        dataset=config.dataset,
        budgets=list(config.budgets),
        cost=metric,
        device=config.device.value,
        trained=sum(
            r.started and r.state != records.LOST and r.settings in (None, config.training_key)
            for r in recs
        ),  # fmt: skip
        complete=len(done),
        stopped=sum(r.state == records.STOPPED for r in recs),
        failed=len(failures),
        lost=sum(r.state == records.LOST for r in recs),
        pruned=sum(r.state == records.PRUNED for r in recs),
        rejected_over_budget=sum(r.state == records.OVER_BUDGET for r in recs),
        reused=sum(r.state == records.REUSED for r in recs),
        retrained_duplicates=_retrained_duplicates(recs),
        exhausted=_trailing_duplicates(recs) >= MAX_DUPLICATES,
        rungs=list(config.rungs) if config.objective is Objective.pareto else [],
        front=members,
        best=max(members, key=lambda m: (m.val_acc, -m.params), default=None),
        wall_time_s=wall_time_s,
        first_failure=failures[0] if failures else None,
        final=final if isinstance(final, list) else [],
    )


def _retrained_duplicates(recs: list[TrialRecord]) -> int:
    """Trials that trained a candidate (architecture and settings) an earlier trial trained."""
    seen, n = set(), 0
    for r in recs:
        if r.started and r.state not in (records.FAILED, records.LOST, records.RUNNING):
            n += (r.name, r.settings) in seen
            seen.add((r.name, r.settings))
    return n


def _trailing_duplicates(recs: list[TrialRecord]) -> int:
    """How many of the study's last proposals were candidates it already had."""
    n = 0
    for r in reversed(recs):
        if r.state == records.REUSED or (
            r.state == records.SKIPPED and "same candidate" in r.note
        ):
            n += 1
        elif r.state != records.SKIPPED:
            break
    return n


def prune_checkpoints(root: Path, keep: set[int]) -> int:
    """Delete the checkpoints in this study's own trial folders, except those of trials in
    ``keep``; paths recorded in the database are never followed. Returns how many went."""
    from dnas.checkpoint import CHECKPOINT

    removed = 0
    if not root.is_dir():
        return 0
    for folder in root.glob("trial-*"):
        number = folder.name.removeprefix("trial-")
        if not number.isdigit() or int(number) in keep or folder.is_symlink():
            continue
        for f in (folder / CHECKPOINT, *partial_writes(folder / CHECKPOINT)):
            if f.is_file() and not f.is_symlink():
                f.unlink(missing_ok=True)  # another worker may be pruning the same folder
                removed += 1
    return removed


def retrain(
    study: optuna.Study,
    config: SearchConfig,
    front: list[FrontMember],
    log: Callable[[str], None] = lambda s: None,
) -> list[dict]:
    """Retrain the K most accurate front members for ``final_epochs`` on the full training split
    (no ``train_subset``; validation held out) and evaluate on the test set; recorded in the
    study's user attrs under 'final', apart from the validation numbers. ``log`` hears of each
    model and each epoch."""
    from dnas.data import load_data
    from dnas.names import parse_name
    from dnas.train import TrainConfig, train

    data = load_data(config.dataset, config.data_dir, config.device.value, config.val_size,
                     None, DATA_SEED)  # fmt: skip
    results = []
    chosen = sorted(front, key=lambda m: -m.val_acc)[: config.retrain_top]
    for i, m in enumerate(chosen, 1):
        epochs = f"{config.final_epochs} epoch{'s' * (config.final_epochs != 1)}"
        log(f"final training {i}/{len(chosen)}: {m.name} for {epochs} on all {len(data.train_y):,}"
            " training images (validation held out), then the test set")  # fmt: skip
        spec = parse_name(m.name, data.info.num_classes, data.info.channels)
        tcfg = TrainConfig(recipe="fast", epochs=config.final_epochs, batch_size=config.batch_size,
                           lr=config.lr, seed=config.seed, device=config.device.value,
                           eval_test=True)  # fmt: skip
        run_dir = config.final_run_dir(m.name)
        r = train(spec, data, tcfg, run_dir=run_dir, resume=(run_dir / "checkpoint.pt").exists(),
                  on_epoch=lambda e, row, name=m.name: log(
                      f"  {name}: epoch {e}/{config.final_epochs} val acc {row['val_acc']:.4f}"
                      f" ({row['images_per_s']:.0f} img/s)"))  # fmt: skip
        results.append({"name": m.name, "trial": m.number, "epochs": config.final_epochs,
                        "params": m.params, "search_val_acc": m.val_acc,
                        "final_val_acc": r.final_val_acc, "test_acc": r.test_acc,
                        "run_dir": str(run_dir)})  # fmt: skip
    study.set_user_attr("final", results)
    return results

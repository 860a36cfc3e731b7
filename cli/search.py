"""`dnas search`: Optuna trials that really train candidates, under a hard budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dnas.config import CostMetric, Objective, Sampler, SearchConfig, Space
from dnas.device import Device

from .common import a_folder, a_path, err, out, print_json, user_errors

D = SearchConfig()  # the defaults live in the library; --help shows them


def _opt(
    help: str, default: object = None, *names: str, parser: Callable | None = None
) -> typer.models.OptionInfo:
    """An option whose default is the library's (shown in --help) unless given here or in a
    study file; "[default: ...]" in ``help`` describes a default computed later."""
    shown = default.value if hasattr(default, "value") else default
    if shown is not None:
        help = f"{help} [default: {shown}]"
    return typer.Option(*names, help=help.replace("[", "\\["), show_default=False, parser=parser)


BUDGET_HELP = (
    "1M-params, 300M-flops, 2G-memory (predicted training memory at --batch-size, G = GiB),"
    " ...; repeat: all must hold."
)


def search(
    budget: Annotated[
        Optional[list[str]],
        _opt(BUDGET_HELP, D.budgets[0], "--budget", "-b"),
    ] = None,
    space: Annotated[Optional[Space], _opt("Design space.", D.space)] = None,
    dataset: Annotated[
        Optional[str],
        _opt("cifar10, cifar100, svhn, fashion-mnist, mnist or imagefolder:PATH.", D.dataset),
    ] = None,
    trials: Annotated[
        Optional[int], _opt("Trained trials the study should reach (all runs together).", D.trials)
    ] = None,
    timeout: Annotated[
        Optional[str],
        _opt(
            "Stop after this long (2h, 30m, 90s): no trial starts after it; one still training"
            " is cut and queued again, and a rerun goes on from its last completed epoch."
        ),  # fmt: skip
    ] = None,
    epochs: Annotated[
        Optional[int], _opt("Epochs of a candidate's full training (the top rung).", D.epochs)
    ] = None,
    min_epochs: Annotated[
        Optional[int],
        _opt(
            "The first rung of multi-fidelity successive halving, e.g. 1 [default: --epochs,"
            " which turns it off: on the fidelity study's task epoch 1 of 3 ranks candidates"
            " worse than their size]; --objective accuracy: Hyperband's minimum [default: 1].",
            D.min_epochs,
        ),
    ] = None,
    reduction_factor: Annotated[
        Optional[int],
        _opt(
            "Rungs grow by this factor; the best 1/factor at a rung continue.",
            D.reduction_factor,
        ),
    ] = None,
    train_subset: Annotated[
        Optional[int], _opt("Training images per trial, class-stratified [default: all].")
    ] = None,
    val_size: Annotated[
        Optional[int],
        _opt("Validation images carved from train, fixed seed [default: the dataset's]."),
    ] = None,
    batch_size: Annotated[
        Optional[int], _opt("Batch size per trial [default: the fast recipe's].")
    ] = None,
    lr: Annotated[
        Optional[float], _opt("Peak learning rate [default: the fast recipe's].")
    ] = None,
    objective: Annotated[
        Optional[Objective],
        _opt(
            "pareto: accuracy vs cost; accuracy: under the budget, Hyperband-pruned.", D.objective
        ),
    ] = None,
    cost: Annotated[Optional[CostMetric], _opt("The cost objective.", D.cost)] = None,
    sampler: Annotated[
        Optional[Sampler], _opt("auto is constrained multivariate TPE.", D.sampler)
    ] = None,
    initial_design: Annotated[
        Optional[int],
        _opt(
            "A new Pareto study with the TPE sampler first trains this many candidates spread"
            " over the cost axis (log scale), smallest first; 0: none.",
            D.initial_design,
        ),
    ] = None,
    study: Annotated[
        Optional[str],
        _opt("Study name: letters, digits, - _ . [default: SPACE-DATASET-BUDGETS]."),
    ] = None,
    storage: Annotated[
        Optional[str],
        _opt(
            "Optuna storage URL, e.g. postgresql://user@host/db"
            " [default: sqlite:///studies/STUDY.db]."
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        _opt(
            "Worker processes on this machine, at most one per CPU core (or visible GPU).",
            D.workers,
        ),
    ] = None,
    device: Annotated[
        Optional[Device], _opt("auto: CUDA when a GPU is visible, else the CPU.", D.device)
    ] = None,
    seed: Annotated[Optional[int], _opt("Sampler and training seed.", D.seed)] = None,
    data_dir: Annotated[Optional[str], _opt("Dataset cache directory.", parser=a_folder)] = None,
    studies_dir: Annotated[
        Optional[str],
        _opt("Where the study database and trial folders go.", D.studies_dir, parser=a_folder),
    ] = None,
    reports_dir: Annotated[
        Optional[str],
        _opt("The HTML report goes to DIR/STUDY/index.html.", D.reports_dir, parser=a_folder),
    ] = None,
    retrain_top: Annotated[
        Optional[int], _opt("Retrain the K best front members and test them.", D.retrain_top)
    ] = None,
    final_epochs: Annotated[
        Optional[int], _opt("Epochs for --retrain-top.", D.final_epochs)
    ] = None,
    config: Annotated[
        Optional[Path],
        _opt(
            "A study file, e.g. studies/densenet-bc-1m-cifar10.toml; options given here"
            " override it.",
            parser=a_path,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Search DenseNet/WRN architectures under a budget; rerun the same command to resume."""
    given = {k: v for k, v in locals().items() if v is not None and k not in ("config", "as_json")}
    with user_errors():
        from dnas.config import make_config, parse_duration, read_toml
        from dnas.search import search as run_search

        values = read_toml(config) if config else {}
        if "budget" in given:
            values["budgets"] = tuple(given.pop("budget"))
        if "timeout" in given:
            values["timeout_s"] = parse_duration(given.pop("timeout"))
        values.update(given)
        cfg = make_config(values, f"--config {config}" if config else "")
        progress = _Progress(cfg)
        summary = run_search(cfg, log=progress.log, on_trial=progress.trial,
                             on_epoch=progress.epoch)  # fmt: skip
        if as_json:
            print_json(summary.to_dict())
        else:
            _show(summary)


class _Progress:
    """One line per finished trial and per epoch on stderr."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg

    def log(self, text: str) -> None:
        err.print(text, highlight=False)

    def epoch(self, e) -> None:  # noqa: ANN001 - a dnas.trial.EpochEvent
        acc = "-" if e.val_acc is None else f"{e.val_acc:.4f}"
        err.print(
            f"  trial {e.number} {e.name}: epoch {e.epoch}/{e.epochs} val acc {acc}"
            f" ({e.images_per_s:.0f} img/s)",
            highlight=False,
        )

    def trial(self, e) -> None:  # noqa: ANN001 - a dnas.worker.TrialEvent
        r = e.record
        if r.state == "over budget":
            what = f"rejected {r.name} ({r.params:,} params, {r.flops:,} flops): over budget"
        elif r.state in ("trained", "stopped"):
            what = (
                f"{r.name} ({r.params:,} params): val acc {r.val_acc:.4f} after"
                f" {r.epochs} epoch{'s' * (r.epochs != 1)} in {r.wall_time_s:.0f}s"
            )
            if r.resumed_at_epoch is not None:
                what += f" (trial {r.continued}'s run, gone on after epoch {r.resumed_at_epoch})"
            if r.state == "stopped":
                what += f", {r.note}"
        elif r.state == "reused":
            what = f"{r.name}: {r.note} (val acc {r.val_acc:.4f})"
        else:
            note = r.note if r.note.startswith(r.state) else f"{r.state} {r.note}".strip()
            what = f"{r.name or '?'}: {note}"  # not "pruned pruned after epoch 1"
        best = "best -" if e.best_acc is None else f"best {e.best_acc:.4f}"
        count = f"{e.trained}/{e.target}" if e.target else f"{e.trained}"
        err.print(f"[{count} started] trial {r.number}: {what} | {best}", highlight=False)


def _show(s) -> None:  # noqa: ANN001 - a SearchSummary
    out.print(f"study {s.study} ({s.storage}) on {s.dataset}, budget {' and '.join(s.budgets)}")
    rungs = "Hyperband"
    if s.rungs:
        rungs = f"rungs of {'/'.join(map(str, s.rungs))} epoch{'s' * (s.rungs[-1] != 1)}"
    lost = f", {s.lost} interrupted, cut by the time limit or lost with their worker"
    out.print(
        f"trained {s.trained} candidate{'s' * (s.trained != 1)} in all (this run"
        f" {s.wall_time_s:.0f} s) on {s.device} ({rungs}):"
        f" {s.complete} to the top rung, {s.stopped} stopped at a lower rung, {s.failed} failed,"
        f" {s.pruned} pruned{lost + ' (queued again)' if s.lost else ''}"
    )
    out.print(
        f"over-budget proposals: {s.rejected_over_budget}; duplicates reused, not retrained:"
        f" {s.reused}; retrained duplicates: {s.retrained_duplicates}"
    )
    if s.exhausted:
        out.print("the search stopped early: it has trained every candidate within budget")
    cost = "parameters" if s.cost == "params" else "FLOPs"
    table = Table("trial", "name", "params", "FLOPs (fvcore)", "val acc", "epochs", "time s",
                  title=f"Pareto front (validation accuracy vs {cost})")  # fmt: skip
    for m in s.front:
        table.add_row(str(m.number), m.name, f"{m.params:,}", f"{m.flops:,}", f"{m.val_acc:.4f}",
                      str(m.epochs), f"{m.wall_time_s:.0f}")  # fmt: skip
    out.print(table)
    if s.best:
        out.print(
            f"best under budget: {s.best.name} ({s.best.params:,} params), val acc"
            f" {s.best.val_acc:.4f}; checkpoint in {s.best.run_dir}"
        )
    for f in s.final:
        out.print(
            f"retrained {f['name']} for {f['epochs']} epochs: test acc {f['test_acc']:.4f}"
            f" (val {f['final_val_acc']:.4f})"
        )
    out.print(f"report: {s.report}")


def register(app: typer.Typer) -> None:
    app.command()(search)

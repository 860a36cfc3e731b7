"""`dnas search`: Optuna trials that really train candidates, under a hard budget."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import err, out, print_json, user_errors


def parse_duration(text: str) -> float:
    """'2h', '30m', '90s', '1h30m' or plain seconds."""
    from dnas.errors import DnasError

    m = re.fullmatch(
        r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip()
    )
    if not text.strip() or not m or not any(m.groups()):
        raise DnasError(f"bad duration {text!r}: write e.g. 2h, 30m, 90s or 1h30m")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def load_config_file(path: Path) -> dict:
    """A study definition (TOML): keys are SearchConfig fields (timeout as a duration string)."""
    import dataclasses

    from dnas.errors import DnasError
    from dnas.search import SearchConfig

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DnasError(
            f"--config {path}: no such file (see studies/*.toml for examples)"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise DnasError(f"--config {path}: not valid TOML ({e})") from None
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    if "timeout" in data:
        data["timeout_s"] = parse_duration(str(data.pop("timeout")))
    if "budget" in data:
        b = data.pop("budget")
        data["budgets"] = tuple(b if isinstance(b, list) else [b])
    unknown = set(data) - fields
    if unknown:
        raise DnasError(
            f"--config {path}: unknown keys {sorted(unknown)}; known: {sorted(fields)}"
        )
    return data


def search(
    budget: Annotated[
        Optional[list[str]],
        typer.Option("--budget", "-b", help="1M-params, 300M-flops, ...; repeat: all must hold."),
    ] = None,
    space: Annotated[
        Optional[str], typer.Option(help="densenet, densenet-bc, wrn or all [default: all].")
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(
            help="cifar10, cifar100, svhn, fashion-mnist, mnist or imagefolder:PATH [default: cifar10]."
        ),
    ] = None,
    trials: Annotated[
        Optional[int], typer.Option(help="Trained trials the study should reach [default: 20].")
    ] = None,
    timeout: Annotated[
        Optional[str], typer.Option(help="Stop starting trials after this long: 2h, 30m, 90s.")
    ] = None,
    epochs: Annotated[
        Optional[int], typer.Option(help="Epochs per trial (fidelity) [default: 3].")
    ] = None,
    train_subset: Annotated[
        Optional[int], typer.Option(help="Training images per trial, class-stratified.")
    ] = None,
    val_size: Annotated[
        Optional[int],
        typer.Option(
            help="Validation images carved from train (fixed seed) [default: the dataset's]."
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(help="Batch size per trial [default: the fast recipe's].")
    ] = None,
    objective: Annotated[
        Optional[str],
        typer.Option(
            help="pareto (accuracy vs cost) or accuracy (under the budget, Hyperband-pruned) [default: pareto]."
        ),
    ] = None,
    cost: Annotated[
        Optional[str], typer.Option(help="params or flops: the cost objective [default: params].")
    ] = None,
    sampler: Annotated[
        Optional[str],
        typer.Option(help="auto (constrained TPE), tpe, nsga2 or random [default: auto]."),
    ] = None,
    study: Annotated[
        Optional[str], typer.Option(help="Study name [default: SPACE-DATASET-BUDGETS].")
    ] = None,
    storage: Annotated[
        Optional[str],
        typer.Option(
            help="Optuna storage URL, e.g. postgresql://user@host/db [default: sqlite:///studies/STUDY.db]."
        ),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Worker processes on this machine [default: 1].")
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda [default: cpu].")] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Sampler and training seed [default: 0].")
    ] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Dataset cache directory.")] = None,
    reports_dir: Annotated[
        Optional[str],
        typer.Option(help="Where the HTML report goes: DIR/STUDY/index.html [default: reports]."),
    ] = None,
    retrain_top: Annotated[
        Optional[int], typer.Option(help="Retrain the K best front members and test them.")
    ] = None,
    final_epochs: Annotated[
        Optional[int], typer.Option(help="Epochs for --retrain-top [default: 30].")
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="A study definition, e.g. studies/densenet-bc-1m-cifar10.toml; options given here override it."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Search DenseNet/WRN architectures under a budget; rerun the same command to resume."""
    with user_errors():
        from dnas.search import SearchConfig
        from dnas.search import search as run_search

        values = load_config_file(config) if config else {}
        given = dict(
            space=space,
            dataset=dataset,
            trials=trials,
            epochs=epochs,
            train_subset=train_subset,
            val_size=val_size,
            batch_size=batch_size,
            objective=objective,
            cost=cost,
            sampler=sampler,
            study=study,
            storage=storage,
            workers=workers,
            device=device,
            seed=seed,
            data_dir=data_dir,
            retrain_top=retrain_top,
            final_epochs=final_epochs,
            reports_dir=reports_dir,
        )
        values.update({k: v for k, v in given.items() if v is not None})
        if budget:
            values["budgets"] = tuple(budget)
        if timeout:
            values["timeout_s"] = parse_duration(timeout)
        if "timeout_s" in values and "trials" not in values:
            values["trials"] = None  # a time budget alone: as many trials as fit
        cfg = SearchConfig(**values)
        if cfg.device == "cuda":
            from .common import Device, check_device

            check_device(Device.cuda)
        progress = _Progress(cfg)
        summary = run_search(cfg, on_trial=progress.trial, on_epoch=progress.epoch)
        if as_json:
            print_json(summary.to_dict())
        else:
            _show(summary)


class _Progress:
    """One line per finished trial and per epoch on stderr: done/total, best so far, time left."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        self.cfg, self.t0 = cfg, time.perf_counter()

    def epoch(self, trial, epoch: int, metrics: dict) -> None:  # noqa: ANN001
        err.print(
            f"  trial {trial.number} {trial.user_attrs.get('name', '')}: epoch {epoch}/{self.cfg.epochs}"
            f" val acc {metrics['val_acc']:.4f} ({metrics.get('images_per_s', 0):.0f} img/s)",
            highlight=False,
        )

    def trial(self, study, trial) -> None:  # noqa: ANN001
        from dnas.search import TRAINED, trained_count

        a = trial.user_attrs
        if a.get("rejected"):
            what = f"rejected {a['name']} ({a['params']:,} params, {a['flops']:,} flops): over budget, not built"
        elif a.get(TRAINED) and trial.values:
            what = f"{a['name']} ({a['params']:,} params): val acc {trial.values[0]:.4f} in {a.get('wall_time_s', 0):.0f}s"
        else:
            what = f"{a.get('name', '?')}: {trial.state.name.lower()} {a.get('failure', '')}"
        done = trained_count(study)
        total = self.cfg.trials
        elapsed = time.perf_counter() - self.t0
        accs = [
            t.values[0]
            for t in study.get_trials(deepcopy=False)
            if t.values and t.user_attrs.get(TRAINED)
        ]
        best = f"best {max(accs):.4f}" if accs else "best -"
        left = ""
        if self.cfg.timeout_s:
            left = f", {max(0, self.cfg.timeout_s - elapsed) / 60:.1f} min left at most"
        elif total and done:
            left = f", ~{elapsed / done * max(0, total - done) / 60:.1f} min left"
        err.print(
            f"[{done}/{total or '?'} trained] trial {trial.number}: {what} | {best}{left}",
            highlight=False,
        )


def _show(s) -> None:  # noqa: ANN001 - a SearchSummary
    out.print(f"study {s.study} ({s.storage}) on {s.dataset}, budget {' and '.join(s.budgets)}")
    out.print(
        f"trained {s.trained} (complete {s.complete}, failed {s.failed}, pruned {s.pruned}); "
        f"{s.rejected_over_budget} over-budget proposals rejected before building; {s.wall_time_s:.0f} s"
    )
    table = Table(
        "trial",
        "name",
        "params",
        "FLOPs (fvcore)",
        "val acc",
        "epochs",
        "time s",
        title="Pareto front (validation accuracy vs parameters)",
    )
    for m in s.front:
        table.add_row(
            str(m.number),
            m.name,
            f"{m.params:,}",
            f"{m.flops:,}",
            f"{m.val_acc:.4f}",
            str(m.epochs),
            f"{m.wall_time_s:.0f}",
        )
    out.print(table)
    if s.best:
        out.print(
            f"best under budget: {s.best.name} ({s.best.params:,} params), val acc {s.best.val_acc:.4f}; checkpoint in {s.best.run_dir}"
        )
    for f in s.final:
        out.print(
            f"retrained {f['name']} for {f['epochs']} epochs: test acc {f['test_acc']:.4f} (val {f['final_val_acc']:.4f})"
        )
    out.print(f"report: {s.report}")


def register(app: typer.Typer) -> None:
    app.command()(search)

"""`dnas train NAME_OR_SPEC`: train one architecture, with a run directory that can be resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from dnas.device import Device
from dnas.errors import DnasError, Terminated
from dnas.recipes import RecipeName

from .common import a_path, err, out, print_json, user_errors


def train(
    name_or_spec: Annotated[
        str,
        typer.Argument(
            metavar="NAME_OR_SPEC",
            help="A canonical name (densenet-bc-100, wrn-16-4, ...) or a JSON spec file.",
        ),
    ],
    dataset: Annotated[
        str,
        typer.Option(help="cifar10, cifar100, svhn, fashion-mnist, mnist, or imagefolder:PATH."),
    ] = "cifar10",
    recipe: Annotated[
        RecipeName,
        typer.Option(
            help="paper: the paper's full schedule; fast: warm-up + cosine for short trials."
        ),
    ] = RecipeName.fast,
    epochs: Annotated[
        Optional[int], typer.Option(min=1, help="Override the recipe's epochs.")
    ] = None,
    lr: Annotated[
        Optional[float], typer.Option(help="Override the recipe's peak learning rate (> 0).")
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(min=1, help="Override the recipe's batch size.")
    ] = None,
    weight_decay: Annotated[
        Optional[float], typer.Option(help="Override the recipe's weight decay (>= 0).")
    ] = None,
    warmup_epochs: Annotated[
        Optional[float],
        typer.Option(help="Override the recipe's linear warm-up (epochs, >= 0)."),
    ] = None,
    dropout: Annotated[
        Optional[float],
        typer.Option(help="Override dropout \\[default: the name's, else the recipe's]."),
    ] = None,
    device: Annotated[
        Device,
        typer.Option(help="Where the data and the model live; auto: cuda if a GPU is visible."),
    ] = Device.auto,
    seed: Annotated[
        int,
        typer.Option(
            min=0, max=2**32 - 1, help="Seeds weights, shuffling, augmentation and dropout."
        ),
    ] = 0,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Run directory \\[default: studies/runs/NAME-DATASET-sSEED-TIME].",
            parser=a_path,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its last completed epoch.")
    ] = False,
    eval_test: Annotated[
        bool,
        typer.Option(
            help="Evaluate the final weights on the test set (never used for selection)."
        ),
    ] = False,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Dataset cache \\[default: $DNAS_DATA or ~/.cache/dnas/data].", parser=a_path
        ),
    ] = None,
    train_subset: Annotated[
        Optional[int], typer.Option(min=1, help="Train on this many images (class-stratified).")
    ] = None,
    val_size: Annotated[
        Optional[int],
        typer.Option(min=0, help="Validation images carved from train \\[default: 5000]."),
    ] = None,
    amp: Annotated[
        Optional[bool],
        typer.Option(help="bf16 autocast \\[default: on a GPU with native bf16: A100, H100...]."),
    ] = None,
    channels_last: Annotated[
        bool,
        typer.Option(help="channels_last memory format (measured faster on CPU and CUDA)."),
    ] = True,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model.")
    ] = False,
    memory_efficient: Annotated[
        bool,
        typer.Option(help="DenseNet: recompute concat-BN-ReLU-conv1 in backward to save memory."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a network; writes config.json, metrics.jsonl, checkpoint.pt and result.json."""
    with user_errors():
        from dnas.checkpoint import RunDir, default_run_dir, load_spec
        from dnas.data import load_data
        from dnas.device import device_name, resolve_device
        from dnas.train import TrainConfig
        from dnas.train import train as run_train

        dev = resolve_device(device.value)
        if resume and out_dir is None:
            raise DnasError("--resume needs --out DIR, the run directory to continue")
        load_spec(name_or_spec)  # a bad name fails before any data is loaded
        if resume:
            RunDir(out_dir).resume()  # a corrupt or foreign checkpoint fails before loading data
        config = TrainConfig(  # a bad override fails before the data is loaded
            recipe=recipe.value,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            dropout=dropout,
            amp=amp,
            channels_last=channels_last,
            compile=compile_model,
            memory_efficient=memory_efficient,
            seed=seed,
            device=dev,
            train_subset=train_subset,
            val_size=val_size,
            eval_test=eval_test,
        )
        data = load_data(dataset, data_dir, dev, val_size, train_subset)
        spec = load_spec(name_or_spec, data.info.num_classes, data.info.channels)
        run_dir = out_dir or default_run_dir(spec.name, data.info.name, seed)
        err.print(
            f"{spec.name} on {data.info.name}: {len(data.train_y):,} train,"
            f" {len(data.val_y):,} val images ({data.source}); device {dev} ({device_name(dev)});"
            f" run directory {run_dir}"
        )
        try:
            with _Progress() as progress:
                result = run_train(
                    spec,
                    data,
                    config,
                    run_dir,
                    resume,
                    on_epoch=progress.epoch,
                    on_progress=progress.step,
                )
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM
            _stopped(e, Path(run_dir))
        if as_json:
            print_json(result.to_dict())
        else:
            _show(result)
        if result.diverged:
            raise typer.Exit(1)


def _stopped(error: KeyboardInterrupt, run_dir: Path) -> NoReturn:
    """Say what an interrupted run kept and how to go on; exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    from dnas.checkpoint import RunDir

    what = "Terminated" if isinstance(error, Terminated) else "Interrupted"
    how = (
        f"the completed epochs are kept in {run_dir}; continue with the same command and"
        f" --resume --out {run_dir}"
        if RunDir(run_dir).holds_run()
        else f"no epoch was completed; {run_dir} holds nothing to resume"
    )
    typer.echo(f"{what}: {how}", err=True)
    raise typer.Exit(143 if isinstance(error, Terminated) else 130) from None


class _Progress:
    """A Rich progress bar on stderr (epoch, step, running loss/accuracy, images/s) and a line per
    epoch."""

    def __enter__(self) -> _Progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f}"
                " {task.fields[ips]:.0f} img/s"
            ),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("train", total=None, epoch=0, loss=0.0, acc=0.0, ips=0.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def step(self, epoch: int, step: int, steps: int, running: dict) -> None:
        self.bar.update(
            self.task,
            completed=step,
            total=steps,
            epoch=epoch,
            loss=running["loss"],
            acc=running["acc"],
            ips=running["images_per_s"],
        )

    def epoch(self, epoch: int, m: dict) -> None:
        val = "-" if m["val_acc"] is None else f"{m['val_loss']:.4f} / {m['val_acc']:.4f}"
        self.bar.console.print(
            f"epoch {epoch}: train loss/acc {m['train_loss']:.4f} / {m['train_acc']:.4f},"
            f" val loss/acc {val}, lr {m['lr']:.4g}, {m['images_per_s']:.0f} img/s,"
            f" {m['time_s']:.1f} s"
        )


def _show(r) -> None:  # noqa: ANN001 - a TrainResult
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    out.print(
        f"[bold]{r.spec.name}[/bold]: {len(r.metrics)} epochs, best val acc {pct(r.best_val_acc)}"
        f"{'' if r.best_epoch is None else f' (epoch {r.best_epoch})'}, final val acc"
        f" {pct(r.final_val_acc)}"
    )
    if r.test_acc is not None:
        out.print(f"test acc {pct(r.test_acc)} (final weights), test loss {r.test_loss:.4f}")
    out.print(f"wall time {r.wall_time_s:.1f} s, {r.images_per_s:.0f} training images/s")
    if r.reason:
        out.print(
            f"[red]ended early: {r.reason}[/red]" if r.diverged else f"ended early: {r.reason}"
        )
    out.print(f"run directory: {r.run_dir}")


def register(app: typer.Typer) -> None:
    app.command()(train)

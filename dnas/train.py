"""Train one architecture on data already on the device: SGD with Nesterov momentum, a recipe's
learning-rate schedule, optional bf16 autocast / channels_last / ``torch.compile``, per-epoch
validation, atomic checkpoints that resume bit-identically, and divergence detection.

``train`` is what both ``dnas train`` and a search trial call. A trial passes ``on_epoch`` (which
may raise, e.g. ``optuna.TrialPruned``: the exception propagates after the epoch's checkpoint and
metrics are written) and ``should_stop``. The loop is ``setup``, then per epoch ``train_epoch``
and ``evaluate``; the run folder and its checkpoint live in ``dnas.checkpoint``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dnas.budget import require_fits
from dnas.checkpoint import (
    RunDir,
    checkpoint_state,
    restore_state,
    spec_from_dict,
    spec_to_dict,
)
from dnas.data import DataSplits, batches
from dnas.device import available_memory, bf16_by_default, device_name, keep_freed_memory
from dnas.errors import DnasError, check_stop
from dnas.models import build
from dnas.recipes import Recipe, check_values, resolve_recipe
from dnas.spec import Spec

EVAL_BATCH = 500
CHECK_EVERY = 20  # steps between finite-loss checks (each one syncs the device)
# Fields a resumed run may change without changing what it computes.
RESUMABLE_CHANGES = {"device", "compile", "eval_test"}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``None`` means "the recipe's value" (see ``dnas.recipes``)."""

    recipe: str = "fast"  # "paper" or "fast"
    epochs: int | None = None
    lr: float | None = None  # peak learning rate
    batch_size: int | None = None  # images per step
    weight_decay: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    warmup_epochs: float | None = None
    dropout: float | None = None  # None: the spec's if nonzero, else the recipe's
    amp: bool | None = None  # bf16 autocast; None: on a GPU with native bf16 (bf16_by_default)
    channels_last: bool = True  # measured faster on both CPU (1.07-1.7x here) and CUDA
    compile: bool = False  # torch.compile the model
    memory_efficient: bool = False  # DenseNet: recompute concat-BN-ReLU-conv1 in backward
    seed: int = 0  # weights, shuffling, augmentation, dropout
    device: str = "cpu"
    train_subset: int | None = None  # recorded here; applied by load_data
    val_size: int | None = None  # recorded here; applied by load_data
    eval_test: bool = False  # evaluate the final weights on the test set

    def __post_init__(self) -> None:
        check_values(self.__dict__)  # a bad override fails here, before any data is loaded
        if self.val_size is not None and self.val_size < 1:
            raise DnasError(
                f"val_size must be >= 1 (a run is judged and selected on its validation"
                f" images), got {self.val_size}"
            )

    def recipe_for(self, spec: Spec, data: DataSplits) -> Recipe:
        return resolve_recipe(
            self.recipe,
            spec.family,
            data.info.name,
            data.augment,
            spec.dropout,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            nesterov=self.nesterov,
            warmup_epochs=self.warmup_epochs,
            dropout=self.dropout,
        )


@dataclass
class TrainResult:
    spec: Spec  # as trained (with the recipe's dropout)
    recipe: Recipe
    metrics: list[dict]  # one dict per completed epoch, as in metrics.jsonl
    best_val_acc: float | None
    best_epoch: int | None
    final_val_acc: float | None
    test_acc: float | None  # only with eval_test
    test_loss: float | None
    wall_time_s: float  # the run's: this call's time in train(), evaluation included, plus the
    # epochs' (time_s) of the calls it resumed
    images_per_s: float  # training images per second of training-loop time
    diverged: bool = False
    reason: str | None = None  # why the run ended early: divergence, should_stop
    run_dir: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = spec_to_dict(self.spec)
        return d


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    data: DataSplits,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float | None, float | None]:
    """Mean cross-entropy and accuracy over (x, y); (None, None) for an empty split."""
    if len(y) == 0:
        return None, None
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=y.device)
    correct = torch.zeros((), device=y.device, dtype=torch.long)
    for xb, yb in batches(x, y, EVAL_BATCH, data.mean, data.std, channels_last=channels_last):
        with torch.autocast(y.device.type, torch.bfloat16, enabled=amp):
            out = model(xb).float()
        loss += F.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    return loss.item() / len(y), correct.item() / len(y)


# ---- the loop ---------------------------------------------------------------------------------


def train(
    spec: Spec,
    data: DataSplits,
    config: TrainConfig = TrainConfig(),
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int, int, dict], None] | None = None,
) -> TrainResult:
    """Train ``spec`` on ``data`` and return per-epoch metrics and the final accuracies.

    Args:
        run_dir: if given, holds config.json, metrics.jsonl (one line per epoch), checkpoint.pt
            (rewritten atomically after every epoch) and result.json (see ``dnas.checkpoint``).
            It must not hold a run already unless ``resume``.
        resume: continue the run in ``run_dir`` from its last completed epoch; the model, options
            and data must be those of the run. A seeded CPU run resumed this way ends with the same
            weights as one never interrupted.
        on_epoch: called as ``on_epoch(epoch, metrics)`` (1-based) after each epoch is saved. An
            exception it raises ends training and propagates unchanged.
        should_stop: polled after each epoch; True ends the run early (``reason`` says so).
        on_progress: ``on_progress(epoch, step, steps_per_epoch, running)`` every few steps, with
            running train loss, accuracy and images/s, for progress bars.

    Raises:
        DnasError: mismatched data, bad options, an existing run without ``resume``, a corrupt or
            foreign checkpoint. The run directory is not touched before these checks pass.
    """
    t_call = time.perf_counter()
    run = setup(spec, data, config, run_dir, resume)
    earlier_s = sum(m.get("time_s", 0.0) for m in run.metrics)  # a resumed run's epochs so far
    reason = None
    for epoch in range(len(run.metrics), run.recipe.epochs):
        stats = train_epoch(run, epoch, on_progress)
        if stats.diverged:
            reason = stats.diverged
            break
        row = _epoch_row(run, epoch, stats)
        if not math.isfinite(row["val_loss"]):  # the last steps' updates left non-finite weights
            reason = f"diverged: validation loss {row['val_loss']} after epoch {epoch + 1}"
            break
        run.metrics.append(row)
        if run.folder is not None:
            run.folder.save(run.checkpoint())
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
        if should_stop is not None and should_stop():
            reason = f"stopped by should_stop after epoch {epoch + 1}"
            break
    return _finish(run, reason, earlier_s + time.perf_counter() - t_call)


@dataclass
class TrainState:
    """A run in progress: what ``setup`` builds and each ``train_epoch`` advances."""

    spec: Spec  # with the recipe's dropout
    recipe: Recipe
    config: TrainConfig
    data: DataSplits
    model: nn.Module
    net: nn.Module  # the model, compiled if config.compile
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # shuffling and augmentation; dropout draws from torch's global RNG
    amp: bool
    metrics: list[dict]  # one row per completed epoch
    folder: RunDir | None

    @property
    def steps(self) -> int:
        return max(1, len(self.data.train_y) // self.recipe.batch_size)

    def checkpoint(self) -> dict:
        return checkpoint_state(
            self.spec,
            asdict(self.config),
            asdict(self.recipe),
            self.data.summary(),
            self.model,
            self.optimizer,
            self.gen,
            self.metrics,
        )


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean training loss
    acc: float  # training accuracy
    images: int
    started: float  # time.perf_counter() when the epoch began
    seconds: float  # training time, evaluation excluded
    diverged: str | None = None  # why the epoch stopped early: a NaN or inf loss


def setup(
    spec: Spec,
    data: DataSplits,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> TrainState:
    """Check every input first, then seed and build the model, optimizer and generator, restore
    them from the checkpoint when resuming, and write the run folder's config and metrics."""
    _check_data(spec, data, config)
    recipe = config.recipe_for(spec, data)
    spec = replace(spec, dropout=recipe.dropout)
    folder = RunDir(Path(run_dir)) if run_dir is not None else None
    ckpt = _checkpoint_to_resume(folder, resume, spec, config, data)

    device = torch.device(config.device).type
    if device == "cpu":
        keep_freed_memory()
    require_fits(spec, available_memory(device), device, recipe.batch_size,
                 data.info.input_size[1:], config.memory_efficient)  # fmt: skip
    torch.manual_seed(config.seed)
    model = build(spec, config.memory_efficient).to(config.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    gen = torch.Generator().manual_seed(config.seed)
    amp = bf16_by_default(str(data.device)) if config.amp is None else config.amp
    metrics: list[dict] = []
    if ckpt is not None:
        restore_state(ckpt, model, optimizer, gen)
        metrics = list(ckpt["metrics"])
    net = torch.compile(model) if config.compile else model  # compiles lazily, at the first step
    run = TrainState(spec, recipe, config, data, model, net, optimizer, gen, amp, metrics, folder)
    if folder is not None:
        folder.start(metrics, info=None if ckpt is not None else _run_info(run))
    return run


def train_epoch(
    run: TrainState,
    epoch: int,
    on_progress: Callable[[int, int, int, dict], None] | None = None,
) -> EpochStats:
    """One pass over the shuffled, augmented training data (``epoch`` counts from 0), with the
    recipe's learning rate at every step. The loss is checked every ``CHECK_EVERY`` steps (each
    check syncs the device); a NaN or inf ends the epoch with ``diverged`` set."""
    data, steps, device = run.data, run.steps, run.data.device
    pad = "reflect" if run.spec.family == "wrn" else "zeros"  # each paper's padding
    run.model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    feed = batches(data.train_x, data.train_y, run.recipe.batch_size, data.mean, data.std,
                   run.gen, data.augment, pad, run.config.channels_last)  # fmt: skip
    for i, (x, y) in enumerate(feed):
        check_stop()  # a Ctrl-C or SIGTERM that Python dropped: stop as if it had arrived now
        for group in run.optimizer.param_groups:
            group["lr"] = run.recipe.lr_at(epoch * steps + i, steps)
        with torch.autocast(device.type, torch.bfloat16, enabled=run.amp):
            out = run.net(x)
        loss = F.cross_entropy(out.float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == steps:
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                why = f"diverged: training loss {mean_loss} at epoch {epoch + 1} step {i + 1}"
                return EpochStats(mean_loss, 0.0, seen, t0, time.perf_counter() - t0, why)
            if on_progress is not None:
                speed = seen / (time.perf_counter() - t0)
                running = {"loss": mean_loss, "acc": correct.item() / seen, "images_per_s": speed}
                on_progress(epoch + 1, i + 1, steps, running)
    seconds = time.perf_counter() - t0
    return EpochStats(loss_sum.item() / seen, correct.item() / seen, seen, t0, seconds)


def _epoch_row(run: TrainState, epoch: int, stats: EpochStats) -> dict:
    """The epoch's metrics.jsonl line, with validation loss and accuracy."""
    data = run.data
    val_loss, val_acc = evaluate(
        run.model, data.val_x, data.val_y, data, run.amp, run.config.channels_last
    )
    return {
        "epoch": epoch + 1,
        "train_loss": stats.loss,
        "train_acc": stats.acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_time_s": stats.seconds,
        "time_s": time.perf_counter() - stats.started,
        "images_per_s": stats.images / stats.seconds,
    }


def _finish(run: TrainState, reason: str | None, wall: float) -> TrainResult:
    """Best and final accuracies, the test set with ``eval_test``; result.json in the folder."""
    metrics, data = run.metrics, run.data
    vals = [(m["val_acc"], m["epoch"]) for m in metrics if m["val_acc"] is not None]
    best = max(vals, key=lambda v: (v[0], -v[1])) if vals else (None, None)
    diverged = (reason or "").startswith("diverged")
    test_loss = test_acc = None
    if run.config.eval_test and not diverged:
        test_loss, test_acc = evaluate(
            run.model, data.test_x, data.test_y, data, run.amp, run.config.channels_last
        )
    train_time = sum(m["train_time_s"] for m in metrics)
    images = sum(m["images_per_s"] * m["train_time_s"] for m in metrics)
    result = TrainResult(
        spec=run.spec,
        recipe=run.recipe,
        metrics=metrics,
        best_val_acc=best[0],
        best_epoch=best[1],
        final_val_acc=metrics[-1]["val_acc"] if metrics else None,
        test_acc=test_acc,
        test_loss=test_loss,
        wall_time_s=wall,
        images_per_s=images / train_time if train_time else 0.0,
        diverged=diverged,
        reason=reason,
        run_dir=str(run.folder.path) if run.folder else None,
    )
    if run.folder is not None:
        run.folder.write_result(result.to_dict())
    return result


# ---- checks before anything is touched --------------------------------------------------------


def _check_data(spec: Spec, data: DataSplits, config: TrainConfig) -> None:
    if (spec.num_classes, spec.in_channels) != (data.info.num_classes, data.info.channels):
        raise DnasError(
            f"{spec.name} has {spec.num_classes} classes and {spec.in_channels} input channels;"
            f" {data.info.name} has {data.info.num_classes} and {data.info.channels}"
        )
    if torch.device(config.device).type != data.device.type:
        raise DnasError(f"the data is on {data.device} but config.device is {config.device}")
    if config.eval_test and len(data.test_y) == 0:  # an image folder without test/
        raise DnasError(
            f"--eval-test: {data.info.name} has no test images; give its test split"
            " (PATH/test/CLASS/...) or leave out --eval-test"
        )


def _checkpoint_to_resume(
    folder: RunDir | None, resume: bool, spec: Spec, config: TrainConfig, data: DataSplits
) -> dict | None:
    """The checkpoint to continue from (checked against this run), or None for a new run."""
    if folder is not None and folder.path.exists() and not folder.path.is_dir():
        raise DnasError(f"{folder.path} is a file, not a run folder; give a new or empty folder")
    if folder is not None and (others := folder.others()):
        raise DnasError(
            f"{folder.path} holds files that are not a run's ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); move them away, or train in a new or empty"
            " folder (dnas train --out)"
        )
    if not resume:
        if folder is not None and folder.holds_run():
            raise DnasError(
                f"{folder.path} already holds a run; continue it with --resume or choose another"
                " --out"
            )
        return None
    if folder is None:
        raise DnasError("resume needs the run directory (--out) of the run to continue")
    ckpt = folder.resume()
    _check_resume(ckpt, spec, config, data)
    return ckpt


def resume_point(
    run_dir: str | Path, spec: Spec, config: TrainConfig, data: DataSplits
) -> tuple[int, list[dict]] | None:
    """Where the run in ``run_dir`` stopped, if it is one of ``spec`` trained as ``config`` says
    on ``data`` whatever its seed: that seed and the metrics of its completed epochs (resume it
    with ``config``'s seed replaced by this one). None if the folder holds no such run."""
    spec = replace(spec, dropout=config.recipe_for(spec, data).dropout)  # as ``setup`` builds it
    try:
        ckpt = RunDir(Path(run_dir)).resume()
        seed = ckpt.get("config", {}).get("seed")
        if type(seed) is not int:
            return None
        _check_resume(ckpt, spec, replace(config, seed=seed), data)
        return seed, list(ckpt["metrics"])
    except (DnasError, OSError, AttributeError, KeyError, TypeError):  # none, another run's,
        return None  # damaged, or unreadable


def _check_resume(ckpt: dict, spec: Spec, config: TrainConfig, data: DataSplits) -> None:
    if ckpt.get("spec") != spec_to_dict(spec):
        theirs = ckpt.get("spec", {})
        with contextlib.suppress(Exception):
            theirs = spec_from_dict(theirs).name
        raise DnasError(
            f"the checkpoint is for {theirs}, not {spec.name}; resume with the same model and"
            " options"
        )
    mine, theirs = asdict(config), ckpt.get("config", {})
    diff = [k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k)]
    if diff:
        what = ", ".join(f"{k}={theirs.get(k)!r} (now {mine[k]!r})" for k in diff)
        raise DnasError(f"the checkpoint was trained with {what}; resume with the same options")
    want = {k: ckpt.get("data", {}).get(k) for k in ("name", "train", "val")}
    have = {k: data.summary()[k] for k in want}
    if want != have:
        raise DnasError(
            f"the checkpoint was trained on {want}, this data is {have}; resume with the same"
            " dataset"
        )


def _run_info(run: TrainState) -> dict:
    """config.json's account of what this run is (``RunDir.start`` adds versions and argv)."""
    return {
        "spec": spec_to_dict(run.spec),
        "name": run.spec.name,
        "config": asdict(run.config),
        "recipe": asdict(run.recipe),
        "data": run.data.summary(),
        "device": device_name(run.config.device),
        "amp": run.amp,
        "channels_last": run.config.channels_last,
    }

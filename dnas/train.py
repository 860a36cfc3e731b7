"""Train one architecture on data already on the device: SGD with Nesterov momentum, a recipe's
learning-rate schedule, optional bf16 autocast / channels_last / ``torch.compile``, per-epoch
validation, atomic checkpoints that resume bit-identically, and divergence detection.

``train`` is what both ``dnas train`` and a search trial call. A trial passes ``on_epoch`` (which
may raise, e.g. ``optuna.TrialPruned``: the exception propagates after the epoch's checkpoint and
metrics are written) and ``should_stop``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dnas.data import DataSplits, batches
from dnas.errors import DnasError
from dnas.models import build
from dnas.recipes import Recipe, resolve_recipe
from dnas.spec import DenseNetSpec, Spec, WRNSpec

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "dnas-checkpoint-v1"
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
    amp: bool | None = None  # bf16 autocast; None: on for CUDA, off on CPU (slower there)
    channels_last: bool = True  # measured faster on both CPU (1.07-1.7x here) and CUDA
    compile: bool = False  # torch.compile the model
    memory_efficient: bool = False  # DenseNet: recompute concat-BN-ReLU-conv1 in backward
    seed: int = 0  # weights, shuffling, augmentation, dropout
    device: str = "cpu"
    train_subset: int | None = None  # recorded here; applied by load_data
    val_size: int | None = None  # recorded here; applied by load_data
    eval_test: bool = False  # evaluate the final weights on the test set

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
    wall_time_s: float  # this process's time in train(), evaluation included
    images_per_s: float  # training images per second of training-loop time
    diverged: bool = False
    reason: str | None = None  # why the run ended early: divergence, should_stop
    run_dir: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = spec_to_dict(self.spec)
        return d


def spec_to_dict(spec: Spec) -> dict:
    return {"family": spec.family, **asdict(spec)}


def spec_from_dict(d: dict) -> Spec:
    d = dict(d)
    family = d.pop("family", None)
    if family == "densenet":
        return DenseNetSpec(**{**d, "blocks": tuple(d.get("blocks", ()))})
    if family == "wrn":
        return WRNSpec(**{**d, "block": tuple(d.get("block", (3, 3)))})
    raise DnasError(f"not a dnas spec: family {family!r} (expected densenet or wrn)")


def load_spec(name_or_path: str | Path, num_classes: int = 10, in_channels: int = 3) -> Spec:
    """A spec from a canonical name or a JSON file (``spec_to_dict``'s form, ``{"name": ...}``, or a
    run's config.json), with the dataset's classes and input channels."""
    path = Path(name_or_path)
    if str(name_or_path).endswith(".json") or path.is_file():
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DnasError(f"cannot read spec file {path}: {e}") from None
        d = d.get("spec", d) if isinstance(d, dict) else d
        if not isinstance(d, dict):
            raise DnasError(f"{path}: expected a JSON object with a spec")
        if "name" in d and "family" not in d:
            return load_spec(str(d["name"]), num_classes, in_channels)
        try:
            spec = spec_from_dict(d)
        except TypeError as e:
            raise DnasError(f"{path}: not a valid spec ({e})") from None
        return replace(spec, num_classes=num_classes, in_channels=in_channels)
    from dnas.names import parse_name

    return parse_name(str(name_or_path), num_classes, in_channels)


def provenance() -> dict:
    """Library versions and the git commit of the dnas source (None outside a checkout)."""
    import torchvision

    from dnas import __version__

    here = Path(__file__).resolve().parent
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(here)]
        commit = subprocess.run(
            git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            git + ["status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        commit += "+dirty" if dirty.strip() else ""
    return {
        "dnas": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
    }


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda p: Path(p).write_text(text))


def load_checkpoint(path: str | Path) -> dict:
    """A dnas checkpoint as plain data (``torch.load(weights_only=True)``), or a one-line DnasError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise DnasError(
            f"no checkpoint at {path}: nothing to resume; start the run without --resume"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a foreign pickle, random bytes: all user errors here
        text = str(e).strip()
        if "Weights only load failed" in text:
            reason = "it holds Python objects, not only tensors and plain data"
        else:
            reason = (
                f"{type(e).__name__}: {text.splitlines()[0][:100]}" if text else type(e).__name__
            )
        raise DnasError(
            f"{path} is not a readable dnas checkpoint ({reason}); start a new run with another --out"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DnasError(
            f"{path} is not a dnas checkpoint (no {CHECKPOINT_FORMAT!r} marker); start a new run with another --out"
        )
    return ckpt


def load_model(path: str | Path) -> tuple[Spec, nn.Module]:
    """The spec and trained network (eval mode, CPU) stored in a checkpoint."""
    ckpt = load_checkpoint(path)
    spec = spec_from_dict(ckpt["spec"])
    model = build(spec)
    model.load_state_dict(ckpt["model"])
    return spec, model.eval()


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


def _rng_state(gen: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore(
    ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator
) -> None:
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise DnasError(
            f"checkpoint does not fit this model: {str(e).splitlines()[0][:160]}"
        ) from None


def _check_resume(ckpt: dict, spec: Spec, config: TrainConfig, data: DataSplits) -> None:
    if ckpt.get("spec") != spec_to_dict(spec):
        theirs = ckpt.get("spec", {})
        with contextlib.suppress(Exception):
            theirs = spec_from_dict(theirs).name
        raise DnasError(
            f"the checkpoint is for {theirs}, not {spec.name}; resume with the same model and options"
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
            f"the checkpoint was trained on {want}, this data is {have}; resume with the same dataset"
        )


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
            (rewritten atomically after every epoch) and result.json. It must not hold a run
            already unless ``resume``.
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
    if (spec.num_classes, spec.in_channels) != (data.info.num_classes, data.info.channels):
        raise DnasError(
            f"{spec.name} has {spec.num_classes} classes and {spec.in_channels} input channels;"
            f" {data.info.name} has {data.info.num_classes} and {data.info.channels}"
        )
    device = torch.device(config.device)
    if device.type != data.device.type:
        raise DnasError(f"the data is on {data.device} but config.device is {config.device}")
    recipe = config.recipe_for(spec, data)
    spec = replace(spec, dropout=recipe.dropout)
    amp = device.type == "cuda" if config.amp is None else config.amp
    channels_last = config.channels_last
    run = Path(run_dir) if run_dir is not None else None
    ckpt = None
    if resume:
        if run is None:
            raise DnasError("resume needs the run directory (--out) of the run to continue")
        ckpt = load_checkpoint(run / CHECKPOINT)
        _check_resume(ckpt, spec, config, data)
    elif run is not None and any((run / f).exists() for f in (CHECKPOINT, "metrics.jsonl")):
        raise DnasError(
            f"{run} already holds a run; continue it with --resume or choose another --out"
        )

    torch.manual_seed(config.seed)
    model = build(spec, config.memory_efficient).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    gen = torch.Generator().manual_seed(config.seed)
    metrics: list[dict] = []
    if ckpt is not None:
        _restore(ckpt, model, optimizer, gen)
        metrics = list(ckpt["metrics"])
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            info = {
                "spec": spec_to_dict(spec),
                "name": spec.name,
                "config": asdict(config),
                "recipe": asdict(recipe),
                "data": data.summary(),
                "device": _device_name(device),
                "amp": amp,
                "channels_last": channels_last,
                "versions": provenance(),
                "argv": sys.argv,
            }
            _write_text(run / "config.json", json.dumps(info, indent=2) + "\n")
        _write_text(run / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    net = torch.compile(model) if config.compile else model
    pad = "reflect" if spec.family == "wrn" else "zeros"  # each paper's padding
    steps = max(1, len(data.train_y) // recipe.batch_size)
    reason, train_time = None, sum(m["train_time_s"] for m in metrics)

    for epoch in range(len(metrics), recipe.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        feed = batches(data.train_x, data.train_y, recipe.batch_size, data.mean, data.std, gen,
                       data.augment, pad, channels_last)  # fmt: skip
        for i, (x, y) in enumerate(feed):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(epoch * steps + i, steps)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                out = net(x)
            loss = F.cross_entropy(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if (i + 1) % CHECK_EVERY == 0 or i + 1 == steps:
                if not math.isfinite(running := loss_sum.item()):
                    reason = f"diverged: training loss {running / seen} at epoch {epoch + 1} step {i + 1}"
                    break
                if on_progress is not None:
                    speed = seen / (time.perf_counter() - t0)
                    running = {
                        "loss": running / seen,
                        "acc": correct.item() / seen,
                        "images_per_s": speed,
                    }
                    on_progress(epoch + 1, i + 1, steps, running)
        if reason:
            break
        epoch_train_time = time.perf_counter() - t0
        train_time += epoch_train_time
        val_loss, val_acc = evaluate(model, data.val_x, data.val_y, data, amp, channels_last)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "train_time_s": epoch_train_time,
            "time_s": time.perf_counter() - t0,
            "images_per_s": seen / epoch_train_time,
        }
        metrics.append(row)
        if run is not None:
            _save(run, spec, config, recipe, data, model, optimizer, gen, metrics)
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
        if should_stop is not None and should_stop():
            reason = f"stopped by should_stop after epoch {epoch + 1}"
            break

    return _finish(
        spec,
        recipe,
        config,
        data,
        model,
        metrics,
        reason,
        run,
        amp,
        channels_last,
        time.perf_counter() - t_call,
        train_time,
    )


def _save(
    run: Path,
    spec: Spec,
    config: TrainConfig,
    recipe: Recipe,
    data: DataSplits,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    metrics: list[dict],
) -> None:
    """Checkpoint first (atomically), then the metrics line: a resume trusts only the checkpoint."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec_to_dict(spec),
        "config": asdict(config),
        "recipe": asdict(recipe),
        "data": data.summary(),
        "epoch": len(metrics),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(gen),
        "metrics": metrics,
    }
    _atomic_write(run / CHECKPOINT, lambda p: torch.save(state, p))
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics[-1]) + "\n")


def _finish(
    spec: Spec,
    recipe: Recipe,
    config: TrainConfig,
    data: DataSplits,
    model: nn.Module,
    metrics: list[dict],
    reason: str | None,
    run: Path | None,
    amp: bool,
    channels_last: bool,
    wall: float,
    train_time: float,
) -> TrainResult:
    vals = [(m["val_acc"], m["epoch"]) for m in metrics if m["val_acc"] is not None]
    best = max(vals, key=lambda v: (v[0], -v[1])) if vals else (None, None)
    test_loss = test_acc = None
    if config.eval_test and not (reason or "").startswith("diverged"):
        test_loss, test_acc = evaluate(model, data.test_x, data.test_y, data, amp, channels_last)
    images = sum(m["images_per_s"] * m["train_time_s"] for m in metrics)
    result = TrainResult(
        spec=spec,
        recipe=recipe,
        metrics=metrics,
        best_val_acc=best[0],
        best_epoch=best[1],
        final_val_acc=metrics[-1]["val_acc"] if metrics else None,
        test_acc=test_acc,
        test_loss=test_loss,
        wall_time_s=wall,
        images_per_s=images / train_time if train_time else 0.0,
        diverged=(reason or "").startswith("diverged"),
        reason=reason,
        run_dir=str(run) if run else None,
    )
    if run is not None:
        _write_text(run / "result.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"

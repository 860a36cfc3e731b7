"""Training recipes: the papers' schedules and a short one for search trials. Torch-free.

A ``Recipe`` is fully resolved data (no ``None``); ``lr_at`` is a pure function of the step.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from dnas.errors import DnasError

MAX_EPOCHS = 10_000  # of one run; the papers train for 200-300
FLOAT32_MAX = 3.4028234663852886e38  # the largest learning rate or weight decay torch accepts


class RecipeName(str, enum.Enum):
    paper = "paper"  # the paper's full schedule
    fast = "fast"  # warm-up + cosine, for short trials


RECIPES = tuple(r.value for r in RecipeName)


@dataclass(frozen=True)
class Recipe:
    """Concrete hyperparameters of one run."""

    name: str
    epochs: int
    batch_size: int  # images per SGD step
    lr: float  # peak learning rate
    weight_decay: float  # L2, on every parameter (as both papers' code)
    momentum: float
    nesterov: bool
    schedule: Literal["step", "cosine"]
    milestones: tuple[float, ...]  # "step": fractions of the epochs after which lr *= gamma
    gamma: float
    warmup_epochs: float  # linear warm-up from 0 (may be fractional)
    dropout: float  # the network's dropout for this run

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        total = self.epochs * steps_per_epoch
        warmup = min(round(self.warmup_epochs * steps_per_epoch), total // 2)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "step":
            epoch = step // steps_per_epoch
            drops = sum(epoch >= round(m * self.epochs) for m in self.milestones)
            return self.lr * self.gamma**drops
        t = (step - warmup) / max(1, total - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def paper_recipe(family: str, dataset: str, augment: bool) -> Recipe:
    """The papers' CIFAR/SVHN recipes (REFERENCE.md).

    DenseNet (§4.2): batch 64, 300 epochs (40 on SVHN), lr 0.1 divided by 10 at 50% and 75% of
    the epochs, weight decay 1e-4, Nesterov 0.9, dropout 0.2 only without augmentation.
    WRN (§3): batch 128, 200 epochs, lr 0.1 × 0.2 at epochs 60, 120, 160, weight decay 5e-4,
    Nesterov 0.9, dropout 0.3. Milestones scale with ``--epochs``.
    """
    if family == "densenet":
        return Recipe(
            "paper",
            40 if dataset == "svhn" else 300,
            64,
            0.1,
            1e-4,
            0.9,
            True,
            "step",
            (0.5, 0.75),
            0.1,
            0.0,
            0.0 if augment else 0.2,
        )
    return Recipe("paper", 200, 128, 0.1, 5e-4, 0.9, True, "step", (0.3, 0.6, 0.8), 0.2, 0.0, 0.3)


def fast_recipe() -> Recipe:
    """Short budgets for search trials: one warm-up epoch (at most a fifth of the run, see
    ``resolve_recipe``), then cosine decay to zero; batch 128 at
    lr 0.2 (the paper's 0.1 at batch 64, scaled linearly), weight decay 5e-4, no dropout."""
    return Recipe("fast", 10, 128, 0.2, 5e-4, 0.9, True, "cosine", (), 1.0, 1.0, 0.0)


def resolve_recipe(
    name: str,
    family: str,
    dataset: str,
    augment: bool,
    spec_dropout: float = 0.0,
    **overrides: object,
) -> Recipe:
    """The named recipe with the non-``None`` overrides applied.

    Dropout: an explicit ``dropout`` override wins, then the spec's own (a name such as
    ``wrn-28-10-drop0.3``), then the recipe's.
    """
    if name not in RECIPES:
        raise DnasError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    recipe = paper_recipe(family, dataset, augment) if name == "paper" else fast_recipe()
    fields = {k: v for k, v in overrides.items() if v is not None}
    if "dropout" not in fields and spec_dropout:
        fields["dropout"] = spec_dropout
    if name == "fast" and "warmup_epochs" not in fields:
        # One warm-up epoch, but never more than a fifth of a short run (a 2-epoch search trial
        # would otherwise spend half its steps warming up).
        fields["warmup_epochs"] = min(
            recipe.warmup_epochs, 0.2 * fields.get("epochs", recipe.epochs)
        )
    recipe = Recipe(**{**recipe.__dict__, **fields})
    check_values(recipe.__dict__)
    if recipe.warmup_epochs > recipe.epochs:
        raise DnasError(
            f"warmup_epochs must be at most the run's {recipe.epochs} epochs,"
            f" got {recipe.warmup_epochs}"
        )
    return recipe


def check_values(values: Mapping[str, object]) -> None:
    """Refuse an out-of-range training value among ``values`` (field name -> value; the fields
    of a ``Recipe``, None or absent ones skipped): what ``resolve_recipe`` checks, and the
    overrides of a run before its data is loaded."""
    get = values.get
    for field in ("epochs", "batch_size"):
        if (value := get(field)) is not None and value < 1:
            raise DnasError(f"{field} must be >= 1, got {value}")
    if (epochs := get("epochs")) is not None and epochs > MAX_EPOCHS:
        raise DnasError(f"epochs must be at most {MAX_EPOCHS:,}, got {epochs:,}")
    if (lr := get("lr")) is not None and not 0 < lr < math.inf:
        raise DnasError(f"lr must be a finite number > 0, got {lr}")
    for field in ("weight_decay", "warmup_epochs"):
        if (value := get(field)) is not None and not 0 <= value < math.inf:
            raise DnasError(f"{field} must be a finite number >= 0, got {value}")
    for field in ("lr", "weight_decay"):  # the optimizer keeps them beside float32 weights
        if (value := get(field)) is not None and value > FLOAT32_MAX:
            raise DnasError(f"{field} must be at most {FLOAT32_MAX:.4g}, got {value}")
    if (dropout := get("dropout")) is not None and not 0.0 <= dropout < 1.0:
        raise DnasError(f"dropout must be in [0, 1), got {dropout}")

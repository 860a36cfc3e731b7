"""A search's configuration: one typed definition, its defaults, and its validation.

``SearchConfig`` is a msgspec Struct: the command line and a study file (TOML) are both
converted into it by msgspec, which checks every key's type and range against the annotations
below, so the two paths share one set of rules and one set of defaults. msgspec was chosen over
pydantic and cattrs because it validates a plain typed definition with no runtime
dependencies, rejects unknown keys and wrong types in strict mode, and its errors name the key
(`$.epochs`); a search config needs nothing more.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec

from dnas.budget import parse_budgets
from dnas.device import Device
from dnas.errors import DnasError, read_small_file
from dnas.recipes import FLOAT32_MAX, MAX_EPOCHS
from dnas.study import check_lasting, check_study_name, default_storage, trial_root


class Space(str, enum.Enum):
    all = "all"
    densenet = "densenet"
    densenet_bc = "densenet-bc"
    wrn = "wrn"


class Objective(str, enum.Enum):
    pareto = "pareto"  # validation accuracy up, cost down
    accuracy = "accuracy"  # validation accuracy under the budget, Hyperband-pruned


class CostMetric(str, enum.Enum):
    params = "params"
    flops = "flops"


class Sampler(str, enum.Enum):
    auto = "auto"  # constrained multivariate TPE
    tpe = "tpe"
    nsga2 = "nsga2"
    random = "random"


# The validation split and the training subset are drawn with this seed, whatever --seed says:
# every trial of a study, from any worker or machine, is compared on the same images.
DATA_SEED = 0

Positive = Annotated[int, msgspec.Meta(ge=1)]
Epochs = Annotated[int, msgspec.Meta(ge=1, le=MAX_EPOCHS)]
Trials = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
LearningRate = Annotated[float, msgspec.Meta(gt=0, le=FLOAT32_MAX)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Workers = Annotated[int, msgspec.Meta(ge=1, le=1024)]


class SearchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One search. Its study name and storage identify it: rerunning the same config resumes."""

    budgets: tuple[str, ...] = ("1M-params",)  # all must hold, e.g. 1M-params, 300M-flops
    space: Space = Space.all
    dataset: str = "cifar10"  # cifar10, cifar100, svhn, fashion-mnist, mnist, imagefolder:PATH
    trials: Trials | None = 20  # trained trials the study should reach; None: until timeout
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None  # this command's wall time
    epochs: Epochs = 3  # a candidate's full training, the top rung (the fidelity)
    # The first rung of multi-fidelity; None (= epochs): every candidate trains fully. The
    # fidelity study (README) found epoch 1 of 3 ranking worse than parameter count alone.
    min_epochs: Epochs | None = None
    reduction_factor: Annotated[int, msgspec.Meta(ge=2, le=100)] = 3  # rungs and promotions
    train_subset: Positive | None = None  # training images per trial (class-stratified)
    val_size: Positive | None = None  # validation images [default: the dataset's]
    batch_size: Positive | None = None  # [default: the fast recipe's]
    lr: LearningRate | None = None  # peak [default: the fast recipe's]
    objective: Objective = Objective.pareto
    cost: CostMetric = CostMetric.params  # the cost objective of a Pareto study
    sampler: Sampler = Sampler.auto
    # candidates spread over the cost axis, trained first (a start, not a grid: at most 1,000)
    initial_design: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 6
    study: str | None = None  # [default: SPACE-DATASET-BUDGETS]
    # an Optuna storage URL [default: sqlite:///studies/STUDY.db]; "" is a slip, not the default
    storage: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    workers: Workers = 1  # processes on this machine
    device: Device = Device.auto
    seed: Seed = 0
    data_dir: str | None = None
    studies_dir: str = "studies"  # not settable from a study file: only on the command line
    reports_dir: str = "reports"  # the report goes to REPORTS_DIR/STUDY/index.html
    retrain_top: NonNegative = 0
    final_epochs: Epochs = 30

    def __post_init__(self) -> None:
        # msgspec checks types and limits when converting (the CLI, a study file), not when the
        # Python API constructs a config: each field is held to its annotation here too, and
        # takes its type ('wrn' becomes Space.wrn, a list of budgets a tuple).
        for f in msgspec.structs.fields(self):
            converted = check_field(f.name, getattr(self, f.name))
            if type(converted) is not type(getattr(self, f.name)):
                msgspec.structs.force_setattr(self, f.name, converted)
        if not self.budgets:
            raise DnasError("give at least one budget, e.g. --budget 1M-params")
        parse_budgets(self.budgets)  # a one-line BudgetError for a malformed one
        if self.trials is None and self.timeout_s is None:
            raise DnasError("give --trials N or --timeout (e.g. 2h), or both")
        check_study_name(self.study_name)
        check_lasting(self.storage_url)
        if self.min_epochs is not None and self.min_epochs > self.epochs:
            raise DnasError(
                f"--min-epochs {self.min_epochs} is more than --epochs {self.epochs}: the first"
                f" rung must be at most the full training (equal turns multi-fidelity off)"
            )

    @property
    def study_name(self) -> str:
        default = "-".join([self.space.value, self.dataset, *self.budgets])
        if self.study is not None:  # '' is a bad name, not "the default"
            return self.study
        return re.sub(r"[^A-Za-z0-9._-]", "_", default)[:100].lstrip(".")

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.studies_dir, self.study_name)

    @property
    def trial_root(self) -> Path:
        return trial_root(self.studies_dir, self.study_name, self.storage_url)

    def final_run_dir(self, name: str) -> Path:
        """The run folder of a front member's final training (``--retrain-top``): one per set of
        the settings it trains with, so that a rerun with others starts its own, and the same
        settings resume."""
        settings = [f"e{self.final_epochs}", f"s{self.seed}"]
        settings += [f"{k}{v}" for k, v in (("b", self.batch_size), ("lr", self.lr),
                                            ("v", self.val_size)) if v is not None]  # fmt: skip
        return self.trial_root / "final" / "-".join([name, *settings])

    @property
    def rungs(self) -> tuple[int, ...]:
        """Epochs at which candidates are compared; the last is ``epochs`` (see dnas.fidelity)."""
        from dnas.fidelity import rungs

        return rungs(self.min_epochs or self.epochs, self.epochs, self.reduction_factor)

    @property
    def train_batch_size(self) -> int:
        """The batch each trial trains with (what a memory budget is predicted at)."""
        from dnas.recipes import fast_recipe

        return self.batch_size or fast_recipe().batch_size

    @property
    def training_key(self) -> str:
        """What, besides the architecture, decides a trial's result: two trials with the same
        architecture and key are the same candidate (a duplicate is never trained twice). The
        rungs are not part of it: continuing from a rung's checkpoint is exact."""
        keys = ("dataset", "epochs", "train_subset", "val_size", "batch_size", "lr")
        return " ".join(f"{k}={getattr(self, k)}" for k in keys)

    @property
    def report_dir(self) -> Path:
        return Path(self.reports_dir) / self.study_name


# Keys a study file may set: the config's fields under their command-line names, less where files
# go (the output folders, the storage, the data cache: those are the defaults or what the user
# names on the command line).
_FILE_ONLY_RENAMES = {"budget": "budgets", "timeout": "timeout_s"}
_NOT_IN_FILES = {"studies_dir", "reports_dir", "storage", "data_dir", "budgets", "timeout_s"}


def file_keys() -> list[str]:
    return sorted(
        {
            *_FILE_ONLY_RENAMES,
            *(f for f in SearchConfig.__struct_fields__ if f not in _NOT_IN_FILES),
        }
    )


def check_field(name: str, value: Any) -> Any:
    """``value`` held to field ``name``'s annotation (type and limits) and converted to its
    type ('wrn' becomes Space.wrn, a list of budgets a tuple), or one DnasError line naming the
    key, the value and what was expected."""
    (field,) = [f for f in msgspec.structs.fields(SearchConfig) if f.name == name]
    value = os.fspath(value) if isinstance(value, os.PathLike) else value  # Path("x")
    try:
        return msgspec.convert(value, field.type, strict=True)
    except msgspec.ValidationError as e:
        where = str(e).replace(" - at `$", f" - at `$.{name}", 1)
        where += "" if where != str(e) else f" - at `$.{name}`"
        raise DnasError(_explain(where, {name: value}, options=False)) from None


def parse_duration(text: str) -> float:
    """'2h', '30m', '90s', '1h30m' or plain seconds."""
    m = re.fullmatch(
        r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip()
    )
    if not text.strip() or not m or not any(m.groups()):
        raise DnasError(f"bad duration {text!r}: write e.g. 2h, 30m, 90s or 1h30m")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    if h * 3600 + mi * 60 + s <= 0:
        raise DnasError(f"bad duration {text!r}: it must be longer than 0 s")
    return h * 3600 + mi * 60 + s


MAX_STUDY_FILE = 64 * 1024  # bytes; the study files shipped are under 1 KiB
STUDY_FILE = "a study file (a short TOML, see studies/*.toml)"


def read_toml(path: Path) -> dict[str, Any]:
    """A study file's keys as the config's fields; ``make_config`` checks their types."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    raw = read_small_file(path, "--config", MAX_STUDY_FILE, STUDY_FILE)
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark is allowed
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DnasError(f"--config {path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(file_keys()))
    if unknown:
        raise DnasError(
            f"--config {path}: unknown key {unknown[0]!r}; a study file may set"
            f" {', '.join(file_keys())}"
        )
    if "budget" in data:
        b = data.pop("budget")
        data["budgets"] = [b] if isinstance(b, str) else b
        if not isinstance(b, (str, list)):
            raise DnasError(f"--config {path}: budget = {b!r}: expected '1M-params' or a list")
    if "timeout" in data:
        t = data.pop("timeout")
        try:
            if not isinstance(t, (str, int, float)) or isinstance(t, bool):
                raise DnasError("expected a duration like '2h'")
            data["timeout_s"] = parse_duration(str(t))
        except DnasError as e:
            raise DnasError(f"--config {path}: timeout = {t!r}: {e}") from None
    try:  # each value on its own: one that an option overrides must still be a right one
        for key, value in data.items():
            check_field(key, value)
        parse_budgets(data.get("budgets") or ["1M-params"])
        if data.get("study") is not None:
            check_study_name(data["study"])
    except DnasError as e:
        raise DnasError(f"--config {path}: {e}") from None
    return data


def make_config(values: dict[str, Any], source: str = "options") -> SearchConfig:
    """Validate ``values`` (field name -> value) into a SearchConfig, or one DnasError line that
    names the key, its value and what was expected."""
    if "timeout_s" in values and "trials" not in values:
        values = {**values, "trials": None}  # a time budget alone: as many trials as fit
    try:
        return msgspec.convert(values, SearchConfig, strict=True)
    except msgspec.ValidationError as e:
        explained = _explain(str(e), values, options=not source)
        raise DnasError(f"{source}: {explained}" if source else explained) from None


_NAMES = {"budgets": "budget", "timeout_s": "timeout"}


def _explain(message: str, values: dict[str, Any], options: bool) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.trials`" as "trials = 'ten': expected int"."""
    m = re.fullmatch(r"(.*) - at `\$\.(\w+)(.*)`", message)
    if not m:
        return message
    what, key, rest = m.groups()
    shown = _NAMES.get(key, key)
    if options:  # as the command line spells it
        shown = "--" + shown.replace("_", "-")
    value = values.get(key)
    for index in re.findall(r"\[(\d+)\]", rest):  # budgets[1]: that element, not the list
        with contextlib.suppress(IndexError, KeyError, TypeError):
            value = value[int(index)]
    what = re.sub(r"Expected `(.+?)`(, got `\w+`)?", r"expected \1", what).replace(" | null", "")
    what = what.replace("Invalid enum value", "not one of")
    if key in ("space", "objective", "cost", "sampler", "device"):
        choices = [c.value for c in _ENUMS[key]]
        what = f"expected one of {', '.join(choices)}"
    value = value.value if isinstance(value, enum.Enum) else value
    if options:
        return f"{shown}{rest} {value!r}: {what}"
    toml = str(value).lower() if isinstance(value, bool) else repr(value)  # as the file has it
    return f"{shown}{rest} = {toml}: {what}"


_ENUMS = {"space": Space, "objective": Objective, "cost": CostMetric, "sampler": Sampler,
          "device": Device}  # fmt: skip

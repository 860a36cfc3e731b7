"""A training run's folder and its checkpoint: which file holds what, written atomically (a
temporary file, then ``os.replace``), and read back only as plain data
(``torch.load(weights_only=True)``).

A run folder holds

- ``config.json``: what produced the run (spec, options, recipe, data, device, versions, commit);
- ``metrics.jsonl``: one line per completed epoch;
- ``checkpoint.pt``: weights, optimizer and RNG states, the spec and the metrics, rewritten after
  every epoch; a resume trusts only this file;
- ``result.json``: the final ``TrainResult``.

Anything read from a file is checked before it is used: a file that is not a dnas checkpoint, or
whose weights do not fit its spec, is a one-line ``DnasError`` that says which.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import platform
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from dnas.budget import require_fits
from dnas.device import available_memory
from dnas.errors import DnasError, read_small_file, write_atomic, writing
from dnas.models import build
from dnas.spec import DenseNetSpec, Spec, WRNSpec

CONFIG = "config.json"
METRICS = "metrics.jsonl"
REUSE_PAGE = ("reuse.html", "plotly.min.js")  # what `dnas reuse RUN` writes beside them
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
CHECKPOINT_FORMAT = "dnas-checkpoint-v1"  # the marker every dnas checkpoint carries


# ---- specs as plain data ----------------------------------------------------------------------

_SPEC_CLASSES: dict[str, type] = {"densenet": DenseNetSpec, "wrn": WRNSpec}
# Field annotations (strings: the spec module uses postponed annotations) -> accepted JSON types.
_JSON_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "Stem": (str,)}


def spec_to_dict(spec: Spec) -> dict:
    """The spec as JSON-ready data, with its family: what checkpoints and config.json store."""
    return {"family": spec.family, **asdict(spec)}


def spec_from_dict(d: object) -> Spec:
    """The spec ``spec_to_dict`` wrote; a DnasError naming the problem for anything else."""
    if not isinstance(d, dict):
        raise DnasError(f"not a dnas spec: expected an object, got {type(d).__name__}")
    d = dict(d)
    family = d.pop("family", None)
    cls = _SPEC_CLASSES.get(family) if isinstance(family, str) else None
    if cls is None:
        raise DnasError(f"not a dnas spec: family {family!r} (expected densenet or wrn)")
    known = {f.name: f.type for f in fields(cls)}
    if unknown := sorted(set(d) - set(known)):
        raise DnasError(f"not a valid {family} spec: unknown keys {', '.join(unknown)}")
    for key, value in d.items():
        if not _json_type_fits(known[key], value):
            raise DnasError(f"not a valid {family} spec: {key} = {value!r} is not {known[key]}")
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**d)


def _json_type_fits(annotation: str, value: object) -> bool:
    if annotation.startswith("tuple"):
        return isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    want = _JSON_TYPES.get(annotation)
    if want is None:  # a type this check does not know: the spec's own validation decides
        return True
    return isinstance(value, want) and (bool in want or not isinstance(value, bool))


MAX_SPEC_FILE = 1024 * 1024  # bytes; a run's config.json is a few KiB
SPEC_FILE = "a JSON spec (a run's config.json, or a spec_to_dict object)"


def load_spec(name_or_path: str | Path, num_classes: int = 10, in_channels: int = 3) -> Spec:
    """A spec from a canonical name or a JSON file (``spec_to_dict``'s form, ``{"name": ...}``, or
    a run's config.json), with the dataset's classes and input channels."""
    path = Path(name_or_path)
    if str(name_or_path).endswith(".json") or path.is_file():
        raw = read_small_file(path, "spec file", MAX_SPEC_FILE, SPEC_FILE)
        try:
            d = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            raise DnasError(f"spec file {path}: not JSON ({why}); give {SPEC_FILE}") from None
        d = d.get("spec", d) if isinstance(d, dict) else d
        if not isinstance(d, dict):
            raise DnasError(f"{path}: expected a JSON object with a spec")
        from dnas.names import parse_name

        try:
            if "name" in d and "family" not in d:  # an architecture's name, never another file
                return parse_name(str(d["name"]), num_classes, in_channels)
            spec = spec_from_dict(d)
        except DnasError as e:
            raise DnasError(f"{path}: {e}") from None
        return replace(spec, num_classes=num_classes, in_channels=in_channels)
    from dnas.names import parse_name

    return parse_name(str(name_or_path), num_classes, in_channels)


# ---- reading a checkpoint ---------------------------------------------------------------------

# torch.save's legacy (non-zip) format opens with this pickled magic number.
_LEGACY_TORCH_HEAD = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _not_torch_file(path: Path) -> str | None:
    """Why ``path`` is not a file torch.save wrote, or None when it looks like one."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_HEAD))
    if head == _LEGACY_TORCH_HEAD:
        return None
    if not head.startswith(b"PK\x03\x04"):
        return "not a PyTorch file"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "a damaged PyTorch file: cut short or corrupted"
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "a zip archive, not a PyTorch file"
    return None


def load_checkpoint(path: str | Path) -> dict:
    """A dnas checkpoint (a run directory or its checkpoint.pt) as plain data.

    Raises:
        DnasError: one line saying what the file is instead: missing, not a PyTorch file, a
            PyTorch file holding pickled Python objects, or one without the dnas marker.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    try:  # another process (a search pruning its checkpoints) may remove it at any moment
        why = _not_torch_file(path) if path.is_file() else "missing"
    except FileNotFoundError:
        why = "missing"
    if why == "missing":
        raise DnasError(f"no checkpoint at {path}")
    if why:
        raise DnasError(f"{path} is not a dnas checkpoint ({why})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged archive, a foreign pickle: all user errors here
        text = str(e).strip()
        if "Weights only load failed" in text and "GLOBAL" in text:
            why = "a PyTorch file holding pickled Python objects, not only tensors and plain data"
            raise DnasError(f"{path} is not a dnas checkpoint ({why})") from None
        why = f"{type(e).__name__}: {text.splitlines()[0][:100]}" if text else type(e).__name__
        raise DnasError(f"{path} is not a readable dnas checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DnasError(f"{path} is not a dnas checkpoint (no {CHECKPOINT_FORMAT!r} marker)")
    return ckpt


def _misfit(model: nn.Module, weights: object) -> str | None:
    """How ``weights`` fail to fit ``model``'s state dict, or None when they fit."""
    if not isinstance(weights, dict):
        return "no state dict"
    want = model.state_dict()
    missing = [k for k in want if k not in weights]
    unexpected = [k for k in weights if k not in want]
    shapes = [
        k for k in want if k in weights and getattr(weights[k], "shape", None) != want[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if shapes:
        k = shapes[0]
        have = list(weights[k].shape) if isinstance(weights[k], torch.Tensor) else "not a tensor"
        problems.append(
            f"{len(shapes)} of another shape, e.g. {k} {have} where the spec needs"
            f" {list(want[k].shape)}"
        )
    return "; ".join(problems) or None


def load_model(path: str | Path) -> tuple[Spec, nn.Module]:
    """The spec and trained network (eval mode, CPU) stored in a checkpoint.

    Raises:
        DnasError: not a dnas checkpoint (see ``load_checkpoint``), a stored spec that is not a
            valid spec, or weights that do not fit it (a forged or foreign checkpoint).
    """
    path = Path(path)
    file = path / CHECKPOINT if path.is_dir() else path
    ckpt = load_checkpoint(file)
    try:
        spec = spec_from_dict(ckpt.get("spec"))
    except DnasError as e:
        raise DnasError(f"{file}: its stored spec is unusable ({e})") from None
    try:  # before building: a forged spec may be huge
        require_fits(spec, available_memory("cpu"))
    except DnasError as e:
        raise DnasError(f"{file}: {e}") from None
    model = build(spec)
    if why := _misfit(model, ckpt.get("model")):
        raise DnasError(f"{file}: its weights do not fit its spec {spec.name} ({why})")
    model.load_state_dict(ckpt["model"])
    return spec, model.eval()


# ---- writing one ------------------------------------------------------------------------------


def _rng_state(gen: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def checkpoint_state(
    spec: Spec,
    config: dict,
    recipe: dict,
    data: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    metrics: list[dict],
) -> dict:
    """Everything a resume needs to continue bit-identically, as plain data."""
    return {
        "format": CHECKPOINT_FORMAT,
        "spec": spec_to_dict(spec),
        "config": config,
        "recipe": recipe,
        "data": data,
        "epoch": len(metrics),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(gen),
        "metrics": metrics,
    }


def restore_state(
    ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator
) -> None:
    """Load ``checkpoint_state``'s weights, optimizer state and random-number states back."""
    if why := _misfit(model, ckpt.get("model")):
        raise DnasError(f"the checkpoint's weights do not fit this model ({why})")
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


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode(), "run folder")


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


# ---- the run folder ---------------------------------------------------------------------------


def default_run_dir(
    spec_name: str, dataset: str, seed: int, root: str | Path = "studies/runs"
) -> Path:
    """``studies/runs/NAME-DATASET-sSEED-TIME`` (dnas writes under studies/ and reports/ only),
    with an image folder's path made safe for a file name."""
    safe = dataset.replace(":", "_").replace("/", "_")
    return Path(root) / f"{spec_name}-{safe}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunDir:
    """The folder of one training run and the four files in it."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def result_file(self) -> Path:
        return self.path / RESULT

    def holds_run(self) -> bool:
        """Whether a run here got anywhere: a checkpoint, a completed epoch's metrics line or a
        result. A run stopped before its first epoch ends leaves only config.json and an empty
        metrics.jsonl, which a new run replaces."""
        with contextlib.suppress(OSError):
            if self.metrics_file.stat().st_size > 0:
                return True
        return self.checkpoint_file.exists() or self.result_file.exists()

    def others(self) -> list[str]:
        """What the folder holds that no run writes: another program's files (``--out .git``).
        Hidden files do not count (a desktop's .DS_Store, NFS's .nfsNNNN, our .NAME.PID.tmp)."""
        ours = {CONFIG, METRICS, CHECKPOINT, RESULT, *REUSE_PAGE}
        if not self.path.is_dir():
            return []
        try:
            names = [f.name for f in self.path.iterdir()]
        except OSError as e:
            raise DnasError(f"--out {self.path}: cannot read it ({e.strerror or e})") from None
        others = [n for n in names if n not in ours and not n.startswith(".")]
        if CONFIG in names and not self._config_is_ours():  # a user's config.json, say
            others.append(CONFIG)
        return sorted(others)

    def _config_is_ours(self) -> bool:
        """Whether config.json is one that ``start`` wrote (a JSON object with the run's
        provenance and command line), not a user's file of the same name."""
        try:
            info = json.loads(self.config_file.read_bytes()[: 1 << 20])
        except (OSError, ValueError):
            return False
        return isinstance(info, dict) and isinstance(info.get("versions"), dict) and "argv" in info

    def resume(self) -> dict:
        """The checkpoint to continue from; each error also says what to do instead."""
        if not self.checkpoint_file.is_file():
            raise DnasError(
                f"no checkpoint at {self.checkpoint_file}: nothing to resume;"
                " start the run without --resume"
            )
        try:
            return load_checkpoint(self.checkpoint_file)
        except DnasError as e:
            raise DnasError(f"{e}; start a new run with another --out") from None

    def start(self, metrics: list[dict], info: dict | None = None) -> None:
        """Create the folder, write config.json (``info``, for a new run) and rewrite
        metrics.jsonl with the epochs the checkpoint holds."""
        with writing(self.path, "run folder"):
            self.path.mkdir(parents=True, exist_ok=True)
        if info is not None:
            info = {**info, "versions": provenance(), "argv": sys.argv}
            _write_text(self.config_file, json.dumps(info, indent=2) + "\n")
        _write_text(self.metrics_file, "".join(json.dumps(m) + "\n" for m in metrics))

    def save(self, state: dict) -> None:
        """Checkpoint first (atomically), then its last metrics line: a resume trusts only the
        checkpoint."""
        buffer = io.BytesIO()  # serialised in memory: a failed write is an OSError, not torch's
        torch.save(state, buffer)
        write_atomic(self.checkpoint_file, buffer.getvalue(), "run folder")
        with writing(self.metrics_file, "run folder"), open(self.metrics_file, "a") as f:
            f.write(json.dumps(state["metrics"][-1]) + "\n")

    def write_result(self, result: dict) -> None:
        _write_text(self.result_file, json.dumps(result, indent=2) + "\n")

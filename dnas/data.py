"""Datasets as uint8 tensors on the training device, and whole-batch augmentation there.

``load_data`` reads a dataset once (torchvision's downloaders, Debian's Fashion-MNIST files, or a
folder of images), carves a seeded, class-stratified validation split from the training set,
optionally a stratified training subset, and moves everything to the device as uint8. ``batches``
then yields normalised (and, where the recipe wants it, randomly cropped and flipped) float batches
made with a handful of tensor ops per batch: no per-image Python, no DataLoader workers (airbench
does the same; it is what makes short trials cheap).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from dnas.datasets import DatasetInfo, dataset_info, image_folder
from dnas.errors import DnasError

PadMode = Literal["zeros", "reflect"]

# Validation images carved from the training set. CIFAR: 5,000 as in the DenseNet paper (§4.2,
# "we hold out 5,000 training images as a validation set"); the same 5,000 for SVHN and the MNISTs
# (the usual MNIST convention); 10% for an image folder.
VAL_SIZE = {"cifar10": 5000, "cifar100": 5000, "svhn": 5000, "fashion-mnist": 5000, "mnist": 5000}
IMAGEFOLDER_VAL_FRACTION = 0.1
# Standard augmentation (4-pixel pad + random crop + flip) only where the papers use it ("C10+").
AUGMENTED = {"cifar10", "cifar100"}
# An image folder is read whole into memory: a folder with more files and folders in it than this
# is not one dnas can train on, and its scan stops there (rather than walk, say, a whole disk).
MAX_FOLDER_ENTRIES = 1_000_000
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def default_data_dir() -> Path:
    """Where datasets are downloaded: ``$DNAS_DATA``, else ``$XDG_CACHE_HOME/dnas/data``."""
    if env := os.environ.get("DNAS_DATA"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dnas" / "data"


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test images (uint8, N×C×H×W) and labels (int64), all on one device.

    Search selects on ``val``; ``test`` is for an explicit final evaluation only. ``mean`` and
    ``std`` are per-channel statistics of the training split in [0, 1] units.
    """

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # 4-pixel pad + random crop + horizontal flip on training batches
    source: str  # where the images were read from

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def summary(self) -> dict:
        """Plain data for config.json."""
        return {
            "name": self.info.name,
            "source": self.source,
            "train": len(self.train_y),
            "val": len(self.val_y),
            "test": len(self.test_y),
            "input_size": list(self.info.input_size),
            "num_classes": self.info.num_classes,
            "augment": self.augment,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _missing(name: str, where: Path, files: str, error: Exception) -> DnasError:
    reason = (str(error).strip().splitlines() or [""])[0][:100]
    return DnasError(
        f"dataset {name} is not in {where} and could not be downloaded ({type(error).__name__}:"
        f" {reason}); download it on a connected machine with `dnas train ... --dataset {name}`"
        f" and copy {where} here, or put {files} in a directory and pass --data-dir DIR"
    )


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DnasError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    if data.numel() != int(torch.tensor(shape).prod()):
        raise DnasError(f"{path} is truncated: expected shape {shape}")
    return data.reshape(shape)


def _find_idx(name: str, data_dir: Path) -> Path | None:
    """A directory holding the four IDX files: data_dir itself, its torchvision layout, or (for
    Fashion-MNIST) Debian's dataset-fashion-mnist package."""
    tv = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    candidates = [data_dir, data_dir / name, data_dir / tv / "raw"]
    if name == "fashion-mnist":
        candidates.append(DEBIAN_FASHION_MNIST)
    for d in candidates:
        if all(
            (d / f).exists() or (d / f.removesuffix(".gz")).exists()
            for pair in IDX_FILES.values()
            for f in pair
        ):
            return d
    return None


def _check_data_dir(root: Path, what: str = "--data-dir") -> None:
    """Refuse a ``--data-dir`` that is, or lies under, something other than a folder (/dev/null,
    a file): torchvision's downloader would fail on it with a message about the download."""
    existing = root.absolute()
    try:
        if existing.is_symlink() and not existing.exists():
            raise DnasError(f"{what} {root}: a link to nothing; give a folder")
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        folder = existing.is_dir()
    except OSError as e:  # a folder this user may not look into
        if e.errno == errno.ENAMETOOLONG:  # the command line says which name, shortened
            raise
        raise DnasError(f"{what} {root}: cannot look into it ({e.strerror or e})") from None
    if not folder:
        why = "not a folder" if existing == root.absolute() else f"{existing} is not a folder"
        raise DnasError(
            f"{what} {root}: {why}; give the folder that holds the datasets, or a new one"
            " for them to download into"
        )


def _load_idx_dir(d: Path) -> tuple[torch.Tensor, ...]:
    out = []
    for images, labels in IDX_FILES.values():
        pick = [d / f if (d / f).exists() else d / f.removesuffix(".gz") for f in (images, labels)]
        out += [_read_idx(pick[0]).unsqueeze(1), _read_idx(pick[1]).long()]
    return tuple(out)


def _folders(root: Path) -> set[Path]:
    """``root``, the folders under it and its ancestors, those that exist."""
    below = {d for d in root.rglob("*") if d.is_dir()} if root.is_dir() else set()
    return below | {d for d in (root, *root.parents) if d.is_dir()}


def _torchvision(name: str, root: Path) -> tuple[torch.Tensor, ...]:
    """Train and test images (N×C×H×W uint8) and labels through torchvision's downloaders."""
    import torchvision.datasets as tvd

    def get(train: bool):
        if name == "svhn":
            return tvd.SVHN(root / "svhn", split="train" if train else "test", download=True)
        cls = {
            "cifar10": tvd.CIFAR10,
            "cifar100": tvd.CIFAR100,
            "mnist": tvd.MNIST,
            "fashion-mnist": tvd.FashionMNIST,
        }[name]
        return cls(root, train=train, download=True)

    had = _folders(root)
    try:
        sets = [get(train) for train in (True, False)]
    except (OSError, RuntimeError):
        for d in sorted(_folders(root) - had, key=lambda d: -len(d.parts)):
            with contextlib.suppress(OSError):  # a failed download leaves no empty folders
                d.rmdir()
        raise
    out = []
    for ds in sets:
        if name == "svhn":
            x, y = torch.from_numpy(ds.data), torch.as_tensor(ds.labels)
        elif name in ("cifar10", "cifar100"):
            x, y = torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.as_tensor(ds.targets)
        else:
            x, y = ds.data.unsqueeze(1), torch.as_tensor(ds.targets)
        out += [x.contiguous(), y.long()]
    return tuple(out)


def _image_classes(d: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes and ``(file, class index)`` samples of a folder with one subfolder per class,
    as torchvision's ``ImageFolder`` lists them (classes sorted; each class's folders walked in
    sorted order, links followed; files with an image extension), but each real folder walked
    once per class, so that a link to a folder above ends, and at most ``MAX_FOLDER_ENTRIES``
    looked at."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        classes = sorted(e.name for e in os.scandir(d) if e.is_dir())
    except OSError as e:
        raise DnasError(f"imagefolder:{d}: cannot be read ({e.strerror})") from None
    if not classes:
        raise DnasError(
            f"imagefolder:{d}: no subfolders; give a folder with one subfolder per class"
        )
    if len(classes) == 1:  # every image would be right: 100% accuracy that means nothing
        raise DnasError(
            f"imagefolder:{d}: one class folder ({classes[0]}); a classifier needs two or more,"
            " one subfolder per class"
        )

    def identity(folder: str | Path) -> tuple[int, int] | None:
        try:
            st = os.stat(folder)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    # The dataset's folder and its class folders are walked only as themselves, never through a
    # link from inside a class (a cycle, or one class's whole folder given to another); below
    # them, each real folder at most once per class, as ImageFolder lists it.
    tops = {identity(f) for f in (d, *(d / c for c in classes))}
    entries, samples = 0, []
    for label, cls in enumerate(classes):
        found, top, seen = [], str(d / cls), set(tops)
        for root, dirs, files in os.walk(top, followlinks=True):
            if root != top:
                key = identity(root)
                if key is None or key in seen:  # gone, or reached again through a link
                    dirs[:] = []
                    continue
                seen.add(key)
            dirs.sort()
            entries += len(dirs) + len(files)
            if entries > MAX_FOLDER_ENTRIES:
                raise DnasError(
                    f"imagefolder:{d}: more than {MAX_FOLDER_ENTRIES:,} files and folders in it;"
                    " dnas reads a dataset whole into memory, so give a folder of at most that"
                    " many, one subfolder per class"
                )
            images = sorted(f for f in files if f.lower().endswith(IMG_EXTENSIONS))
            for f in images:  # reading a pipe or device named .png would wait for ever
                if not os.path.isfile(file := os.path.join(root, f)):
                    raise DnasError(
                        f"imagefolder: {file}: not a plain file (a pipe, device or broken link);"
                        " remove it"
                    )
            found.append((root, images))
        found.sort()
        images = [(os.path.join(root, f), label) for root, names in found for f in names]
        if not images:
            raise DnasError(
                f"imagefolder:{d}: class folder {cls!r} holds no images"
                f" ({', '.join(IMG_EXTENSIONS)}); remove it or add its images"
            )
        samples += images
    return classes, samples


def _imagefolder(path: Path) -> tuple[DatasetInfo, tuple[torch.Tensor, ...]]:
    """``PATH/train/CLASS/*.png`` (+ optional ``PATH/test/CLASS/...``), or ``PATH/CLASS/*``.

    Images are converted to RGB and resized to the size of the first one.
    """
    import numpy as np
    from PIL import Image

    if not path.is_dir():
        raise DnasError(
            f"imagefolder:{path}: no such directory; give a folder with one subfolder per class"
        )
    train_dir = path / "train" if (path / "train").is_dir() else path
    size: tuple[int, int] | None = None

    def read(d: Path, classes: list[str] | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        nonlocal size
        found, samples = _image_classes(d)
        if classes is not None and found != classes:
            raise DnasError(f"imagefolder: {d} has classes {found}, but train has {classes}")
        images = []
        for file, _ in samples:
            try:
                img = Image.open(file).convert("RGB")
            except (OSError, Image.DecompressionBombError) as e:  # not an image, cut short, huge
                raise DnasError(
                    f"imagefolder: {file}: not an image that can be read ({e}); remove or fix it"
                ) from None
            size = size or img.size
            images.append(np.asarray(img.resize(size) if img.size != size else img))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor([label for _, label in samples], dtype=torch.long), found

    train_x, train_y, classes = read(train_dir, None)
    if (path / "test").is_dir():
        test_x, test_y, _ = read(path / "test", classes)
    else:
        test_x, test_y = train_x[:0], train_y[:0]
    info = DatasetInfo(f"imagefolder:{path}", 3, train_x.shape[2], train_x.shape[3], len(classes))
    return info, (train_x, train_y, test_x, test_y)


def stratified_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn at random with each class in proportion to its share of ``labels``.

    Every class is shuffled; the images are then taken in order of their rank within their class
    divided by the class size, so any prefix of the order is stratified.
    """
    perm = torch.randperm(len(labels), generator=generator)
    y = labels[perm]
    counts = torch.bincount(y)
    order = torch.argsort(y, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(y)
    rank[order] = torch.arange(len(y)) - starts[y[order]]
    key = (rank.double() + 0.5) / counts[y].double()
    return perm[torch.argsort(key, stable=True)[:n]]


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in float64 chunks."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for chunk in x.split(4096):
        c = chunk.double().div_(255)
        s += c.sum((0, 2, 3))
        s2 += c.square().sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (s2 / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def load_data(
    name: str,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    val_size: int | None = None,
    train_subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load a dataset onto ``device`` as uint8 tensors, with a validation split carved from train.

    Args:
        name: ``cifar10``, ``cifar100``, ``svhn``, ``fashion-mnist``, ``mnist`` or
            ``imagefolder:PATH``.
        data_dir: download/cache directory [default: ``default_data_dir()``]. Fashion-MNIST is
            also found in Debian's ``/usr/share/datasets/fashion-mnist``.
        val_size: validation images [default: ``VAL_SIZE[name]``, 10% for an image folder].
        train_subset: keep only this many training images (class-stratified) for quick runs.
        seed: seeds the validation split and the subset. Keep it fixed across the trials of one
            search so that they all select on the same validation images.

    Raises:
        DnasError: unknown dataset, data missing and not downloadable, or impossible sizes.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if (source := image_folder(name)) is not None:
        if not source.strip():  # it would mean the current folder
            raise DnasError("imagefolder: needs a folder: imagefolder:PATH")
        info, (train_x, train_y, test_x, test_y) = _imagefolder(Path(source).expanduser())
        val_default = max(1, round(IMAGEFOLDER_VAL_FRACTION * len(train_y)))
        augment = True
    else:
        info = dataset_info(name)
        if name == "imagenet":
            raise DnasError(
                "imagenet's images are not loaded by dnas (its costs and models are known);"
                " use imagefolder:PATH for your own images"
            )
        env = "DNAS_DATA" if os.environ.get("DNAS_DATA") else "the data cache"
        _check_data_dir(root, "--data-dir" if data_dir is not None else env)
        idx_dir = _find_idx(name, root) if name in ("mnist", "fashion-mnist") else None
        if idx_dir is not None:
            train_x, train_y, test_x, test_y = _load_idx_dir(idx_dir)
            source = str(idx_dir)
        else:
            try:
                train_x, train_y, test_x, test_y = _torchvision(name, root)
            except (OSError, RuntimeError) as e:
                files = {
                    "cifar10": "cifar-10-python.tar.gz",
                    "cifar100": "cifar-100-python.tar.gz",
                    "svhn": "svhn/train_32x32.mat and svhn/test_32x32.mat",
                    "mnist": "the four MNIST IDX files (train-images-idx3-ubyte.gz, ...)",
                    "fashion-mnist": (
                        "the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...)"
                    ),
                }
                raise _missing(name, root, files[name], e) from None
            source = str(root)
        val_default = VAL_SIZE[name]
        augment = name in AUGMENTED
    val_n = val_default if val_size is None else val_size
    if len(train_y) < 2:
        raise DnasError(
            f"{info.name} has {len(train_y)} training image(s); give at least two, one of them to"
            " validate on"
        )
    if not 0 <= val_n < len(train_y):
        raise DnasError(
            f"--val-size {val_n}: {info.name} has {len(train_y):,} training images, and at least"
            f" one must stay to train on; give at most {len(train_y) - 1:,}"
        )
    g = torch.Generator().manual_seed(seed)
    order = stratified_indices(train_y, len(train_y), g)
    val_idx, train_idx = order[:val_n], order[val_n:]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_idx):
            raise DnasError(
                f"--train-subset must be in [1, {len(train_idx)}] for {info.name},"
                f" got {train_subset}"
            )
        train_idx = train_idx[stratified_indices(train_y[train_idx], train_subset, g)]
    mean, std = _channel_stats(train_x[train_idx])
    dev = torch.device(device)
    return DataSplits(
        info=info,
        train_x=train_x[train_idx].to(dev),
        train_y=train_y[train_idx].to(dev),
        val_x=train_x[val_idx].to(dev),
        val_y=train_y[val_idx].to(dev),
        test_x=test_x.to(dev),
        test_y=test_y.to(dev),
        mean=mean,
        std=std,
        augment=augment,
        source=source,
    )


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 N×C×H×W -> float32, per-channel standardised."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255
    return (x.float() - m) / s


def crop_flip(
    x: torch.Tensor, generator: torch.Generator, pad: int = 4, mode: PadMode = "zeros"
) -> torch.Tensor:
    """Pad by ``pad`` pixels, take a random crop of the original size and flip half the images.

    One gather for the whole batch: each image's rows and columns are index vectors (a flipped
    image's columns run backwards). Random numbers come from ``generator`` (on the CPU, so a run
    is reproducible and resumable on any device). Zero padding is the DenseNet paper's (applied
    after normalisation, as in fb.resnet.torch); ``reflect`` is the WRN code's.
    """
    n, _, h, w = x.shape
    shift = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad), mode="constant" if mode == "zeros" else "reflect")
    rows = shift[0, :, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    cols = shift[1, :, None] + torch.where(flip[:, None], w - 1 - cols, cols)
    nhwc = padded.permute(0, 2, 3, 1)[
        torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]
    ]
    return nhwc.permute(0, 3, 1, 2)


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    generator: torch.Generator | None = None,
    augment: bool = False,
    pad_mode: PadMode = "zeros",
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches. With a ``generator`` the order is shuffled and the last partial
    batch dropped (training); without one, the data is walked in order (evaluation)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if generator is None:
        for i in range(0, len(y), batch_size):
            yield (
                normalize(x[i : i + batch_size], mean, std).contiguous(memory_format=fmt),
                y[i : i + batch_size],
            )
        return
    perm = torch.randperm(len(y), generator=generator).to(x.device)
    for i in range(max(1, len(y) // batch_size)):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        xb = normalize(x[idx], mean, std)
        if augment:
            xb = crop_flip(xb, generator, mode=pad_mode)
        yield xb.contiguous(memory_format=fmt), y[idx]

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dnas.data as data_module
from dnas.data import (
    DEBIAN_FASHION_MNIST,
    IDX_FILES,
    _image_classes,
    _read_idx,
    batches,
    crop_flip,
    load_data,
    normalize,
    stratified_indices,
)
from dnas.errors import DnasError


def _idx_bytes(t: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, t.dim()]) + b"".join(s.to_bytes(4, "big") for s in t.shape)
    return header + t.numpy().tobytes()


def write_idx_dataset(d: Path, n_train: int = 300, n_test: int = 60, size: int = 28) -> Path:
    """A Fashion-MNIST-shaped IDX dataset.

    Pixels (0, 0) and (0, 1) of each image encode its index.
    """
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for (images, labels), n in zip(IDX_FILES.values(), (n_train, n_test)):
        y = torch.arange(n, dtype=torch.uint8) % 10
        x = torch.randint(0, 256, (n, size, size), generator=g, dtype=torch.uint8)
        x[:, 0, 0] = torch.arange(n) % 256
        x[:, 0, 1] = torch.arange(n) // 256
        # Class-dependent brightness so a tiny model can learn something.
        x[:, 8:20, 8:20] = (y * 25).view(-1, 1, 1)
        (d / images).write_bytes(gzip.compress(_idx_bytes(x)))
        (d / labels).write_bytes(gzip.compress(_idx_bytes(y)))
    return d


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "fmnist")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, even on a connected machine."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist())


def test_read_idx_round_trip(tmp_path: Path) -> None:
    t = torch.randint(0, 256, (5, 3, 4), dtype=torch.uint8)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(t))
    assert torch.equal(_read_idx(tmp_path / "a.idx"), t)
    (tmp_path / "bad.idx").write_bytes(b"hello world")
    with pytest.raises(DnasError, match="not an IDX file"):
        _read_idx(tmp_path / "bad.idx")


def test_load_idx_splits_are_disjoint_stratified_and_seeded(idx_dir: Path) -> None:
    d = load_data("fashion-mnist", idx_dir, val_size=50, train_subset=100, seed=3)
    assert d.source == str(idx_dir)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (100, 1, 28, 28)
    assert (len(d.val_y), len(d.test_y)) == (50, 60)
    assert torch.bincount(d.train_y).tolist() == [10] * 10
    assert torch.bincount(d.val_y).tolist() == [5] * 10
    assert not _ids(d.train_x) & _ids(d.val_x)
    assert not d.augment  # none for the MNISTs
    again = load_data("fashion-mnist", idx_dir, val_size=50, train_subset=100, seed=3)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.val_x, d.val_x)
    other = load_data("fashion-mnist", idx_dir, val_size=50, train_subset=100, seed=4)
    assert _ids(other.val_x) != _ids(d.val_x)
    full = load_data("fashion-mnist", idx_dir, val_size=50, seed=3)
    assert len(full.train_y) == 250 and _ids(full.val_x) == _ids(d.val_x) == _ids(again.val_x)


def test_stratified_indices_keep_class_shares() -> None:
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    idx = stratified_indices(labels, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[idx], minlength=3).tolist() == [7, 2, 1]
    assert len(set(idx.tolist())) == 10


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_debian_fashion_mnist_found_offline(tmp_path: Path, offline: None) -> None:
    d = load_data("fashion-mnist", tmp_path / "empty", train_subset=200)
    assert d.source == str(DEBIAN_FASHION_MNIST)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (200, 5000, 10000)
    assert d.info.input_size == (1, 28, 28) and d.test_y.max() == 9
    assert abs(d.mean[0] - 0.286) < 0.02 and abs(d.std[0] - 0.353) < 0.02


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist"])
def test_missing_dataset_is_one_line_with_both_remedies(
    tmp_path: Path, offline: None, name: str
) -> None:
    with pytest.raises(DnasError) as e:
        load_data(name, tmp_path / "cache" / "data")
    msg = str(e.value)
    assert "\n" not in msg and name in msg and "connected machine" in msg and "--data-dir" in msg
    assert list(tmp_path.iterdir()) == []  # the failed download left no empty folders behind


@pytest.mark.parametrize("name", ["cifar10", "fashion-mnist"])
def test_a_data_dir_that_is_no_folder_is_refused_in_one_line(
    tmp_path: Path, offline: None, name: str
) -> None:
    # /dev/null was reported as a dataset that "could not be downloaded (FileExistsError ...)";
    # Fashion-MNIST was loaded from Debian's copy whatever --data-dir said.
    (tmp_path / "file").write_text("")
    for data_dir, why in ((os.devnull, "not a folder"), (tmp_path / "file" / "d", "is not a")):
        with pytest.raises(
            DnasError, match=f"^--data-dir {data_dir}: (.* )?{why}.*; give the folder"
        ):
            load_data(name, data_dir)
    assert Path(os.devnull).is_char_device() and [p.name for p in tmp_path.iterdir()] == ["file"]
    with pytest.MonkeyPatch.context() as env:  # named as the user named it
        env.setenv("DNAS_DATA", os.devnull)
        with pytest.raises(DnasError, match=f"^DNAS_DATA {os.devnull}: not a folder; give"):
            load_data(name)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(DnasError, match=r"/link: a link to nothing; give a folder$"):
        load_data(name, tmp_path / "link")


def test_a_data_dir_that_cannot_be_looked_into_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a user without the right to look into it (root may look anywhere: patched here).
    def refused(self: Path) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "is_symlink", refused)
    with pytest.raises(DnasError, match=r"^--data-dir /root/d: cannot look into it \(Permission"):
        load_data("cifar10", "/root/d")


def test_unknown_dataset() -> None:
    with pytest.raises(DnasError, match="unknown dataset"):
        load_data("cifar11")


def test_bad_sizes(idx_dir: Path) -> None:
    with pytest.raises(DnasError, match="--val-size 300: fashion-mnist has 300 training images"):
        load_data("fashion-mnist", idx_dir, val_size=300)
    with pytest.raises(DnasError, match="train-subset"):
        load_data("fashion-mnist", idx_dir, val_size=50, train_subset=251)


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (i * 20, 0, 255 if cls == "dog" else 0)).save(
                    tmp_path / split / cls / f"{i}.png"
                )
    d = load_data(f"imagefolder:{tmp_path}")
    assert d.info.num_classes == 2 and d.info.input_size == (3, 10, 12)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (11, 1, 4)
    with pytest.raises(DnasError, match="no such directory"):
        load_data(f"imagefolder:{tmp_path / 'nope'}")
    one = tmp_path / "one" / "cat"
    one.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(one / "0.png")
    # one class trained to "100%" and exited 0: refused before its one image is counted
    with pytest.raises(DnasError, match=r"one class folder \(cat\); a classifier needs two or"):
        load_data(f"imagefolder:{one.parent}")
    (tmp_path / "train" / "cat" / "6.png").write_text("garbage")  # named as an image, is not one
    with pytest.raises(DnasError, match=r"6.png: not an image that can be read \(cannot identify"):
        load_data(f"imagefolder:{tmp_path}")


def _save_images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (len(name), 0, 0)).save(folder / name)


def test_image_folder_lists_what_torchvision_lists(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    _save_images(tmp_path, ["b/z.png", "b/a.PNG", "b/deep/er/x.jpg", "b/deep/y.png", "a/1.png"])
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    tv = ImageFolder(str(tmp_path))
    assert _image_classes(tmp_path) == (tv.classes, tv.samples)


def test_image_folder_scan_ends_on_links_to_folders_above(tmp_path: Path) -> None:
    _save_images(tmp_path, ["cat/0.png", "dog/0.png"])
    (tmp_path / "cat" / "up").symlink_to(tmp_path)  # a cycle: cat/up/cat/up/...
    (tmp_path / "dog" / "self").symlink_to(tmp_path / "dog")
    classes, samples = _image_classes(tmp_path)
    assert classes == ["cat", "dog"]
    # Each real folder once, and no class's images through a link from another class.
    assert [(Path(f).relative_to(tmp_path).as_posix(), y) for f, y in samples] == [
        ("cat/0.png", 0),
        ("dog/0.png", 1),
    ]


def test_a_link_into_another_class_takes_nothing_from_it(tmp_path: Path) -> None:
    # One set of walked folders for all classes once left class b without its own subfolder.
    from torchvision.datasets import ImageFolder

    _save_images(tmp_path, ["a/x.png", "b/sub/y.png"])
    (tmp_path / "a" / "lnk").symlink_to(tmp_path / "b" / "sub")
    tv = ImageFolder(str(tmp_path))
    assert _image_classes(tmp_path) == (tv.classes, tv.samples)
    assert [y for _, y in tv.samples] == [0, 0, 1]


def test_image_folder_refuses_huge_and_empty_folders(tmp_path: Path, monkeypatch) -> None:
    _save_images(tmp_path, ["cat/0.png", "cat/1.png", "dog/0.png"])
    monkeypatch.setattr(data_module, "MAX_FOLDER_ENTRIES", 2)
    with pytest.raises(DnasError, match="more than 2 files and folders in it; dnas reads"):
        load_data(f"imagefolder:{tmp_path}")
    monkeypatch.undo()
    (tmp_path / "emu").mkdir()
    with pytest.raises(DnasError, match="class folder 'emu' holds no images"):
        load_data(f"imagefolder:{tmp_path}")
    with pytest.raises(DnasError, match="no subfolders"):
        load_data(f"imagefolder:{tmp_path / 'emu'}")
    (tmp_path / "emu").rmdir()
    os.mkfifo(tmp_path / "dog" / "1.png")  # PIL would wait on it for ever
    with pytest.raises(DnasError, match=r"dog/1.png: not a plain file \(a pipe, device"):
        load_data(f"imagefolder:{tmp_path}")


def _windows(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Every crop of the padded image, unflipped and flipped.

    The reference, one image at a time.
    """
    p = F.pad(x[None], (4, 4, 4, 4), mode="constant" if mode == "zeros" else "reflect")[0]
    crops = [
        p[:, dy : dy + x.shape[1], dx : dx + x.shape[2]] for dy in range(9) for dx in range(9)
    ]
    return crops + [c.flip(2) for c in crops]


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_flip_is_a_padded_crop_and_flip_per_image(mode: str) -> None:
    x = torch.randn(32, 3, 8, 8)
    out = crop_flip(x, torch.Generator().manual_seed(1), mode=mode)
    assert out.shape == x.shape
    flips = 0
    for i in range(len(x)):
        matches = [j for j, w in enumerate(_windows(x[i], mode)) if torch.equal(out[i], w)]
        assert matches, f"image {i} is not a crop of its padded input"
        flips += matches[0] >= 81
    assert 4 <= flips <= 28


def test_batches_normalise_and_cover_the_data() -> None:
    x = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(50)
    mean, std = (0.5,), (0.25,)
    evals = list(batches(x, y, 16, mean, std))
    assert [len(b[1]) for b in evals] == [16, 16, 16, 2]
    assert torch.allclose(evals[0][0], (x[:16].float() / 255 - 0.5) / 0.25, atol=1e-5)
    train = list(batches(x, y, 16, mean, std, torch.Generator().manual_seed(0), augment=True))
    assert len(train) == 3  # the last partial batch is dropped
    seen = torch.cat([b[1] for b in train])
    assert len(set(seen.tolist())) == 48
    assert torch.equal(normalize(x, mean, std), (x.float() - 127.5) / 63.75)

"""What each dataset looks like to a network: channels, input size, classes. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from dnas.errors import DnasError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    paper_key: str  # the column of the papers' tables this dataset is compared with

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("cifar10", 3, 32, 32, 10, "C10+"),
        DatasetInfo("cifar100", 3, 32, 32, 100, "C100+"),
        DatasetInfo("svhn", 3, 32, 32, 10, "SVHN"),
        DatasetInfo("fashion-mnist", 1, 28, 28, 10, ""),
        DatasetInfo("mnist", 1, 28, 28, 10, ""),
        DatasetInfo("imagenet", 3, 224, 224, 1000, "ImageNet"),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DnasError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        ) from None

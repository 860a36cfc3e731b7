"""What each dataset looks like to a network: channels, input size, classes. Torch-free."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dnas.errors import DnasError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    height: int
    width: int
    num_classes: int

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("cifar10", 3, 32, 32, 10),
        DatasetInfo("cifar100", 3, 32, 32, 100),
        DatasetInfo("svhn", 3, 32, 32, 10),
        DatasetInfo("fashion-mnist", 1, 28, 28, 10),
        DatasetInfo("mnist", 1, 28, 28, 10),
        DatasetInfo("imagenet", 3, 224, 224, 1000),
    )
}


# The closed set of names, for command-line choices (``imagefolder:PATH`` is open, so it is not
# one of them).
DatasetName = enum.Enum(  # type: ignore[misc]
    "DatasetName", {d.replace("-", "_"): d for d in DATASETS}, type=str
)


def image_folder(name: object) -> str | None:
    """The PATH of a dataset named ``imagefolder:PATH`` (as given); None for any other name."""
    if isinstance(name, str) and name.startswith("imagefolder:"):
        return name.split(":", 1)[1]
    return None


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DnasError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        ) from None

from __future__ import annotations

import random

import pytest
import torch

from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, Spec, WRNSpec


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def random_spec(rng: random.Random) -> tuple[Spec, tuple[int, int, int]]:
    """A random small architecture from either space, with an input (C, H, W) it accepts."""
    channels = rng.choice([1, 3, 4])
    classes = rng.choice([2, 10, 100])
    if rng.random() < 0.5:
        block = rng.choice(list(WRN_BLOCK_TYPES.values()))
        spec = WRNSpec(
            6 * rng.randint(1, 3) + 4,
            rng.randint(1, 3),
            block,
            rng.choice([0.0, 0.3]),
            classes,
            channels,
        )
        return spec, (channels, rng.choice([28, 32, 17]), rng.choice([28, 32, 40]))
    bottleneck = rng.random() < 0.5
    theta = rng.choice([1.0, 0.75, 0.5, 0.29])
    k = rng.randint(2, 12)
    if rng.random() < 0.25:
        blocks = tuple(rng.randint(1, 4) for _ in range(rng.randint(2, 4)))
        depth = (2 if bottleneck else 1) * sum(blocks) + len(blocks) + 1
        spec = DenseNetSpec(
            depth,
            k,
            bottleneck,
            theta,
            0.0,
            "imagenet",
            blocks,
            rng.choice([0, 8]),
            classes,
            channels,
        )
        size = rng.choice([64, 72, 96])
        return spec, (channels, size, size)
    n = rng.randint(1, 5)
    depth = (6 if bottleneck else 3) * n + 4
    spec = DenseNetSpec(
        depth,
        k,
        bottleneck,
        theta,
        rng.choice([0.0, 0.2]),
        "cifar",
        (),
        rng.choice([0, 0, 20]),
        classes,
        channels,
    )
    return spec, (channels, rng.choice([28, 32, 24]), rng.choice([28, 32, 36]))

from __future__ import annotations

import random

import pytest
import torch

from dnas.models import build
from dnas.names import parse_name
from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, WRNSpec
from tests.conftest import random_spec


@pytest.mark.parametrize("block", list(WRN_BLOCK_TYPES))
def test_wrn_block_types_forward_backward(block):
    spec = WRNSpec(10, 1, WRN_BLOCK_TYPES[block], dropout=0.3)
    model = build(spec)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "spec, shape",
    [
        (DenseNetSpec(10, 4), (3, 32, 32)),
        (DenseNetSpec(10, 4, True, 0.5, 0.2), (1, 28, 28)),
        (DenseNetSpec(10, 4, False, 0.5), (3, 32, 32)),
        (DenseNetSpec(10, 4, True, 1.0), (3, 32, 32)),
        (DenseNetSpec(15, 4, True, 0.5, stem="imagenet", blocks=(1, 2, 1, 1)), (3, 224, 224)),
        (WRNSpec(10, 1, num_classes=100), (3, 32, 32)),
        (WRNSpec(10, 2, in_channels=1), (1, 28, 28)),
    ],
)
def test_families_accept_their_datasets_inputs(spec, shape):
    spec = type(spec)(**{**spec.__dict__, "in_channels": shape[0]})
    model = build(spec)
    out = model(torch.randn(2, *shape))
    out.mean().backward()
    assert out.shape == (2, spec.num_classes)


def test_module_names_read_like_the_paper():
    names = dict(build(parse_name("densenet-bc-100")).named_modules())
    for key in (
        "stem",
        "denseblock1.denselayer3.conv1",
        "denseblock3.denselayer16.conv2",
        "transition1",
        "transition2",
        "head.fc",
    ):
        assert key in names
    model = build(parse_name("wrn-16-4"))
    wrn = dict(model.named_modules())
    for key in (
        "stem.conv",
        "group1.block1.conv1",
        "group3.block2.conv2",
        "group2.block1.shortcut",
        "head.fc",
    ):
        assert key in wrn
    assert model.group2.block2.shortcut is None  # identity where the width does not change


def test_random_architectures_forward():
    rng = random.Random(1)
    for _ in range(12):
        spec, shape = random_spec(rng)
        out = build(spec).eval()(torch.randn(1, *shape))
        assert out.shape == (1, spec.num_classes)


def test_memory_efficient_matches_standard():
    torch.manual_seed(0)
    spec = DenseNetSpec(16, 6, True, 0.5)
    a, b = build(spec), build(spec, memory_efficient=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 32, 32)
    ya, yb = a(x), b(x)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(ya, yb)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)

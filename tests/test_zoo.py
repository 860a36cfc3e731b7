"""The papers' exact parameter counts, and structural identity with torchvision's DenseNets."""

from __future__ import annotations

import pytest
import torch
import torchvision

from dnas.densenet import from_torchvision_state_dict
from dnas.models import build
from dnas.names import parse_name
from dnas.spec import IMAGENET_DENSENETS
from dnas.zoo import PAPER_MODELS


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


EXACT = {name: m.params_exact for name, m in PAPER_MODELS.items() if m.params_exact}


@pytest.mark.parametrize("name", list(EXACT))
def test_published_exact_parameter_counts(name):
    classes = 1000 if name in IMAGENET_DENSENETS else 10
    assert n_params(build(parse_name(name, classes))) == EXACT[name]


# Table 2 of the WRN paper gives block types' counts rounded to 0.1M (k = 2, 10 classes).
@pytest.mark.parametrize(
    "name, millions",
    [
        ("wrn-40-2-b131", 1.4),
        ("wrn-40-2-b31", 1.2),
        ("wrn-40-2-b13", 1.3),
        ("wrn-40-2-b311", 1.3),
        ("wrn-28-2", 1.5),
        ("wrn-22-2-b313", 1.1),
        ("wrn-40-1", 0.6),
        ("wrn-16-8", 11.0),
        ("wrn-22-8", 17.2),
    ],
)
def test_wrn_rounded_counts(name, millions):
    assert round(n_params(build(parse_name(name))) / 1e6, 1) == millions


@pytest.mark.parametrize("name", ["densenet121", "densenet161", "densenet169", "densenet201"])
def test_torchvision_weights_load_and_give_the_same_outputs(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    with torch.no_grad():  # non-trivial BN statistics, so the check covers them too
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = build(parse_name(name, num_classes=1000)).eval()
    assert n_params(ours) == n_params(reference)
    ours.load_state_dict(from_torchvision_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)

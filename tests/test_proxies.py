"""Zero-cost proxies (dnas.proxies): hand-worked values and independent recomputations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnas.models import build
from dnas.names import parse_name
from dnas.proxies import Proxy, add_scores, grad_norm, naswot, score, snip, synflow


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_naswot_of_one_image_is_the_log_of_the_relu_unit_count():
    """With one image, K = [[N_A]]: N_A counts the ReLU units of densenet-7 (k = 12, 16 stem
    channels, one layer per block) on 32x32: 16 and 28 channels at 32x32 (the layer's and the
    transition's), 28 and 40 at 16x16, 40 and the head's 52 at 8x8 = 68,352."""
    x, y = batch(1)
    expected = 16 * 1024 + 28 * 1024 + 28 * 256 + 40 * 256 + 40 * 64 + 52 * 64
    assert naswot(parse_name("densenet-7"), x, y) == pytest.approx(math.log(expected))


def test_naswot_is_singular_for_a_repeated_image():
    x, y = batch(1)
    assert naswot(parse_name("wrn-10-1"), x.repeat(2, 1, 1, 1), y.repeat(2)) == -math.inf


def test_grad_norm_and_snip_match_autograd_grad_on_the_same_initialisation():
    spec = parse_name("wrn-10-1-drop0.3")
    x, y = batch()
    torch.manual_seed(3)
    model = build(parse_name("wrn-10-1")).train()  # the proxies score with dropout off
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    assert grad_norm(spec, x, y, seed=3) == pytest.approx(sum(float(g.norm()) for g in grads))
    expected = sum(float((w.detach() * g).abs().sum()) for w, g in zip(weights, grads))
    assert snip(spec, x, y, seed=3) == pytest.approx(expected)


def test_synflow_ignores_the_data_and_grows_with_depth():
    x, y = batch()
    spec = parse_name("densenet-bc-22-k8")
    assert synflow(spec, x, y) == synflow(spec, torch.zeros_like(x), y) > 0
    assert synflow(parse_name("densenet-bc-40-k8"), x, y) > synflow(spec, x, y)


@pytest.mark.parametrize("proxy", list(Proxy))
def test_scores_are_seeded(proxy):
    x, y = batch()
    spec = parse_name("densenet-c-7-k4-t0.25")
    assert score(proxy, spec, x, y, seed=1) == score(proxy, spec, x, y, seed=1)
    assert math.isfinite(score(proxy, spec, x, y, seed=1))


def test_add_scores_synflow_needs_no_dataset_on_disk():
    rows = [{"name": "wrn-10-1"}, {"name": "densenet-bc-10-k4"}]
    add_scores(rows, "synflow", "cifar10", data_dir="/nonexistent")
    assert all(r["synflow"] > 0 for r in rows)

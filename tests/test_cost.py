"""Closed-form costs equal fvcore's FlopCountAnalysis and the built model, exactly."""

from __future__ import annotations

import random

import pytest

from dnas.cost import count, stages
from dnas.datasets import DATASETS
from dnas.flops import fvcore_count
from dnas.models import build
from dnas.names import parse_name
from dnas.spec import IMAGENET_DENSENETS, SpecError
from dnas.zoo import PAPER_MODELS
from tests.conftest import random_spec


def check(spec, shape):
    model = build(spec)
    fv = fvcore_count(model, shape)
    parts = stages(spec, shape[1:])
    total = count(spec, shape[1:])
    assert total.params == sum(p.numel() for p in model.parameters()), spec.name
    assert total.flops == fv.total, spec.name
    assert {s.name: s.flops for s in parts} == fv.by_module, spec.name
    convs_and_linear = fv.by_operator.get("conv", 0) + fv.by_operator.get("linear", 0)
    assert total.macs == convs_and_linear, spec.name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_named_models_match_fvcore(name):
    data = DATASETS["imagenet" if name in IMAGENET_DENSENETS else "cifar10"]
    check(parse_name(name, data.num_classes, data.channels), data.input_size)


@pytest.mark.parametrize("dataset", ["cifar100", "fashion-mnist", "svhn"])
def test_named_model_other_datasets(dataset):
    data = DATASETS[dataset]
    for name in ("densenet-bc-100", "wrn-16-4", "wrn-22-2-b313"):
        check(parse_name(name, data.num_classes, data.channels), data.input_size)


def test_random_sample_matches_fvcore():
    rng = random.Random(2026)
    seen = set()
    for _ in range(220):
        spec, shape = random_spec(rng)
        check(spec, shape)
        seen.add((spec.family, getattr(spec, "stem", None), getattr(spec, "block", None)))
    families = {s[0] for s in seen}
    assert families == {"densenet", "wrn"}
    assert {s[1] for s in seen if s[0] == "densenet"} == {"cifar", "imagenet"}
    assert len({s[2] for s in seen if s[0] == "wrn"}) == 9  # every block type


def test_too_small_input_is_a_clear_error():
    spec = parse_name("densenet121", 1000)
    with pytest.raises(SpecError, match="too small"):
        count(spec, (28, 28))

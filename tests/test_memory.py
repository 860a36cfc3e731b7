"""Predicted training memory (dnas.memory): a hand-worked example, the allocator, the budget."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch

from dnas.budget import parse_budgets
from dnas.cost import count
from dnas.datasets import dataset_info
from dnas.memory import training_memory
from dnas.names import parse_name
from dnas.profile import Workload
from dnas.proposal import FeasibleSpace
from dnas.space import candidates, search_space, with_memory


def test_densenet_7_activations_worked_by_hand():
    """DenseNet (L=7: one layer per block, k=12, 16 stem channels), batch 1, 32x32, CPU.

    Kept at the end of the forward pass, in floats (channels x pixels):
    - 32x32: the layer's concat (16) and BN-ReLU output (16); the block's concat (28), which the
      transition's BN keeps; its BN-ReLU output (28) and conv output (28), which the pooling
      keeps: 116 x 1024 = 118,784.
    - 16x16: 28 + 28 + 40 + 40 + 40 = 176 x 256 = 45,056.
    - 8x8: 40 + 40, the block's concat (52) and the head's BN-ReLU output (52): 184 x 64 = 11,776.
    - two statistics per BN channel, 2 x (16 + 28 + 28 + 40 + 40 + 52) = 408; the pooled
      features (52), the log-softmax (10) and the loss (1): 471.
    (The features themselves are dropped when each block's concat is made.)
    """
    spec = parse_name("densenet-7")
    est = training_memory(spec, 1)
    assert est.activations == 4 * (118_784 + 45_056 + 11_776 + 471)
    assert est.weights == est.gradients == est.optimizer == 4 * count(spec).params


@pytest.mark.parametrize(
    "name", ["densenet-40", "densenet-bc-100", "densenet121", "wrn-28-10", "wrn-16-4-b313"]
)
def test_weights_are_the_exact_parameter_count(name):
    spec = parse_name(name)
    assert training_memory(spec, 2).weights == 4 * count(spec).params


@pytest.mark.parametrize(
    "name, memory_efficient",
    [("densenet-bc-22-k8", False), ("densenet-bc-22-k8", True), ("densenet-c-7-k4-drop0.2", True),
     ("wrn-10-2-b3", False), ("wrn-16-1-b313-drop0.3", False)],
)  # fmt: skip
def test_prediction_is_within_ten_percent_of_the_allocator(name, memory_efficient):
    """The allocator's peak over a real first training step, as `dnas profile` measures it."""
    info = dataset_info("cifar10")
    spec = parse_name(name)
    work = Workload(spec, info, 8, torch.device("cpu"), memory_efficient)
    measured, _ = work.peak_train_memory()
    predicted = training_memory(spec, 8, (32, 32), memory_efficient).peak
    assert predicted == pytest.approx(measured, rel=0.10)


_OTHER_ISA = """
import torch
from dnas.datasets import dataset_info
from dnas.memory import cpu_channel_block, training_memory
from dnas.names import parse_name
from dnas.profile import Workload
spec = parse_name("densenet-c-7-k4-drop0.2")
work = Workload(spec, dataset_info("cifar10"), 8, torch.device("cpu"), True)
predicted = training_memory(spec, 8, (32, 32), True).peak
print(cpu_channel_block(), work.peak_train_memory()[0], predicted)
"""


def test_onednn_capped_at_avx2_pads_channels_to_blocks_of_8():
    """oneDNN pads channels to its block (16 with AVX-512, 8 below): a network of 4 to 16
    channels peaks lower with AVX2 kernels, and the prediction follows the kernels in use."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", _OTHER_ISA], env=env, capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    block, measured, predicted = map(int, done.stdout.split())
    assert block == 8
    assert predicted == pytest.approx(measured, rel=0.10)
    spec = parse_name("densenet-c-7-k4-drop0.2")
    wide = training_memory(spec, 8, (32, 32), True, cpu_block=16).peak
    assert wide > training_memory(spec, 8, (32, 32), True, cpu_block=8).peak == predicted
    with pytest.raises(ValueError, match="cpu_block must be 8 or 16"):
        training_memory(spec, 8, cpu_block=12)


def test_memory_grows_with_batch_and_depth_and_the_efficient_variant_saves():
    spec = parse_name("densenet-bc-100")
    small, big = training_memory(spec, 16), training_memory(spec, 64)
    assert big.peak > 3 * (small.peak - small.weights * 3)
    assert training_memory(spec, 64, memory_efficient=True).peak < 0.5 * big.peak
    assert training_memory(parse_name("densenet-bc-190-k40"), 16).peak > small.peak


@pytest.mark.parametrize("batch, device", [(0, "cpu"), (2.5, "cpu"), (8, "tpu")])
def test_bad_batch_or_device_is_refused(batch, device):
    with pytest.raises(ValueError, match="batch_size|device"):
        training_memory(parse_name("wrn-10-1"), batch, device=device)


def test_cuda_prediction_leaves_out_onednn_copies_and_keeps_a_bool_dropout_mask():
    spec = parse_name("wrn-16-4-drop0.3")
    assert training_memory(spec, 16, device="cuda").peak < training_memory(spec, 16).peak


def test_space_memory_budget_keeps_exactly_what_fits():
    """The depth-skipping filter against predicting every candidate."""
    info = dataset_info("fashion-mnist")
    limit = 150 * 2**20
    result = search_space("wrn", "fashion-mnist", ("150M-memory",), batch_size=64)
    brute = sorted(c.spec.name for c in candidates("wrn", info)
                   if training_memory(c.spec, 64, (28, 28)).peak <= limit)  # fmt: skip
    assert sorted(r["name"] for r in result.rows) == brute
    assert all(r["memory"] <= limit for r in result.rows)
    assert result.summary()["memory"].startswith("predicted peak bytes")


def test_space_memory_column_without_a_budget_and_default_batch_with_one():
    rows = search_space("densenet-bc", "cifar10", ("50k-params",), batch_size=32).rows
    spec = parse_name(rows[0]["name"])
    assert rows[0]["memory"] == training_memory(spec, 32).peak
    by_budget = search_space("densenet-bc", "cifar10", ("50k-params", "8G-memory")).rows
    assert by_budget[0]["memory"] == training_memory(parse_name(by_budget[0]["name"]), 128).peak


def test_every_proposal_fits_a_memory_budget():
    import optuna

    info = dataset_info("fashion-mnist")
    budgets = parse_budgets(("1M-params", "100M-memory"))
    fs = FeasibleSpace("all", info, budgets, batch_size=64)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    memories = []
    for _ in range(60):
        spec = fs.suggest(study.ask())
        cost = count(spec, (28, 28), 64)
        assert cost.params <= 1_000_000 and cost.memory <= 100 * 2**20
        memories.append(cost.memory)
    assert max(memories) > 50 * 2**20  # the budget is used, not just the smallest candidates


def test_with_memory_skips_only_deeper_candidates_of_a_shape():
    info = dataset_info("cifar10")
    cands = [c for c in candidates("wrn", info) if c.spec.widen == 2]
    random.Random(0).shuffle(cands)  # order does not matter
    kept = with_memory(cands, 16, info, limit=60 * 2**20)
    depths = {}
    for c in kept:
        depths.setdefault(c.spec.block, []).append(c.spec.depth)
    for block, ds in depths.items():
        assert sorted(ds) == [6 * n + 4 for n in range(1, len(ds) + 1)], block

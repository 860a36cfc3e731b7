from __future__ import annotations

import pytest

from dnas.cost import count
from dnas.datasets import DATASETS
from dnas.errors import DnasError
from dnas.names import parse_name
from dnas.space import SPACES, candidates, search_space


def test_union_is_large_and_distinct():
    cands = list(candidates("all", DATASETS["cifar10"]))
    names = {c.spec.name for c in cands}
    assert len(cands) >= 10_000
    assert len(names) == len(cands)
    # The papers' CIFAR models are points of the default spaces.
    for name in (
        "densenet-40",
        "densenet-bc-100",
        "densenet-bc-190-k40",
        "densenet-100-k24",
        "wrn-28-10",
        "wrn-40-2-b313",
        "wrn-16-8",
    ):
        assert name in names


def test_every_candidate_within_budget_and_sorted():
    result = search_space("all", "cifar10", ("1M-params", "300M-flops"))
    assert result.rows
    assert all(r["params"] <= 1_000_000 and r["flops"] <= 300_000_000 for r in result.rows)
    assert [r["params"] for r in result.rows] == sorted(r["params"] for r in result.rows)
    all_rows = search_space("all", "cifar10").rows
    expected = sum(1 for r in all_rows if r["params"] <= 1_000_000 and r["flops"] <= 300_000_000)
    assert len(result.rows) == expected


def test_costs_follow_the_dataset():
    row = {r["name"]: r for r in search_space("densenet", "cifar100").rows}["densenet-bc-100"]
    spec = parse_name("densenet-bc-100", 100)
    assert (row["params"], row["flops"]) == (count(spec).params, count(spec).flops)
    mnist = {r["name"]: r for r in search_space("wrn", "fashion-mnist").rows}["wrn-16-4"]
    assert mnist["params"] == count(parse_name("wrn-16-4", 10, 1), (28, 28)).params


def test_impossible_budget_names_the_smallest():
    with pytest.raises(DnasError, match="the smallest costs"):
        search_space("wrn", "cifar10", ("10k-params",))


def test_spaces_describe_themselves():
    assert "k in" in SPACES["densenet"].describe() and "B(3,1,3)" in SPACES["wrn"].describe()

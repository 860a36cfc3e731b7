from __future__ import annotations

import pytest

from dnas.budget import BudgetError, parse_budget
from dnas.cost import Cost


@pytest.mark.parametrize(
    "text, metric, limit",
    [
        ("1M-params", "params", 1_000_000),
        ("800k-params", "params", 800_000),
        ("300M-flops", "flops", 300_000_000),
        ("0.5G-flops", "flops", 500_000_000),
        ("2500-params", "params", 2500),
        ("1.5m-PARAMS", "params", 1_500_000),
        ("2G-memory", "memory", 2 * 2**30),  # memory: binary prefixes, as GPU memory is quoted
        ("512M-memory", "memory", 512 * 2**20),
        ("1.5k-MEMORY", "memory", 1536),
    ],
)
def test_grammar(text, metric, limit):
    b = parse_budget(text)
    assert (b.metric, b.limit) == (metric, limit)


@pytest.mark.parametrize(
    "text",
    [
        "1M",
        "params",
        "1X-params",
        "-1M-params",
        "1M-weights",
        "0-params",
        "",
        "0.5-memory",
        "99999999999G-params",
        "1M-memory-params",
        "../1M-params",
    ],  # fmt: skip
)
def test_malformed_budgets_say_how_to_write_one(text):
    with pytest.raises(BudgetError, match="e.g. 1M-params"):
        parse_budget(text)


def test_budget_is_inclusive():
    assert parse_budget("1M-params").allows(Cost(1_000_000, 0, 0))
    assert not parse_budget("1M-params").allows(Cost(1_000_001, 0, 0))


def test_memory_budget_reads_the_costs_memory_and_prints_back():
    b = parse_budget("2G-memory")
    assert str(b) == "2G-memory"
    assert b.allows(Cost(1, 1, 1, memory=2 * 2**30))
    assert not b.allows(Cost(1, 1, 1, memory=2 * 2**30 + 1))
    with pytest.raises(ValueError, match="batch_size"):  # a cost counted without a batch
        b.allows(Cost(1, 1, 1))

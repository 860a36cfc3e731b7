from __future__ import annotations

import pytest

from dnas.budget import (
    BudgetError,
    bytes_text,
    human,
    human_bytes,
    parse_budget,
    parse_budgets,
    require_fits,
)
from dnas.cost import Cost, count
from dnas.errors import DnasError
from dnas.memory import training_memory
from dnas.names import parse_name


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
        ("2e5-params", "params", 200_000),  # a number in exponent form too
        ("1.5E-3G-flops", "flops", 1_500_000),
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
        "1e18G-params",
        "1e999M-params",
        "1e-params",
        "1M-memory-params",
        "../1M-params",
        "\uff12\uff10k-params",  # full-width digits: was 20k-params, in a study named '__k'
        "\u0662\u0660k-params",  # Arabic-Indic digits
    ],  # fmt: skip
)
def test_malformed_budgets_say_how_to_write_one(text):
    with pytest.raises(BudgetError, match="e.g. 1M-params"):
        parse_budget(text)


def test_one_budget_per_metric():
    assert [b.metric for b in parse_budgets(["1M-params", "20M-flops", "2G-memory"])] == [
        "params",
        "flops",
        "memory",
    ]
    with pytest.raises(BudgetError, match="two flops budgets, '20M-flops' and '0.1G-flops'"):
        parse_budgets(["20M-flops", "1M-params", "0.1G-flops"])


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


GiB = 2**30


def test_a_network_whose_weights_exceed_the_memory_is_refused_before_it_is_built():
    # wrn-28-10 (36.5M parameters, 146 MB of fp32 weights) against 100 MB.
    spec = parse_name("wrn-28-10")
    params = count(spec).params
    assert 36_400_000 < params < 36_600_000  # the paper's 36.5M
    with pytest.raises(DnasError) as e:
        require_fits(spec, 100 * 2**20, "cuda")
    assert str(e.value) == (
        f"wrn-28-10 has {params:,} parameters: its weights alone need"
        f" {params * 4 / GiB:.1f} GiB, more than the 0.1 GiB of memory available on the cuda;"
        " choose a smaller model"
    )
    require_fits(spec, 200 * 2**20, "cuda")  # weights fit, and no batch to check
    require_fits(spec, None)  # memory unknown: nothing refused


def test_a_batch_too_large_names_the_largest_that_fits():
    spec, available = parse_name("densenet-bc-100"), 2 * GiB
    need = training_memory(spec, 4096, (32, 32)).peak
    with pytest.raises(DnasError) as e:
        require_fits(spec, available, "cpu", 4096)
    text = str(e.value)
    assert text.startswith(
        f"a training step of densenet-bc-100 at batch 4,096 needs {need / GiB:.1f} GiB"
        " (predicted), more than the 2.0 GiB of memory available on the cpu; use a batch of"
        " at most about "
    )
    fits = int(text.rsplit(" ", 1)[1].replace(",", ""))
    # The advice is close: that batch fits within 2%, and 3% more would not.
    assert training_memory(spec, fits, (32, 32)).peak <= 1.02 * available
    assert training_memory(spec, int(fits * 1.03) + 1, (32, 32)).peak > available
    require_fits(spec, available, "cpu", fits // 2)
    with pytest.raises(DnasError, match="at batch 1 needs .* use a smaller model$"):
        require_fits(spec, training_memory(spec, 1, (32, 32)).peak - 1, "cpu", 1)


@pytest.mark.parametrize(
    "n, text",
    [
        (512, "512 bytes"),  # was "512iB": the unit was glued on whatever human_bytes gave
        (1536, "1.5 KiB"),
        (3 * 2**20, "3 MiB"),
        (2**31, "2 GiB"),
        (5.19e19 * 2**30, "5.19e+19 GiB"),  # was "5.19e+19GiB"
    ],
)
def test_bytes_in_messages_carry_a_spaced_binary_unit(n, text):
    assert bytes_text(n) == text


@pytest.mark.parametrize(
    "n, short, short_bytes",
    [
        (999, "999", "999"),
        (1000, "1k", "1000"),  # 1000 bytes are below a KiB: was "1e+03" (as bytes)
        (1023, "1.02k", "1023"),
        (1024, "1.02k", "1k"),
        (999_999, "1M", "977k"),  # rounds to a million: was "1e+03k"
        (1023 * 2**10, "1.05M", "1023k"),  # below a MiB: was "1.02e+03k"
        (2**20, "1.05M", "1M"),
        (5 * 10**12, "5000G", "4657G"),  # past the largest unit: was "5e+03G"
    ],
)
def test_short_figures_never_show_an_exponent_below_a_million_of_the_largest_unit(
    n, short, short_bytes
):
    assert (human(n), human_bytes(n)) == (short, short_bytes)

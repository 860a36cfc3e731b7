from __future__ import annotations

import random

import pytest

from dnas.names import ArchitectureNameError, parse_name
from dnas.spec import DenseNetSpec, WRNSpec
from dnas.zoo import PAPER_MODELS
from tests.conftest import random_spec


@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_paper_names_round_trip(name):
    spec = parse_name(name)
    assert spec.name == name
    assert parse_name(spec.name) == spec


def test_random_specs_round_trip():
    rng = random.Random(0)
    for _ in range(300):
        spec, _shape = random_spec(rng)
        parsed = parse_name(spec.name, spec.num_classes, spec.in_channels)
        assert parsed == spec, spec.name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("densenet-40", DenseNetSpec(40, 12)),
        ("densenet-100-k24", DenseNetSpec(100, 24)),
        ("densenet-bc-100", DenseNetSpec(100, 12, True, 0.5)),
        ("densenet-b-100", DenseNetSpec(100, 12, True, 1.0)),
        ("densenet-c-40", DenseNetSpec(40, 12, False, 0.5)),
        ("densenet-bc-190-k40", DenseNetSpec(190, 40, True, 0.5)),
        ("wrn-28-10", WRNSpec(28, 10)),
        ("wrn-40-2-b313", WRNSpec(40, 2, (3, 1, 3))),
        ("wrn-40-2-l3", WRNSpec(40, 2, (3, 3, 3))),
        ("wrn-28-10-drop0.3", WRNSpec(28, 10, dropout=0.3)),
        ("WRN-16-8", WRNSpec(16, 8)),
    ],
)
def test_names_mean_the_papers_models(name, expected):
    assert parse_name(name) == expected


def test_paper_variant_defaults():
    basic, bc = parse_name("densenet-40"), parse_name("densenet-bc-100")
    assert (basic.stem_channels, basic.compression) == (16, 1.0)
    assert (bc.stem_channels, bc.compression, bc.bottleneck_width) == (24, 0.5, 48)
    assert parse_name("densenet161").stem_channels == 96


@pytest.mark.parametrize(
    "bad, suggestion",
    [
        ("densenet-41", "densenet-40"),
        ("densenet-bc-101", "densenet-bc-100"),
        ("wrn-27-10", "wrn-28-10"),
        ("densnet-40", "densenet-40"),
        ("wrn-40-2-b99", "wrn-40-2-b"),
        ("densenet-c-40-t1", "densenet-40"),
    ],
)
def test_bad_names_suggest_close_valid_ones(bad, suggestion):
    with pytest.raises(ArchitectureNameError) as e:
        parse_name(bad)
    message = str(e.value)
    assert "\n" not in message
    assert suggestion in message
    for close in message.split("did you mean ")[-1].rstrip("?").split(", "):
        parse_name(close)  # every suggestion is itself valid


def test_a_flood_of_characters_is_named_not_echoed():
    with pytest.raises(ArchitectureNameError) as e:
        parse_name("a" * 100_000)
    message = str(e.value)
    assert message.startswith("a name of 100,000 characters ('aaaaaaaaaaaaaaaaaaaa'...)")
    assert len(message) < 200


def test_a_huge_deepening_factor_is_refused_before_any_block_is_built():
    # wrn-16-1-l99999999 once built a tuple of 10^8 kernel sizes (4 GB) before the spec's check.
    for name in ("wrn-16-1-l0", "wrn-16-1-l5", "wrn-16-1-l99999999", "wrn-16-1-l" + "9" * 60):
        with pytest.raises(ArchitectureNameError, match=r"not one of the paper.s: l1, l2, l3, l4"):
            parse_name(name)
    assert [parse_name(f"wrn-16-1-l{n}").block for n in (1, 4)] == [(3,), (3, 3, 3, 3)]


def test_a_stem_width_of_zero_is_refused_not_read_as_the_default():
    # densenet-40-s0 trained as densenet-40: 0 is the spec's "paper default", not a width.
    with pytest.raises(ArchitectureNameError, match="stem width s0: give a width of 1 or more"):
        parse_name("densenet-40-s0")
    assert parse_name("densenet-40-s8").stem_channels == 8


def test_names_carry_rates_exactly():
    # Six significant figures once turned drop0.99999999 into drop1 (an invalid name) and
    # drop0.12345678 into another spec, drop0.123457.
    for name in ("densenet-40-drop0.99999999", "densenet-c-40-t0.99999999",
                 "wrn-10-1-drop0.12345678", "densenet-40-drop0.00001"):  # fmt: skip
        spec = parse_name(name)
        assert spec.name == name and parse_name(spec.name) == spec
    assert parse_name("wrn-28-10-drop0.3").dropout == 0.3 and parse_name("densenet-bc-100").name

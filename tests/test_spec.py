from __future__ import annotations

import re

import pytest

from dnas.spec import DenseNetSpec, SpecError, WRNSpec


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: DenseNetSpec(41), "3n+4"),
        (lambda: DenseNetSpec(43, bottleneck=True), "6n+4"),
        (lambda: DenseNetSpec(40, growth_rate=0), "growth rate"),
        (lambda: DenseNetSpec(40, compression=0.0), "(0, 1]"),
        (lambda: DenseNetSpec(40, compression=1.5), "(0, 1]"),
        (lambda: DenseNetSpec(40, dropout=1.0), "dropout"),
        (lambda: DenseNetSpec(40, stem="vgg"), "stem"),
        (lambda: DenseNetSpec(121, 32, True, 0.5, stem="imagenet"), "explicit blocks"),
        (lambda: DenseNetSpec(120, 32, True, 0.5, stem="imagenet", blocks=(6, 12, 24, 16)), "121"),
        (lambda: WRNSpec(27, 10), "6n+4"),
        (lambda: WRNSpec(28, 0), "widen"),
        (lambda: WRNSpec(28, 2, (5, 5)), "block type"),
    ],
)
def test_impossible_specs_say_what_would_be_right(make, fragment):
    with pytest.raises(SpecError, match=re.escape(fragment)):
        make()


def test_derived_structure():
    spec = DenseNetSpec(100, 12, True, 0.5)
    assert spec.block_layers == (16, 16, 16)
    # 24 -> 24 + 16*12 = 216 -> 108 -> 300 -> 150 -> 342 (paper §3 with θ = 0.5)
    assert spec.block_channels() == [(24, 216), (108, 300), (150, 342)]
    wrn = WRNSpec(28, 10)
    assert (wrn.blocks_per_group, wrn.widths, wrn.deepening) == (4, (160, 320, 640), 2)


def test_equal_explicit_blocks_are_the_same_spec():
    assert DenseNetSpec(40, blocks=(12, 12, 12)) == DenseNetSpec(40)


def test_compression_is_exact():
    # 0.29 * 100 is 28.999... in floating point; the paper's floor(θm) is 29.
    assert DenseNetSpec(40, compression=0.29).transition_out(100) == 29

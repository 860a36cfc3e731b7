"""Architecture specs: frozen, validated, torch-free descriptions of one network.

A spec is pure data. Builders (``dnas.densenet``, ``dnas.wrn``) turn it into an ``nn.Module``;
``dnas.cost`` turns it into exact parameter and FLOP counts without building anything;
``dnas.names`` turns it into the paper's name and back.
"""

from __future__ import annotations

import decimal
import functools
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Literal, Union

from dnas.errors import DnasError

Stem = Literal["cifar", "imagenet"]


class SpecError(DnasError):
    """An impossible architecture; the message says what was wrong and what would be right."""


@functools.lru_cache(maxsize=None)
def _exact(x: float) -> Fraction:
    return Fraction(str(x))


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


@dataclass(frozen=True)
class DenseNetSpec:
    """DenseNet (Huang et al., CVPR 2017, §3 and Table 1).

    CIFAR/SVHN networks (``stem="cifar"``) have three dense blocks of equal size, set by ``depth``:
    L = 3n + 4 without bottleneck, L = 6n + 4 with it. ImageNet networks (``stem="imagenet"``)
    give ``blocks`` explicitly. Variants: basic (no bottleneck, θ = 1, 16-channel stem),
    B (bottleneck), C (θ < 1), BC (both, 2k-channel stem).
    """

    depth: int
    growth_rate: int = 12  # k: channels each layer adds
    bottleneck: bool = False  # B: BN-ReLU-Conv1x1(4k) before each 3x3 conv
    compression: float = 1.0  # θ in (0, 1]: transition output = floor(θ·m) channels
    dropout: float = 0.0  # after every conv but the stem's
    stem: Stem = "cifar"
    blocks: tuple[int, ...] = ()  # layers per dense block; () = three equal blocks from depth
    stem_width: int = 0  # 0 = the paper's default: 2k for BC and ImageNet models, else 16
    num_classes: int = 10
    in_channels: int = 3

    bottleneck_factor = 4  # the paper's 4k bottleneck width (§3, "Bottleneck layers")

    def __post_init__(self) -> None:
        _check(
            self.growth_rate >= 1, f"DenseNet growth rate k must be >= 1, got {self.growth_rate}"
        )
        _check(
            0.0 < self.compression <= 1.0,
            f"DenseNet compression θ must be in (0, 1], got {self.compression}",
        )
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(
            self.stem in ("cifar", "imagenet"),
            f"stem must be cifar or imagenet, got {self.stem!r}",
        )
        _check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        _check(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        _check(
            self.stem_width >= 0, f"stem width must be >= 0 (0 = default), got {self.stem_width}"
        )
        if self.stem == "imagenet":
            _check(
                bool(self.blocks),
                "an ImageNet-stem DenseNet needs explicit blocks, e.g. (6, 12, 24, 16)",
            )
        per_layer = 2 if self.bottleneck else 1
        if (
            self.blocks
            and self.stem == "cifar"
            and len(set(self.blocks)) == 1
            and len(self.blocks) == 3
        ):
            # Three equal blocks are what depth alone says: keep one representation.
            object.__setattr__(self, "blocks", ())
        if self.blocks:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
            _check(
                all(b >= 1 for b in self.blocks),
                f"every dense block needs >= 1 layer, got {self.blocks}",
            )
            expected = per_layer * sum(self.blocks) + len(self.blocks) + 1
            _check(
                self.depth == expected,
                f"depth {self.depth} does not match blocks {self.blocks}: it must be {expected}",
            )
        else:
            step = 6 if self.bottleneck else 3
            variant = "DenseNet-B/BC" if self.bottleneck else "DenseNet"
            _check(
                self.depth >= step + 4 and (self.depth - 4) % step == 0,
                f"{variant} depth must be {step}n+4 with n >= 1"
                f" (e.g. {step * 6 + 4}, {step * 16 + 4}),"
                f" got {self.depth}",
            )

    @property
    def variant(self) -> str:
        """'', 'b', 'c' or 'bc': the paper's naming of bottleneck (B) and compression (C)."""
        return ("b" if self.bottleneck else "") + ("c" if self.compression < 1.0 else "")

    @property
    def block_layers(self) -> tuple[int, ...]:
        if self.blocks:
            return self.blocks
        n = (self.depth - 4) // (6 if self.bottleneck else 3)
        return (n, n, n)

    @property
    def stem_channels(self) -> int:
        if self.stem_width:
            return self.stem_width
        return self.default_stem_width

    @property
    def default_stem_width(self) -> int:
        # Paper §3: "a convolution with 16 (or twice the growth rate for DenseNet-BC) output
        # channels"; the ImageNet models use 2k (Table 1).
        if self.stem == "imagenet" or (self.bottleneck and self.compression < 1.0):
            return 2 * self.growth_rate
        return 16

    @property
    def bottleneck_width(self) -> int:
        return self.bottleneck_factor * self.growth_rate

    def transition_out(self, channels: int) -> int:
        """floor(θ·m), computed exactly (0.29 * 100 is 28.999... in floating point)."""
        return max(1, math.floor(_exact(self.compression) * channels))

    def block_channels(self) -> list[tuple[int, int]]:
        """(input channels, output channels) of each dense block."""
        out, c = [], self.stem_channels
        for i, n in enumerate(self.block_layers):
            c_out = c + n * self.growth_rate
            out.append((c, c_out))
            c = self.transition_out(c_out) if i < len(self.block_layers) - 1 else c_out
        return out

    @property
    def family(self) -> str:
        return "densenet"

    @property
    def name(self) -> str:
        return spec_name(self)


WRN_BLOCK_TYPES: dict[str, tuple[int, ...]] = {
    "b33": (3, 3),
    "b313": (3, 1, 3),
    "b131": (1, 3, 1),
    "b13": (1, 3),
    "b31": (3, 1),
    "b311": (3, 1, 1),
    "b3": (3,),
    "b333": (3, 3, 3),
    "b3333": (3, 3, 3, 3),
}


@dataclass(frozen=True)
class WRNSpec:
    """Wide ResNet (Zagoruyko & Komodakis, BMVC 2016, §2 and Table 1).

    A 3x3 16-channel stem, three groups of N pre-activation blocks with 16k, 32k, 64k channels,
    and a BN-ReLU-pool-linear head. ``block`` is the paper's B(·) type: kernel sizes of the convs
    in one block; its length is the deepening factor l (B(3,3): l = 2). depth = 6N + 4 for every
    block type, as in the authors' code: that is how Table 2 counts (B(3,1,3) at depth 22 has
    N = 3 and 1.1M parameters; B(1,3,1) at depth 40 has N = 6 and 1.4M).
    """

    depth: int
    widen: int = 1  # k
    block: tuple[int, ...] = (3, 3)
    dropout: float = 0.0  # between the convs of a block
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "block", tuple(int(b) for b in self.block))
        _check(self.widen >= 1, f"WRN widen factor k must be >= 1, got {self.widen}")
        _check(
            self.block in WRN_BLOCK_TYPES.values(),
            f"WRN block type B{self.block} is not one of the paper's: "
            + ", ".join(f"B({','.join(map(str, b))})" for b in WRN_BLOCK_TYPES.values()),
        )
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        _check(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        _check(
            self.depth >= 10 and (self.depth - 4) % 6 == 0,
            f"WRN depth must be 6n+4 with n >= 1 (e.g. 16, 28, 40), got {self.depth}",
        )

    @property
    def blocks_per_group(self) -> int:
        return (self.depth - 4) // 6

    @property
    def deepening(self) -> int:
        """The paper's deepening factor l: convolutions per block."""
        return len(self.block)

    @property
    def widths(self) -> tuple[int, int, int]:
        return (16 * self.widen, 32 * self.widen, 64 * self.widen)

    @property
    def stride_conv(self) -> int:
        """Index of the conv that carries a block's stride: the first 3x3 one."""
        return self.block.index(3)

    @property
    def family(self) -> str:
        return "wrn"

    @property
    def name(self) -> str:
        return spec_name(self)


Spec = Union[DenseNetSpec, WRNSpec]


# DenseNet-264 has 2·130 + 5 = 265 layers by the paper's own count; the name is the paper's.
IMAGENET_DENSENETS: dict[str, DenseNetSpec] = {
    "densenet121": DenseNetSpec(
        121, 32, True, 0.5, stem="imagenet", blocks=(6, 12, 24, 16), num_classes=1000
    ),
    "densenet161": DenseNetSpec(
        161, 48, True, 0.5, stem="imagenet", blocks=(6, 12, 36, 24), num_classes=1000
    ),
    "densenet169": DenseNetSpec(
        169, 32, True, 0.5, stem="imagenet", blocks=(6, 12, 32, 32), num_classes=1000
    ),
    "densenet201": DenseNetSpec(
        201, 32, True, 0.5, stem="imagenet", blocks=(6, 12, 48, 32), num_classes=1000
    ),
    "densenet264": DenseNetSpec(
        265, 32, True, 0.5, stem="imagenet", blocks=(6, 12, 64, 48), num_classes=1000
    ),
}


def fmt_number(x: float) -> str:
    """The shortest decimal that reads back as ``x``, without an exponent (0.2, 0.99999999,
    0.00001): names carry rates exactly, so that ``parse_name(spec_name(s)) == s``."""
    text = format(decimal.Decimal(repr(float(x))), "f")
    return text.removesuffix(".0")


def _head_free(spec: Spec) -> Spec:
    """The spec with the dataset-dependent fields at their defaults (names don't carry them)."""
    return replace(spec, num_classes=10, in_channels=3)


def spec_name(spec: Spec) -> str:
    """The canonical name of a spec (classes and input channels are not part of a name)."""
    if isinstance(spec, WRNSpec):
        parts = ["wrn", str(spec.depth), str(spec.widen)]
        if spec.block != (3, 3):
            parts.append("b" + "".join(map(str, spec.block)))
        if spec.dropout:
            parts.append(f"drop{fmt_number(spec.dropout)}")
        return "-".join(parts)
    if spec.stem == "imagenet":
        base = replace(_head_free(spec), dropout=0.0)
        for alias, ref in IMAGENET_DENSENETS.items():
            if base == _head_free(ref):
                return alias + (f"-drop{fmt_number(spec.dropout)}" if spec.dropout else "")
    parts = ["densenet"] + ([spec.variant] if spec.variant else []) + [str(spec.depth)]
    if spec.growth_rate != 12:
        parts.append(f"k{spec.growth_rate}")
    default_theta = 0.5 if spec.compression < 1.0 else 1.0
    if spec.compression != default_theta:
        parts.append(f"t{fmt_number(spec.compression)}")
    if spec.stem_width and spec.stem_width != spec.default_stem_width:
        parts.append(f"s{spec.stem_width}")
    if spec.dropout:
        parts.append(f"drop{fmt_number(spec.dropout)}")
    if spec.blocks:
        parts.append("blocks" + "x".join(map(str, spec.blocks)))
    if spec.stem == "imagenet":
        parts.append("imagenet")
    return "-".join(parts)

"""The papers' names for architectures, parsed into specs and printed back.

Grammar (tokens joined by ``-``; ``parse_name(spec_name(s)) == s`` for every spec):

- DenseNet: ``densenet[-b|-c|-bc]-L`` then, when they differ from the defaults, ``kK`` (growth
  rate, default 12), ``tθ`` (compression, default 1 for basic/B and 0.5 for C/BC), ``sW`` (stem
  width), ``dropP``, ``blocksAxBxC`` (layers per block) and ``imagenet`` (7x7 stem + max-pool).
  The ImageNet models keep torchvision's names: ``densenet121``, ``densenet161``, ``densenet169``,
  ``densenet201``, ``densenet264``.
- WRN: ``wrn-DEPTH-K`` then ``bXYZ`` for a block type other than B(3,3) (``b313``, ``b131``,
  ``b13``, ``b31``, ``b311``, ``b3``, ``b333``, ``b3333``), ``lN`` as a shorthand for N 3x3
  convs per block (the deepening factor), and ``dropP``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace

from dnas.errors import DnasError
from dnas.spec import (
    IMAGENET_DENSENETS,
    WRN_BLOCK_TYPES,
    DenseNetSpec,
    Spec,
    SpecError,
    WRNSpec,
)


class ArchitectureNameError(DnasError):
    """A name that is not a valid architecture; the message names the closest valid ones."""


_NUM = r"(\d+(?:\.\d+)?)"
_DENSENET = re.compile(
    rf"^densenet(?:-(b|c|bc))?-(\d+)(?:-k(\d+))?(?:-t{_NUM})?(?:-s(\d+))?(?:-drop{_NUM})?"
    rf"(?:-blocks(\d+(?:x\d+)*))?(-imagenet)?$"
)
_IMAGENET_DROP = re.compile(rf"^(densenet\d+)(?:-drop{_NUM})?$")
_WRN = re.compile(rf"^wrn-(\d+)-(\d+)(?:-(b\d+|l\d+))?(?:-drop{_NUM})?$")


def _parse(name: str, num_classes: int, in_channels: int) -> Spec:
    head = dict(num_classes=num_classes, in_channels=in_channels)
    if m := _IMAGENET_DROP.match(name):
        if m[1] in IMAGENET_DENSENETS:
            return replace(IMAGENET_DENSENETS[m[1]], dropout=float(m[2] or 0), **head)
    if m := _DENSENET.match(name):
        variant, depth, k, theta, stem_w, drop, blocks, imagenet = m.groups()
        variant = variant or ""
        if stem_w is not None and int(stem_w) == 0:  # 0 is the spec's "default", not a width
            raise SpecError("stem width s0: give a width of 1 or more, or leave -sW out for the"
                            " paper's default")  # fmt: skip
        if theta is None:
            compression = 0.5 if "c" in variant else 1.0
        else:
            compression = float(theta)
            if ("c" in variant) != (compression < 1.0):
                hint = "densenet-c-…/densenet-bc-…" if compression < 1.0 else "a name without c"
                raise SpecError(f"compression θ={theta} needs {hint}")
        return DenseNetSpec(
            depth=int(depth),
            growth_rate=int(k) if k else 12,
            bottleneck="b" in variant,
            compression=compression,
            dropout=float(drop or 0),
            stem="imagenet" if imagenet else "cifar",
            blocks=tuple(int(b) for b in blocks.split("x")) if blocks else (),
            stem_width=int(stem_w or 0),
            **head,
        )
    if m := _WRN.match(name):
        depth, k, btype, drop = m.groups()
        block: tuple[int, ...] = (3, 3)
        if btype and btype.startswith("l"):
            deepening = [len(b) for b in WRN_BLOCK_TYPES.values() if set(b) == {3}]
            if int(btype[1:]) not in deepening:  # checked before the block is built
                raise SpecError(
                    f"WRN deepening factor {btype} is not one of the paper's:"
                    f" {', '.join(f'l{n}' for n in sorted(deepening))}"
                )
            block = (3,) * int(btype[1:])
        elif btype:
            if btype not in WRN_BLOCK_TYPES:
                raise SpecError(
                    f"unknown WRN block type {btype!r};"
                    f" choose one of: {', '.join(WRN_BLOCK_TYPES)}"
                )
            block = WRN_BLOCK_TYPES[btype]
        return WRNSpec(int(depth), int(k), block, float(drop or 0), **head)
    raise SpecError(f"{name!r} is not a DenseNet or WRN name")


def example_names() -> list[str]:
    """Names to suggest: the papers' models and the nearby valid depths of each family."""
    from dnas.zoo import PAPER_MODELS

    names = list(PAPER_MODELS)
    for n in range(1, 41):
        names += [
            f"densenet-{3 * n + 4}",
            f"densenet-bc-{6 * n + 4}",
            f"wrn-{6 * n + 4}-{n % 12 + 1}",
        ]
    return list(dict.fromkeys(names))


def _suggest(name: str) -> list[str]:
    """Closest valid names: by spelling, and for a bad depth, the valid depths either side."""
    close = difflib.get_close_matches(name, example_names(), n=3, cutoff=0.5)
    m = re.match(r"^(densenet(?:-b|-c|-bc)?|wrn)-(\d+)(.*)$", name)
    if m:
        family, depth, rest = m[1], int(m[2]), m[3]
        for d in range(depth - 12, depth + 13):
            cand = f"{family}-{d}{rest}"
            try:
                _parse(cand, 10, 3)
            except (SpecError, ValueError):
                continue
            close.append(cand)
        close = sorted(set(close), key=lambda c: (abs(_depth_of(c) - depth), c))[:3]
    return close


def _depth_of(name: str) -> int:
    m = re.search(r"-(\d+)", name)
    return int(m[1]) if m else 0


MAX_NAME = 100  # characters


def parse_name(name: str, num_classes: int = 10, in_channels: int = 3) -> Spec:
    """Parse a canonical or alias name into a spec.

    Raises:
        ArchitectureNameError: with a one-line message naming the closest valid names.
    """
    key = name.strip().lower()
    if len(key) > MAX_NAME:  # the longest real name is under 40 characters; never echo a flood
        raise ArchitectureNameError(
            f"a name of {len(key):,} characters ({key[:20]!r}...) is not a DenseNet or WRN name;"
            " see `dnas space` for names"
        )
    try:
        return _parse(key, num_classes, in_channels)
    except SpecError as e:
        close = _suggest(key)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ArchitectureNameError(f"{e}{hint}") from None

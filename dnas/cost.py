"""Exact parameter and FLOP counts in closed form: no model is built, torch is not imported.

FLOPs follow fvcore's ``FlopCountAnalysis`` (batch 1, eval mode) to the integer: one multiply-add
of a conv or linear layer is one flop, an eval-mode batch norm with affine weights is two per
element, adaptive average pooling is one per input element, and ReLU, concatenation, dropout,
max/avg pooling and the residual add are not counted. ``macs`` is the papers' and torchvision's
convention: multiply-adds of the conv and linear layers only. Within a dense block every layer
works at one resolution and its input width grows by k, so a block's cost is an arithmetic series
summed in O(1).
"""

from __future__ import annotations

from dataclasses import dataclass

from dnas.memory import training_memory
from dnas.spec import DenseNetSpec, Spec, SpecError, WRNSpec


@dataclass(frozen=True)
class Stage:
    name: str  # the module name in the built model (stem, denseblock1, transition1, group2, head)
    params: int
    flops: int  # fvcore convention
    macs: int  # conv + linear multiply-adds only
    out_shape: tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int
    macs: int
    memory: int | None = None  # predicted peak bytes of a training step (dnas.memory), if asked


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _head(m: int, h: int, w: int, num_classes: int) -> Stage:
    fc = m * num_classes
    return Stage(
        "head", 2 * m + fc + num_classes, 2 * m * h * w + m * h * w + fc, fc, (num_classes, 1, 1)
    )


def _densenet_stages(spec: DenseNetSpec, h: int, w: int) -> list[Stage]:
    c_stem, cin = spec.stem_channels, spec.in_channels
    if spec.stem == "cifar":
        macs = c_stem * cin * 9 * h * w
        stages = [Stage("stem", cin * c_stem * 9, macs, macs, (c_stem, h, w))]
    else:
        h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
        macs = c_stem * cin * 49 * h * w
        flops = macs + 2 * c_stem * h * w  # the stem's BN runs before the max-pool
        h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        stages = [Stage("stem", cin * c_stem * 49 + 2 * c_stem, flops, macs, (c_stem, h, w))]
    k = spec.growth_rate
    blocks = spec.block_channels()
    for i, ((c0, c_out), n) in enumerate(zip(blocks, spec.block_layers), start=1):
        s = n * c0 + k * n * (n - 1) // 2  # sum of the layers' input widths
        if spec.bottleneck:
            b = spec.bottleneck_width
            conv = b * s + n * 9 * b * k
            params = 2 * s + conv + n * 2 * b
        else:
            conv = 9 * k * s
            params = 2 * s + conv
        # Each layer works at h x w, and each of its parameters is used once per pixel (a BN's
        # two affine parameters per channel are fvcore's two flops per element).
        stages.append(Stage(f"denseblock{i}", params, params * h * w, conv * h * w, (c_out, h, w)))
        if i < len(blocks):
            t = spec.transition_out(c_out)
            params = 2 * c_out + c_out * t
            flops, macs = params * h * w, c_out * t * h * w
            h, w = h // 2, w // 2
            if h == 0 or w == 0:
                raise SpecError(
                    f"the input is too small for {spec.name}: transition{i} pools it to 0x0"
                )
            stages.append(Stage(f"transition{i}", params, flops, macs, (t, h, w)))
    stages.append(_head(blocks[-1][1], h, w, spec.num_classes))
    return stages


def _wrn_block(
    spec: WRNSpec, cin: int, cout: int, stride: int, h: int, w: int
) -> tuple[int, int, int, int, int]:
    """(params, flops, macs, h_out, w_out) of one wide block."""
    params = flops = macs = 0
    c, h0, w0 = cin, h, w
    for j, kernel in enumerate(spec.block):
        s = stride if j == spec.stride_conv else 1
        params += 2 * c
        flops += 2 * c * h * w
        h, w = _conv_out(h, kernel, s, kernel // 2), _conv_out(w, kernel, s, kernel // 2)
        conv = cout * c * kernel * kernel
        params += conv
        macs += conv * h * w
        c = cout
    if cin != cout:
        params += cin * cout
        macs += cin * cout * _conv_out(h0, 1, stride, 0) * _conv_out(w0, 1, stride, 0)
    return params, flops + macs, macs, h, w


def _wrn_stages(spec: WRNSpec, h: int, w: int) -> list[Stage]:
    macs = 16 * spec.in_channels * 9 * h * w
    stages = [Stage("stem", spec.in_channels * 16 * 9, macs, macs, (16, h, w))]
    c, n = 16, spec.blocks_per_group
    for g, (width, stride) in enumerate(zip(spec.widths, (1, 2, 2)), start=1):
        p1, f1, m1, h, w = _wrn_block(spec, c, width, stride, h, w)
        p, f, m, _, _ = _wrn_block(spec, width, width, 1, h, w) if n > 1 else (0, 0, 0, h, w)
        stages.append(
            Stage(f"group{g}", p1 + (n - 1) * p, f1 + (n - 1) * f, m1 + (n - 1) * m, (width, h, w))
        )
        c = width
    stages.append(_head(c, h, w, spec.num_classes))
    return stages


def stages(spec: Spec, input_size: tuple[int, int] = (32, 32)) -> list[Stage]:
    """Per-stage costs in model order.

    For an input of (H, W) with ``spec.in_channels`` channels.
    """
    h, w = input_size
    if isinstance(spec, DenseNetSpec):
        return _densenet_stages(spec, h, w)
    return _wrn_stages(spec, h, w)


def count(
    spec: Spec,
    input_size: tuple[int, int] = (32, 32),
    batch_size: int | None = None,
    device: str = "cpu",
) -> Cost:
    """Exact totals for one spec (see the module docstring for the conventions); with a
    ``batch_size``, also the predicted peak memory of a training step on ``device``."""
    parts = stages(spec, input_size)
    memory = None
    if batch_size is not None:
        memory = training_memory(spec, batch_size, input_size, device=device).peak
    return Cost(
        sum(s.params for s in parts),
        sum(s.flops for s in parts),
        sum(s.macs for s in parts),
        memory,
    )

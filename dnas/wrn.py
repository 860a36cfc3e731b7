"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016).

Read top-down like the paper: the pre-activation block B(·) of §2 (with dropout between convs,
§2.4), a group of N blocks, the network of Table 1, the builder.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from dnas.head_and_init import init_weights, make_head
from dnas.spec import WRNSpec


class WideBlock(nn.Module):
    """Pre-activation residual block of type B(k1, k2, ...): BN-ReLU-Conv for each kernel size.

    The stride sits on the first 3x3 conv. A 1x1 projection (no bias) on the shortcut only where
    the channel count changes; it reads the first BN-ReLU output, as in the authors' code.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, spec: WRNSpec):
        super().__init__()
        c = in_channels
        for i, kernel in enumerate(spec.block, start=1):
            s = stride if i - 1 == spec.stride_conv else 1
            self.add_module(f"norm{i}", nn.BatchNorm2d(c))
            self.add_module(f"relu{i}", nn.ReLU(inplace=i > 1))
            if i > 1 and spec.dropout:
                self.add_module(f"drop{i}", nn.Dropout(spec.dropout))
            self.add_module(
                f"conv{i}", nn.Conv2d(c, out_channels, kernel, s, kernel // 2, bias=False)
            )
            c = out_channels
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            if in_channels != out_channels
            else None
        )
        self.depth = len(spec.block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"relu{i}")(getattr(self, f"norm{i}")(out))
            if hasattr(self, f"drop{i}"):
                out = getattr(self, f"drop{i}")(out)
            out = getattr(self, f"conv{i}")(out)
        return out + shortcut

    def residual(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual branch, shortcut) for the feature-reuse analysis; eval mode."""
        out = self.relu1(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        return self(x) - shortcut, shortcut


class WideResNet(nn.Sequential):
    """stem, group1, group2, group3, head."""

    def __init__(self, spec: WRNSpec):
        super().__init__()
        self.spec = spec
        self.add_module(
            "stem",
            nn.Sequential(OrderedDict(conv=nn.Conv2d(spec.in_channels, 16, 3, 1, 1, bias=False))),
        )
        c = 16
        for g, (width, stride) in enumerate(zip(spec.widths, (1, 2, 2)), start=1):
            group = nn.Sequential()
            for b in range(spec.blocks_per_group):
                group.add_module(
                    f"block{b + 1}", WideBlock(c, width, stride if b == 0 else 1, spec)
                )
                c = width
            self.add_module(f"group{g}", group)
        self.add_module("head", make_head(c, spec.num_classes))
        init_weights(self)


def build_wrn(spec: WRNSpec) -> WideResNet:
    return WideResNet(spec)

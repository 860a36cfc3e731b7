"""Parts both families share: the classifier head and the papers' initialisation."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def make_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """BN-ReLU-global average pool-linear (DenseNet §3, WRN Table 1)."""
    return nn.Sequential(
        OrderedDict(
            norm=nn.BatchNorm2d(in_channels),
            relu=nn.ReLU(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            fc=nn.Linear(in_channels, num_classes),
        )
    )


def init_weights(model: nn.Module) -> None:
    """He-normal convs, unit BN, zero biases: the initialisation of both papers' code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

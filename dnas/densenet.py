"""DenseNet (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

Read top-down like the paper: the dense layer (§3 "Composite function", "Bottleneck layers"),
the dense block, the transition layer ("Pooling layers", "Compression"), the network, and the
builder. Module names follow torchvision's where torchvision has the same part
(``denseblock1.denselayer3.conv1``), so its ImageNet weights load with a small key mapping
(``TORCHVISION_KEY_MAP``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from dnas.head_and_init import init_weights, make_head
from dnas.spec import DenseNetSpec

# torchvision DenseNet state-dict prefix -> dnas prefix (the rest of each key is the same).
TORCHVISION_KEY_MAP = {
    "features.conv0.": "stem.conv.",
    "features.norm0.": "stem.norm.",
    "features.denseblock": "denseblock",
    "features.transition": "transition",
    "features.norm5.": "head.norm.",
    "classifier.": "head.fc.",
}


def from_torchvision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision DenseNet state dict to dnas's module names."""
    out = {}
    for key, value in state.items():
        for old, new in TORCHVISION_KEY_MAP.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3(k), or with a bottleneck BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k).

    Dropout follows every conv (paper §4.2). With ``memory_efficient`` the first
    concat-BN-ReLU-conv is recomputed in the backward pass instead of stored (Pleiss et al. 2017;
    torchvision does the same).
    """

    def __init__(self, in_channels: int, spec: DenseNetSpec, memory_efficient: bool = False):
        super().__init__()
        k = spec.growth_rate
        first_out = spec.bottleneck_width if spec.bottleneck else k
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        kernel = 1 if spec.bottleneck else 3
        self.conv1 = nn.Conv2d(in_channels, first_out, kernel, padding=kernel // 2, bias=False)
        if spec.bottleneck:
            self.norm2 = nn.BatchNorm2d(first_out)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(first_out, k, 3, padding=1, bias=False)
        self.bottleneck = spec.bottleneck
        self.drop_rate = spec.dropout
        self.memory_efficient = memory_efficient
        self._recomputing = False

    def first(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def _first_checkpointed(self, *features: torch.Tensor) -> torch.Tensor:
        """``first`` as the checkpoint runs it: once in the forward pass, once more in backward.

        The second run must normalise exactly as the first (batch statistics in training) but
        must not update the running statistics again, which torchvision's memory-efficient
        DenseNet does (its running means move twice per step).
        """
        x = torch.cat(features, 1)
        if self._recomputing:
            n = self.norm1
            # Throwaway copies take the update, so the op (and what autograd saves) is the same.
            mean, var = n.running_mean.clone(), n.running_var.clone()
            x = F.batch_norm(x, mean, var, n.weight, n.bias, True, n.momentum, n.eps)
        else:
            x = self.norm1(x)
            self._recomputing = True
        return self.conv1(self.relu1(x))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and any(f.requires_grad for f in features):
            self._recomputing = False
            out = cp.checkpoint(self._first_checkpointed, *features, use_reentrant=False)
        else:
            out = self.first(*features)
        if self.bottleneck:
            if self.drop_rate:
                out = F.dropout(out, self.drop_rate, self.training)
            out = self.conv2(self.relu2(self.norm2(out)))
        return F.dropout(out, self.drop_rate, self.training) if self.drop_rate else out


class DenseBlock(nn.ModuleDict):
    """n dense layers; layer ℓ sees the block input and the outputs of layers 1..ℓ-1."""

    def __init__(
        self, num_layers: int, in_channels: int, spec: DenseNetSpec, memory_efficient: bool
    ):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_channels + i * spec.growth_rate, spec, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1(floor(θ·m))-AvgPool2x2."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        if dropout:
            self.drop = nn.Dropout(dropout)
        self.pool = nn.AvgPool2d(2, 2)


def make_stem(spec: DenseNetSpec) -> nn.Sequential:
    """CIFAR: one 3x3 conv (the dense layers start with BN-ReLU). ImageNet: 7x7/2 conv, BN, ReLU,
    3x3/2 max-pool (Table 1)."""
    stem = nn.Sequential()
    if spec.stem == "cifar":
        stem.add_module(
            "conv", nn.Conv2d(spec.in_channels, spec.stem_channels, 3, padding=1, bias=False)
        )
    else:
        stem.add_module(
            "conv", nn.Conv2d(spec.in_channels, spec.stem_channels, 7, 2, 3, bias=False)
        )
        stem.add_module("norm", nn.BatchNorm2d(spec.stem_channels))
        stem.add_module("relu", nn.ReLU(inplace=True))
        stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
    return stem


class DenseNet(nn.Sequential):
    """stem, denseblock1, transition1, ..., denseblockN, head."""

    def __init__(self, spec: DenseNetSpec, memory_efficient: bool = False):
        super().__init__()
        self.spec = spec
        self.add_module("stem", make_stem(spec))
        blocks = spec.block_channels()
        for i, ((c_in, c_out), n) in enumerate(zip(blocks, spec.block_layers), start=1):
            self.add_module(f"denseblock{i}", DenseBlock(n, c_in, spec, memory_efficient))
            if i < len(blocks):
                self.add_module(
                    f"transition{i}", Transition(c_out, spec.transition_out(c_out), spec.dropout)
                )
        self.add_module("head", make_head(blocks[-1][1], spec.num_classes))
        init_weights(self)


def build_densenet(spec: DenseNetSpec, memory_efficient: bool = False) -> DenseNet:
    return DenseNet(spec, memory_efficient)

"""spec -> nn.Module for either family."""

from __future__ import annotations

from torch import nn

from dnas.spec import DenseNetSpec, Spec, WRNSpec


def build(spec: Spec, memory_efficient: bool = False) -> nn.Module:
    """Build the network a spec describes. ``memory_efficient`` applies to DenseNets only."""
    if isinstance(spec, DenseNetSpec):
        from dnas.densenet import build_densenet

        return build_densenet(spec, memory_efficient)
    if isinstance(spec, WRNSpec):
        from dnas.wrn import build_wrn

        return build_wrn(spec)
    raise TypeError(f"not a dnas spec: {type(spec).__name__}")

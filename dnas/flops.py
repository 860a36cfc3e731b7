"""The one place dnas calls fvcore. fvcore counts one multiply-add as one flop."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FvcoreCount:
    total: int
    by_module: dict[str, int]  # top-level module name -> flops
    by_operator: dict[str, int]
    uncounted: dict[str, int]  # op name -> times fvcore met it without a counting rule


def fvcore_count(model: nn.Module, input_shape: tuple[int, ...]) -> FvcoreCount:
    """Count one forward pass at batch 1 in eval mode, as ``FlopCountAnalysis`` does."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices from fvcore's tracer
        return _count(model, input_shape)


def _count(model: nn.Module, input_shape: tuple[int, ...]) -> FvcoreCount:
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        result = FvcoreCount(
            total=int(analysis.total()),
            by_module={k: int(v) for k, v in analysis.by_module().items() if k and "." not in k},
            by_operator={k: int(v) for k, v in analysis.by_operator().items()},
            uncounted=dict(analysis.unsupported_ops()),
        )
    finally:
        model.train(was_training)
    return result

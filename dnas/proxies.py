"""Zero-cost proxies: scores of an untrained network that are meant to predict its accuracy.

Each builds the candidate afresh at its initialisation (seeded; dropout off, since the proxies
describe the architecture) and looks at one batch, or none:

- ``synflow`` (Tanaka et al. 2020, as a NAS proxy in Abdelfattah et al. 2021): with every weight
  replaced by its absolute value, batch norm removed and an all-ones input in float64, the sum
  over conv and linear weights of |θ · ∂R/∂θ|, where R is the sum of the outputs. No data.
- ``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training"): the binary
  activation pattern of every ReLU unit for each image of the batch; K[i, j] counts the units on
  which images i and j agree; the score is log |det K|.
- ``grad_norm`` (Abdelfattah et al. 2021): the sum over conv and linear weights of the Euclidean
  norm of the cross-entropy loss's gradient on the batch.
- ``snip`` (Lee et al. 2019; Abdelfattah et al. 2021): the sum over conv and linear weights of
  |θ · ∂L/∂θ| for the same loss.

The model is in training mode (batch statistics) for naswot, grad_norm and snip, as in the
papers' code. ``benchmarks/bench_proxies.py`` measures how well each one ranks trained accuracy
against parameter count alone.

torch is imported inside the functions: the command line imports ``Proxy`` for its choices and
must stay fast to start.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from dnas.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn


class Proxy(str, enum.Enum):
    synflow = "synflow"
    naswot = "naswot"
    grad_norm = "grad_norm"
    snip = "snip"


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """The conv and linear weights (the layers the proxies' papers score)."""
    from torch import nn

    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _model(spec: Spec, seed: int) -> nn.Module:
    import torch

    from dnas.models import build

    torch.manual_seed(seed)
    return build(replace(spec, dropout=0.0))


def synflow(spec: Spec, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    import torch
    from torch import nn

    del y
    model = _model(spec, seed)
    for module in list(model.modules()):  # batch norm removed (the papers' bn=False variant)
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.Identity())
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    out = model(torch.ones((1, *x.shape[1:]), dtype=torch.float64))
    out.sum().backward()
    return _saliency(_weights(model))


def naswot(spec: Spec, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    import torch
    from torch import nn

    del y
    model = _model(spec, seed).train()
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        codes = (output.detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


def _loss_grads(spec: Spec, x: torch.Tensor, y: torch.Tensor, seed: int) -> list[nn.Parameter]:
    import torch.nn.functional as F

    model = _model(spec, seed).train()
    F.cross_entropy(model(x), y).backward()
    return _weights(model)


def grad_norm(spec: Spec, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    return float(sum(w.grad.norm() for w in _loss_grads(spec, x, y, seed)))


def _saliency(weights: list[nn.Parameter]) -> float:
    """The sum over ``weights`` of |θ · ∂/∂θ|."""
    return float(sum((w.detach() * w.grad).abs().sum() for w in weights))


def snip(spec: Spec, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    return _saliency(_loss_grads(spec, x, y, seed))


PROXIES: dict[Proxy, Callable[[Spec, torch.Tensor, torch.Tensor, int], float]] = {
    Proxy.synflow: synflow,
    Proxy.naswot: naswot,
    Proxy.grad_norm: grad_norm,
    Proxy.snip: snip,
}


def score(
    proxy: Proxy | str, spec: Spec, x: torch.Tensor, y: torch.Tensor, seed: int = 0
) -> float:
    """One proxy's score for ``spec`` on the batch ``x`` (normalised images) and labels ``y``."""
    return PROXIES[Proxy(proxy)](spec, x, y, seed)


def proxy_batch(data: object, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` normalised training images and their labels, drawn with ``seed`` from
    ``data`` (a ``dnas.data.DataSplits``), on the CPU."""
    import torch

    from dnas.data import normalize

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_y), generator=g)[:size].to(data.train_x.device)
    x = normalize(data.train_x[idx], data.mean, data.std).cpu()
    return x, data.train_y[idx].cpu()


MAX_ROWS = 500


def add_scores(
    rows: list[dict],
    proxy: Proxy | str,
    dataset: str,
    data_dir: str | None = None,
    batch: int = 64,
    seed: int = 0,
) -> float:
    """Add ``proxy``'s score to each row of ``dnas.space`` (a dict with the spec's ``name``),
    on a batch of ``dataset``'s training images (synflow needs none). Returns the seconds spent.

    Raises:
        DnasError: more than ``MAX_ROWS`` rows, or the dataset is needed and cannot be loaded.
    """
    import time

    from dnas.errors import DnasError

    if len(rows) > MAX_ROWS:
        raise DnasError(
            f"--proxy scores at most {MAX_ROWS} rows (up to seconds each), not {len(rows):,}:"
            " narrow the budget or pass --limit N"
        )
    import torch

    from dnas.datasets import dataset_info
    from dnas.names import parse_name

    proxy = Proxy(proxy)
    info = dataset_info(dataset)
    if proxy is Proxy.synflow:
        x, y = torch.zeros(1, *info.input_size), torch.zeros(1, dtype=torch.long)
    else:
        from dnas.data import load_data

        data = load_data(dataset, data_dir, "cpu", seed=seed)
        x, y = proxy_batch(data, batch, seed)
    t0 = time.perf_counter()
    for row in rows:
        spec = parse_name(row["name"], info.num_classes, info.channels)
        row[proxy.value] = score(proxy, spec, x, y, seed)
    return time.perf_counter() - t0

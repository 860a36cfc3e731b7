"""Training throughput (images/s): dnas versus reference implementations, same device, same run.

- densenet-bc-100 (k=12) versus a network assembled from torchvision's own ``_DenseBlock`` and
  ``_Transition`` with the same configuration (checked: same parameter count);
- wrn-16-4 versus a straightforward WRN (the authors' PyTorch port style, one class per block).

Steps alternate between the two models and the median step is reported, so a busy machine slows
both alike. Usage: ``python benchmarks/bench_train.py [--device cpu] [--batch 16] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dnas.models import build
from dnas.names import parse_name


def torchvision_densenet_bc(
    depth: int = 100, k: int = 12, classes: int = 10, memory_efficient: bool = False
) -> nn.Module:
    from torchvision.models.densenet import _DenseBlock, _Transition

    n = (depth - 4) // 6
    c = 2 * k
    features = nn.Sequential()
    features.add_module("conv0", nn.Conv2d(3, c, 3, padding=1, bias=False))
    for i in range(3):
        features.add_module(f"denseblock{i + 1}", _DenseBlock(n, c, 4, k, 0.0, memory_efficient))
        c += n * k
        if i < 2:
            features.add_module(f"transition{i + 1}", _Transition(c, c // 2))
            c //= 2
    features.add_module("norm5", nn.BatchNorm2d(c))
    return nn.Sequential(
        features,
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, classes),
    )


class RefBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = (
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        )
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.short = None if c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return y + (x if self.short is None else self.short(o))


def reference_wrn(depth: int = 16, k: int = 4, classes: int = 10) -> nn.Module:
    n = (depth - 4) // 6
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)]
    c = 16
    for width, stride in zip((16 * k, 32 * k, 64 * k), (1, 2, 2)):
        for b in range(n):
            layers.append(RefBlock(c, width, stride if b == 0 else 1))
            c = width
    layers += [
        nn.BatchNorm2d(c),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, classes),
    ]
    return nn.Sequential(*layers)


def step_fn(model: nn.Module, batch: int, device: str, channels_last: bool) -> Callable[[], None]:
    model.to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def compare(label: str, ours: nn.Module, ref: nn.Module, args: argparse.Namespace) -> None:
    pa, pb = (sum(p.numel() for p in m.parameters()) for m in (ours, ref))
    assert pa == pb, f"{label}: parameter counts differ ({pa} vs {pb})"
    steps = {
        name: step_fn(m, args.batch, args.device, args.channels_last)
        for name, m in (("dnas", ours), ("ref", ref))
    }
    times: dict[str, list[float]] = {"dnas": [], "ref": []}
    for name, fn in steps.items():
        fn()  # warm-up
    for _ in range(args.steps):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ips = {name: args.batch / statistics.median(t) for name, t in times.items()}
    print(
        f"{label:<36} params {pa:>9,}  dnas {ips['dnas']:8.1f} img/s"
        f"  reference {ips['ref']:8.1f} img/s"
        f"  ratio dnas/ref {ips['dnas'] / ips['ref']:.3f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    print(
        f"device {args.device}, batch {args.batch}, median of {args.steps} alternating steps,"
        f" torch {torch.__version__},"
        f" {torch.get_num_threads()} threads"
    )
    torch.manual_seed(0)
    compare(
        "densenet-bc-100 vs torchvision blocks",
        build(parse_name("densenet-bc-100")),
        torchvision_densenet_bc(),
        args,
    )
    compare(
        "wrn-16-4 vs straightforward WRN", build(parse_name("wrn-16-4")), reference_wrn(), args
    )


if __name__ == "__main__":
    main()

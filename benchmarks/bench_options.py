"""What each training switch buys: bf16 autocast, channels_last and torch.compile, one at a time.

Training steps (forward, backward, SGD) of one network on random CIFAR-shaped batches, alternating
between the variants; the median step is reported as images/s and as a ratio to the plain fp32
eager baseline. Also the loss after the same few steps from the same weights, to see that autocast
does not change what is learned. Usage:
``python -m benchmarks.bench_options [--name densenet-bc-40] [--batch 32] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dnas.models import build
from dnas.names import parse_name


def make_step(name: str, batch: int, device: str, amp: bool, channels_last: bool, compile_: bool):  # noqa: ANN201
    torch.manual_seed(0)
    model = build(parse_name(name)).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def step() -> float:
        with torch.autocast(device, torch.bfloat16, enabled=amp):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--name", default="densenet-bc-40")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    variants = {
        "fp32 eager": (False, False, False),
        "bf16 autocast": (True, False, False),
        "channels_last": (False, True, False),
    }
    if args.compile:
        variants["torch.compile"] = (False, False, True)
    steps, losses, compile_s = {}, {}, {}
    for k, v in variants.items():
        steps[k] = make_step(args.name, args.batch, args.device, *v)
        t0 = time.perf_counter()
        losses[k] = [steps[k]()]  # warm-up (and compilation)
        compile_s[k] = time.perf_counter() - t0
    times = {k: [] for k in steps}
    for _ in range(args.steps):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            losses[k].append(fn())
            times[k].append(time.perf_counter() - t0)
    print(
        f"{args.name}, device {args.device}, batch {args.batch},"
        f" median of {args.steps} alternating steps,"
        f" {torch.get_num_threads()} threads"
    )
    base = statistics.median(times["fp32 eager"])
    for k in steps:
        t = statistics.median(times[k])
        print(
            f"{k:<15} {args.batch / t:8.1f} img/s  ratio {base / t:5.2f}"
            f"  first step {compile_s[k]:6.1f} s"
            f"  loss after {len(losses[k])} steps {losses[k][-1]:.4f}"
            f" (fp32 eager {losses['fp32 eager'][-1]:.4f})"
        )


if __name__ == "__main__":
    main()

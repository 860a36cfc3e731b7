"""Memory-efficient DenseNet: peak training memory and step time versus the standard path.

The paper's implementation (Pleiss et al. 2017, REFERENCE.md) saves about 45% memory at 15-25%
more time on DenseNet-BC-100, batch 64. Here both variants of the same dnas network (same weights)
run alternately; torchvision's memory_efficient DenseNet is measured beside them for reference.
On CPU the peak is the CPU allocator's high-water mark during one step (torch.profiler memory
events); on CUDA, max_memory_allocated. Usage: ``python benchmarks/bench_memory.py [--batch 16]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_train import step_fn, torchvision_densenet_bc
from dnas.models import build
from dnas.names import parse_name
from dnas.profile import cpu_peak_bytes


def peak(fn, device: str) -> int:  # noqa: ANN001
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - before
    return cpu_peak_bytes(fn)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--name", default="densenet-bc-100")
    args = p.parse_args()
    spec = parse_name(args.name)
    torch.manual_seed(0)
    standard = build(spec)
    efficient = build(spec, memory_efficient=True)
    efficient.load_state_dict(standard.state_dict())
    models = {"dnas standard": standard, "dnas memory-efficient": efficient}
    if args.name == "densenet-bc-100":
        models["torchvision memory_efficient"] = torchvision_densenet_bc(memory_efficient=True)
    steps = {k: step_fn(m, args.batch, args.device, False) for k, m in models.items()}
    mem, times = {}, {k: [] for k in steps}
    for k, fn in steps.items():
        fn()  # warm-up: allocates the optimizer state, which is not part of the step's peak
        mem[k] = peak(fn, args.device)
    for _ in range(args.steps):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print(
        f"{args.name}, device {args.device}, batch {args.batch},"
        f" median of {args.steps} alternating steps"
    )
    base_m, base_t = mem["dnas standard"], statistics.median(times["dnas standard"])
    for k in steps:
        t = statistics.median(times[k])
        print(
            f"{k:<30} peak step memory {mem[k] / 2**20:8.1f} MiB"
            f" ({100 * (mem[k] / base_m - 1):+5.1f}%)"
            f"   step {1e3 * t:8.1f} ms ({100 * (t / base_t - 1):+5.1f}%)"
        )
    print(
        f"ratio memory-efficient/standard: memory {mem['dnas memory-efficient'] / base_m:.3f},"
        f" time {statistics.median(times['dnas memory-efficient']) / base_t:.3f}"
    )


if __name__ == "__main__":
    main()

"""Predicted against measured peak training memory (dnas.memory against the allocator).

    python benchmarks/bench_memory_model.py [--batch 16 64] [--device cpu]

For each model (both families, both DenseNet variants, with and without dropout) and each
batch size: the prediction from the spec alone, and the peak that ``dnas profile`` measures for
the same first training step (``dnas.profile.Workload``: on CPU the allocator's high-water mark
from torch.profiler's memory events plus the weights; on CUDA ``max_memory_allocated`` after
``reset_peak_memory_stats``). Prints the table and writes it to --out as JSON. The target is
every row within 10%.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import torch

from dnas.datasets import DATASETS
from dnas.memory import cpu_channel_block, training_memory
from dnas.names import parse_name
from dnas.profile import Workload
from dnas.spec import DenseNetSpec

MODELS = (
    "densenet-40",  # the paper's, k = 12, no bottleneck
    "densenet-40-drop0.2",
    "densenet-bc-100",  # the paper's, k = 12
    "densenet-bc-22-k8",  # small ones from the search space
    "densenet-c-40-k4-t0.25",
    "densenet121",  # the ImageNet stem (7x7/2 conv, max-pool) on a 32x32 input
    "wrn-16-2",
    "wrn-16-4-drop0.3",
    "wrn-28-10",  # the paper's best CIFAR model
    "wrn-40-4",
    "wrn-16-4-b313",  # other block types (Table 2)
    "wrn-10-2-b3",
    "wrn-22-1-b311",
)


def measure(name: str, batch: int, memory_efficient: bool, device: torch.device) -> dict:
    spec = parse_name(name)
    info = DATASETS["cifar10"]
    work = Workload(spec, info, batch, device, memory_efficient)
    measured, _ = work.peak_train_memory()
    del work
    gc.collect()
    est = training_memory(spec, batch, info.input_size[1:], memory_efficient, device.type)
    return {
        "name": name,
        "variant": "memory-efficient" if memory_efficient else "standard",
        "batch": batch,
        "predicted": est.peak,
        "measured": measured,
        "error": est.peak / measured - 1,
        "phase": est.phase,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", default="benchmarks/results/memory_model.json")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    t0 = time.perf_counter()
    print(f"{'model':24s} {'variant':17s} {'batch':>5s} {'predicted':>12s} {'measured':>12s}"
          f" {'error':>7s}  peak in")  # fmt: skip
    for name in args.models:
        variants = [False, True] if isinstance(parse_name(name), DenseNetSpec) else [False]
        for me in variants:
            for batch in args.batch:
                r = measure(name, batch, me, device)
                rows.append(r)
                print(f"{name:24s} {r['variant']:17s} {batch:5d}"
                      f" {r['predicted'] / 2**20:8.1f} MiB {r['measured'] / 2**20:8.1f} MiB"
                      f" {100 * r['error']:+6.2f}%  {r['phase']}", flush=True)  # fmt: skip
    worst = max(abs(r["error"]) for r in rows)
    within = sum(abs(r["error"]) <= 0.10 for r in rows)
    print(f"\n{within} of {len(rows)} within 10%; largest error {100 * worst:.2f}%"
          f" ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"device": args.device, "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "onednn_channel_block": cpu_channel_block()}  # fmt: skip
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""Does the machine itself change speed? One process, nothing else to do, for a few minutes.

    python benchmarks/bench_machine_drift.py [--seconds 180] [--window 5] [--name densenet-bc-100]

Takes turns between three fixed pieces of work, each timed on its own: a forward pass of NAME at
batch 16 (what `dnas profile` times), the fixed matrix product of ``dnas.profile.Reference`` and
a 128 MiB copy (memory bandwidth). Then, per window of ``--window`` seconds, the median time of
each, how far those medians range (largest over smallest, less 1) and how closely the forward
pass follows each of the other two (correlation across windows). When the product, whose work
and buffers never change, moves with the forward pass, what moves is the machine, not the
model's timing. Writes every timing to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dnas.device import keep_freed_memory
from dnas.models import build
from dnas.names import parse_name
from dnas.profile import Reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--name", default="densenet-bc-100")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/machine_drift.json"))
    args = ap.parse_args()
    if not 1.0 <= args.window <= args.seconds / 3:
        ap.error("--window: from 1 second to a third of --seconds (three windows at least)")
    keep_freed_memory()  # as `dnas profile` runs
    torch.manual_seed(0)
    model = build(parse_name(args.name)).eval()
    x = torch.randn(16, 3, 32, 32)
    big = torch.randn(32 * 2**20)  # 128 MiB of float32
    dst = torch.empty_like(big)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    work = {
        "forward": forward,
        "product": Reference(torch.device("cpu")),
        "copy": lambda: dst.copy_(big),
    }
    for fn in work.values():  # warm-up, untimed
        fn()
    at: list[float] = []
    seconds: dict[str, list[float]] = {k: [] for k in work}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        at.append(time.perf_counter() - t0)
        for k, fn in work.items():
            s = time.perf_counter()
            fn()
            seconds[k].append(time.perf_counter() - s)

    windows: dict[str, list[float]] = {k: [] for k in work}
    for w in range(int(at[-1] // args.window) + 1):
        turns = [i for i, t in enumerate(at) if w * args.window <= t < (w + 1) * args.window]
        if len(turns) >= 5:  # a last, short window is left out
            for k in work:
                windows[k].append(statistics.median(seconds[k][i] for i in turns) * 1e3)
    result = {
        "name": args.name,
        "seconds": args.seconds,
        "window_s": args.window,
        "turns": len(at),
        "window_median_ms": windows,
        "range": {k: max(v) / min(v) - 1 for k, v in windows.items()},
        "correlation_with_forward": {
            k: statistics.correlation(windows["forward"], windows[k]) for k in ("product", "copy")
        },
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    for k, v in windows.items():
        print(
            f"{k:8s} median of {args.window:g}-s windows: {min(v):.2f}-{max(v):.2f} ms,"
            f" range {100 * result['range'][k]:.1f}%"
        )
    for k, r in result["correlation_with_forward"].items():
        print(f"forward pass ~ {k}: correlation {r:.2f} over {len(windows[k])} windows")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

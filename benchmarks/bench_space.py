"""Counting rate: closed form over the whole default space versus fvcore on a sample, one run.

    python benchmarks/bench_space.py [--sample 30] [--dataset cifar10]

Prints both rates (architectures per second) and their ratio. The fvcore side builds each
sampled model and traces one forward pass, which is what counting with fvcore costs.
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import torch

from dnas.datasets import dataset_info
from dnas.flops import fvcore_count
from dnas.models import build
from dnas.space import candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=30)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = dataset_info(args.dataset)

    t0 = time.perf_counter()
    cands = list(candidates("all", info))
    closed_s = time.perf_counter() - t0

    rng = random.Random(args.seed)
    sample = rng.sample(cands, args.sample)
    t0 = time.perf_counter()
    mismatches = 0
    for c in sample:
        fv = fvcore_count(build(c.spec), info.input_size)
        mismatches += fv.total != c.cost.flops
    fv_s = time.perf_counter() - t0

    closed_rate, fv_rate = len(cands) / closed_s, len(sample) / fv_s
    print(
        f"machine: {platform.machine()}, torch {torch.__version__},"
        f" {torch.get_num_threads()} threads"
    )
    print(
        f"closed form: {len(cands):,} architectures in {closed_s:.3f} s"
        f" = {closed_rate:,.0f} archs/s"
    )
    print(
        f"fvcore:      {len(sample):,} sampled in {fv_s:.2f} s = {fv_rate:,.2f} archs/s"
        f" (mismatches: {mismatches})"
    )
    print(f"ratio: closed form is {closed_rate / fv_rate:,.0f}x faster")


if __name__ == "__main__":
    main()

"""Input pipeline: dnas's on-device batches versus a torchvision DataLoader with 2 workers.

Both produce the same thing for one epoch of CIFAR-shaped uint8 images (50,000 × 3×32×32, random
content, as CIFAR itself cannot be downloaded here): 4-pixel padding + random 32×32 crop,
horizontal flip, per-channel normalisation, batches of 128. No model runs; this is the cost of
feeding one. Usage: ``python benchmarks/bench_pipeline.py [--images 50000] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from dnas.data import batches

MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)


class Images(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.tf = v2.Compose(
            [
                v2.RandomCrop(32, padding=4),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tf(self.x[i]), self.y[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (args.images,), generator=g)

    xd, yd = x.to(args.device), y.to(args.device)
    t0 = time.perf_counter()
    n = 0
    for xb, _ in batches(
        xd, yd, args.batch, MEAN, STD, torch.Generator().manual_seed(0), augment=True
    ):
        n += len(xb)
    if args.device == "cuda":
        torch.cuda.synchronize()
    ours = n / (time.perf_counter() - t0)

    loader = DataLoader(
        Images(x, y),
        args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=args.device == "cuda",
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    n = 0
    for xb, _ in loader:
        xb = xb.to(args.device, non_blocking=True)
        n += len(xb)
    if args.device == "cuda":
        torch.cuda.synchronize()
    ref = n / (time.perf_counter() - t0)
    print(
        f"device {args.device}, {args.images:,} images, batch {args.batch};"
        f" DataLoader with {args.workers} workers"
        " (worker start-up included)"
    )
    print(f"dnas on-device batches {ours:12,.0f} img/s")
    print(f"torchvision DataLoader {ref:12,.0f} img/s")
    print(f"ratio dnas/DataLoader {ours / ref:.1f}")


if __name__ == "__main__":
    main()

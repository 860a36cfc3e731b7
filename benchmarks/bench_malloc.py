"""CPU training with and without ``dnas.device.keep_freed_memory`` (glibc keeps freed blocks).

    python benchmarks/bench_malloc.py [--models ...] [--reps 3]

Runs `dnas train` (one epoch on 6,000 Fashion-MNIST images) as a user does, alternating: with
dnas's malloc settings (the default) and without them. "Without" sets ``MALLOC_ARENA_MAX`` to
glibc's own default (8 per core), which leaves malloc as glibc ships it and, being a user's
malloc setting, makes dnas leave it alone. Prints images/s per run and the mean ratio; writes
--out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean


def images_per_s(model: str, keep: bool, folder: Path) -> float:
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if not keep:
        env["MALLOC_ARENA_MAX"] = str(8 * (os.cpu_count() or 1))
    out = folder / f"{model}-{keep}-{len(list(folder.iterdir()))}"
    cmd = [sys.executable, "-m", "dnas_cli.main", "train", model, "--dataset", "fashion-mnist",
           "--epochs", "1", "--train-subset", "6000", "--val-size", "1000", "--out", str(out),
           "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    text = done.stdout
    return json.loads(text[text.index("{") : text.rindex("}") + 1])["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["densenet-bc-22-k8", "densenet-c-13-k16",
                                                   "wrn-10-1"])  # fmt: skip
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/malloc.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for model in args.models:
                for keep in (rep % 2 == 0, rep % 2 == 1):  # alternate which goes first
                    speed = images_per_s(model, keep, Path(tmp))
                    rows.append({"model": model, "keep_freed_memory": keep, "images_per_s": speed})
                    print(f"{model:20s} {'kept' if keep else 'glibc default':14s} {speed:8.0f}",
                          flush=True)  # fmt: skip
    print()
    for model in args.models:
        on, off = (mean(r["images_per_s"] for r in rows
                        if r["model"] == model and r["keep_freed_memory"] == keep)
                   for keep in (True, False))  # fmt: skip
        print(f"{model:20s} kept {on:7.0f}  glibc default {off:7.0f}  ratio {on / off:.3f}")
    Path(args.out).write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

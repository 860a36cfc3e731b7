"""Search quality: dnas's default sampler (constrained TPE) versus random search, equal trials.

    python benchmarks/bench_sampler.py [--trials 10] [--seeds 0 1 2]

Each run is a real search on a small CPU task (Fashion-MNIST subset, tiny budget, short
trials). Prints the hypervolume of each run's front (validation accuracy vs parameters,
reference point = (budget, 0 accuracy), normalised so 1.0 = 100% accuracy at no cost) and the
mean per sampler.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from dnas.budget import parse_budget
from dnas.config import make_config
from dnas.pareto import hypervolume
from dnas.search import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", default="100k-params")
    parser.add_argument("--flops", default="10M-flops")
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    limit = parse_budget(args.budget).limit
    results: dict[str, list[float]] = {"auto": [], "random": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for sampler in results:
                cfg = make_config(
                    {
                        "budgets": (args.budget, args.flops),
                        "dataset": "fashion-mnist",
                        "trials": args.trials,
                        "epochs": args.epochs,
                        "train_subset": args.train_subset,
                        "val_size": args.val_size,
                        "sampler": sampler,
                        "seed": seed,
                        "study": f"{sampler}-{seed}",
                        "studies_dir": tmp,
                        "reports_dir": tmp,
                    }
                )
                t0 = time.perf_counter()
                s = search(cfg)
                hv = hypervolume([(m.params, m.val_acc) for m in s.front], limit)
                results[sampler].append(hv)
                print(
                    f"seed {seed} {sampler:>6}: {s.complete} trials,"
                    f" {s.rejected_over_budget} rejected, "
                    f"front {len(s.front)}, best {s.best.val_acc:.4f} ({s.best.name}), "
                    f"hypervolume {hv:.4f}, {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
    for sampler, hvs in results.items():
        print(
            f"{sampler:>6}: mean hypervolume {statistics.mean(hvs):.4f} over seeds {args.seeds}: "
            + ", ".join(f"{h:.4f}" for h in hvs)
        )
    ratio = statistics.mean(results["auto"]) / statistics.mean(results["random"])
    print(f"ratio auto/random: {ratio:.3f}")


if __name__ == "__main__":
    main()

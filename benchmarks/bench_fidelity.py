"""Fidelity study: does a candidate's accuracy after a few epochs rank candidates as their
accuracy after full training does? It decides dnas search's default rungs.

    python benchmarks/bench_fidelity.py [--archs 12] [--epochs 3] [--train-subset 20000]

Picks ``--archs`` architectures spread over the budget (1M parameters and 20M FLOPs on
Fashion-MNIST, as `make demo`; the FLOPs bind first): of the feasible candidates of both
families, the one nearest each of ``--archs`` parameter counts evenly spaced on a log scale.
Each is trained once to the top rung with the search's recipe
(a schedule over the top rung, as multi-fidelity uses it), and its validation accuracy is kept
after every epoch. Prints Kendall's tau between the ranking after each epoch and the ranking at
the top, and between parameter count alone and the top (the baseline any proxy must beat).
Writes the table as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rank import kendall_tau  # noqa: E402

from dnas.budget import parse_budgets  # noqa: E402
from dnas.data import load_data  # noqa: E402
from dnas.datasets import DATASETS  # noqa: E402
from dnas.search import DATA_SEED  # noqa: E402
from dnas.space import candidates, within  # noqa: E402
from dnas.train import TrainConfig, train  # noqa: E402


def spread(budgets: tuple[str, ...], count: int) -> list:
    """``count`` feasible candidates nearest parameter counts evenly spaced in log scale."""
    feasible = within(parse_budgets(budgets), list(candidates("all", DATASETS["fashion-mnist"])))
    feasible.sort(key=lambda c: (c.cost.params, c.spec.name))
    lo, hi = math.log(feasible[0].cost.params), math.log(feasible[-1].cost.params)
    picks = []
    for i in range(count):
        target = lo + i * (hi - lo) / (count - 1)
        rest = [c for c in feasible if c not in picks]
        picks.append(min(rest, key=lambda c: abs(math.log(c.cost.params) - target)))
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=12)
    parser.add_argument("--budget", nargs="+", default=["1M-params", "20M-flops"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/fidelity.json")
    args = parser.parse_args()
    data = load_data("fashion-mnist", None, "cpu", args.val_size, args.train_subset, DATA_SEED)
    rows = []
    t0 = time.perf_counter()
    for c in spread(tuple(args.budget), args.archs):
        config = TrainConfig(epochs=args.epochs, seed=args.seed, train_subset=args.train_subset,
                             val_size=args.val_size)  # fmt: skip
        r = train(c.spec, data, config)
        accs = [m["val_acc"] for m in r.metrics]
        rows.append({"name": c.spec.name, "params": c.cost.params, "flops": c.cost.flops,
                     "val_acc": accs, "seconds": r.wall_time_s})  # fmt: skip
        print(f"{c.spec.name:36s} {c.cost.params:>9,} params {c.cost.flops / 1e6:6.1f}M flops"
              f"  val acc by epoch {' '.join(f'{a:.4f}' for a in accs)}  {r.wall_time_s:.0f} s",
              flush=True)  # fmt: skip
    top = [r["val_acc"][-1] for r in rows]
    taus = {f"epoch {e + 1}": kendall_tau([r["val_acc"][e] for r in rows], top)
            for e in range(args.epochs - 1)}  # fmt: skip
    taus["parameters"] = kendall_tau([r["params"] for r in rows], top)
    taus["FLOPs"] = kendall_tau([r["flops"] for r in rows], top)
    print(f"\nKendall tau with the ranking after {args.epochs} epochs ({len(rows)} architectures,"
          f" {time.perf_counter() - t0:.0f} s):")  # fmt: skip
    for k, v in taus.items():
        print(f"  {k:12s} {v:+.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "tau": taus}, indent=1))


if __name__ == "__main__":
    main()

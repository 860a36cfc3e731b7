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
Writes the table as JSON to --out after every architecture; run again with a larger --archs, it
keeps the rows already there (same epochs, subset, validation size and seed) and spreads the new
architectures over the rest of the budget in the same way.
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
from dnas.config import DATA_SEED  # noqa: E402
from dnas.data import load_data  # noqa: E402
from dnas.datasets import DATASETS  # noqa: E402
from dnas.space import candidates, within  # noqa: E402
from dnas.train import TrainConfig, train  # noqa: E402


def spread(budgets: tuple[str, ...], count: int, exclude: frozenset[str] = frozenset()) -> list:
    """``count`` feasible candidates nearest parameter counts evenly spaced in log scale (none
    of those named in ``exclude``)."""
    feasible = within(parse_budgets(budgets), list(candidates("all", DATASETS["fashion-mnist"])))
    feasible = [c for c in feasible if c.spec.name not in exclude]
    if count <= 0:
        return []
    if count == 1:
        return feasible[:1]
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
    out = Path(args.out)
    rows = _earlier_rows(out, args)
    t0 = time.perf_counter()
    new = spread(tuple(args.budget), args.archs - len(rows), frozenset(r["name"] for r in rows))
    for c in new:
        config = TrainConfig(epochs=args.epochs, seed=args.seed, train_subset=args.train_subset,
                             val_size=args.val_size)  # fmt: skip
        r = train(c.spec, data, config)
        accs = [m["val_acc"] for m in r.metrics]
        rows.append({"name": c.spec.name, "params": c.cost.params, "flops": c.cost.flops,
                     "val_acc": accs, "seconds": r.wall_time_s})  # fmt: skip
        print(f"{c.spec.name:36s} {c.cost.params:>9,} params {c.cost.flops / 1e6:6.1f}M flops"
              f"  val acc by epoch {' '.join(f'{a:.4f}' for a in accs)}  {r.wall_time_s:.0f} s",
              flush=True)  # fmt: skip
        _write(out, args, rows, {})
    rows.sort(key=lambda r: r["params"])
    top = [r["val_acc"][-1] for r in rows]
    taus = {f"epoch {e + 1}": kendall_tau([r["val_acc"][e] for r in rows], top)
            for e in range(args.epochs - 1)}  # fmt: skip
    taus["parameters"] = kendall_tau([r["params"] for r in rows], top)
    taus["FLOPs"] = kendall_tau([r["flops"] for r in rows], top)
    print(f"\nKendall tau with the ranking after {args.epochs} epochs ({len(rows)} architectures,"
          f" {time.perf_counter() - t0:.0f} s):")  # fmt: skip
    for k, v in taus.items():
        print(f"  {k:12s} {v:+.3f}")
    _write(out, args, rows, taus)


SAME_RUN = ("epochs", "train_subset", "val_size", "seed", "budget")


def _earlier_rows(out: Path, args: argparse.Namespace) -> list[dict]:
    """The rows of an earlier run with the same training settings, to extend rather than redo."""
    if not out.exists():
        return []
    earlier = json.loads(out.read_text())
    if any(earlier["args"].get(k) != getattr(args, k) for k in SAME_RUN):
        return []
    return earlier["rows"][: args.archs]


def _write(out: Path, args: argparse.Namespace, rows: list[dict], taus: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"args": vars(args), "rows": rows, "tau": taus}, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    main()

"""Search quality at equal wall time: dnas's default search against random search and NSGA-II
without multi-fidelity (what a user would write with plain Optuna), several seeds, one machine.

    python benchmarks/bench_search.py [--minutes 5] [--seeds 0 1 2] [--out benchmarks/results]

Every run is the command a user types, in a fresh study: ``dnas search`` on the `make demo` task
(Fashion-MNIST, 20,000 training images, 1M parameters and 20M FLOPs, 3 epochs per candidate,
2 workers) with ``--timeout`` as the wall-time limit (it also cuts a trial still training):

    dnas    --sampler auto     TPE after the initial design spread over log parameters,
                               every candidate trained for the full 3 epochs (the defaults)
    random  --sampler random   every candidate trained for the full 3 epochs
    nsga2   --sampler nsga2    likewise

Time counts from each run's first trial (the workers' start-up, the same for every method, is
not counted). Runs alternate between methods (seed 0 of each, then seed 1, ...) so that any
drift of the machine touches all of them. Fronts use only results at the same full fidelity
(3 epochs). Hypervolume: dnas.pareto's, accuracy against parameters, reference point (largest
parameter count of any candidate within budget, accuracy 0). Regret: the hypervolume of the
best front known from all runs together, less the run's. Prints a table per seed and the means,
and writes search.json and hypervolume.png (hypervolume against time) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from dnas import pareto
from dnas import study as records
from dnas.budget import parse_budgets
from dnas.datasets import DATASETS
from dnas.space import candidates, within

TASK = ["--budget", "1M-params", "--budget", "20M-flops", "--dataset", "fashion-mnist",
        "--train-subset", "20000", "--val-size", "2000", "--epochs", "3", "--workers", "2",
        "--trials", "100000"]  # fmt: skip
METHODS = {
    "dnas": ["--sampler", "auto"],  # the defaults: initial design, full fidelity
    "random": ["--sampler", "random", "--min-epochs", "3"],
    "nsga2": ["--sampler", "nsga2", "--min-epochs", "3"],
}


def run(method: str, seed: int, minutes: float, tmp: Path) -> dict:
    """One search from a fresh study; the times at which each full-fidelity result arrived."""
    name = f"{method}-{seed}"
    args = [sys.executable, "-m", "dnas_cli.main", "search", *TASK, *METHODS[method],
            "--seed", str(seed), "--timeout", f"{minutes * 60:.0f}s", "--study", name,
            "--studies-dir", str(tmp / "studies"), "--reports-dir", str(tmp / "reports"),
            "--json"]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.time() - t0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/studies/{name}.db")
    recs = {r.number: r for r in records.read_all(study)}
    # Time counts from the first trial's start: each worker's --timeout clock starts once it has
    # imported torch and loaded the data, a few seconds after the command starts.
    starts = [t.datetime_start.timestamp() for t in study.trials if t.datetime_start]
    t0 = min(starts, default=t0)
    results = []
    for t in study.trials:
        r = recs[t.number]
        if r.state == records.TRAINED and t.datetime_complete is not None:
            results.append({"trial": t.number, "name": r.name, "params": r.params,
                            "val_acc": r.val_acc,
                            "t": t.datetime_complete.timestamp() - t0})  # fmt: skip
    states = [r.state for r in recs.values()]
    print(f"  {name}: exit {proc.returncode}, {wall:.0f} s, {len(results)} at full fidelity,"
          f" {sum(r.started for r in recs.values())} trained, {states.count('stopped')} stopped,"
          f" {states.count('reused')} reused, {states.count('over budget')} over budget",
          flush=True)  # fmt: skip
    return {"method": method, "seed": seed, "exit": proc.returncode, "wall_s": wall,
            "started": sum(r.started for r in recs.values()),
            "stopped": states.count("stopped"), "reused": states.count("reused"),
            "over_budget": states.count("over budget"), "results": results}  # fmt: skip


def hv_at(results: list[dict], t: float, ref: float) -> float:
    return pareto.hypervolume([(r["params"], r["val_acc"]) for r in results if r["t"] <= t], ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    feasible = within(parse_budgets(["1M-params", "20M-flops"]),
                      list(candidates("all", DATASETS["fashion-mnist"])))  # fmt: skip
    ref = max(c.cost.params for c in feasible)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for method in args.methods:
                runs.append(run(method, seed, args.minutes, Path(tmp)))
    limit = args.minutes * 60
    everything = [(r["params"], r["val_acc"]) for run_ in runs for r in run_["results"]]
    best = pareto.hypervolume(everything, ref)
    grid = [limit * i / 60 for i in range(61)]
    for r in runs:
        r["hv_curve"] = [hv_at(r["results"], t, ref) for t in grid]
        r["hv"] = r["hv_curve"][-1]
        r["regret"] = best - r["hv"]
    by_seed = {(r["method"], r["seed"]): r for r in runs}
    for r in runs:  # the time dnas needs to reach random's final hypervolume, seed by seed
        target = by_seed.get(("random", r["seed"]), {}).get("hv")
        reached = [t for t, h in zip(grid, r["hv_curve"]) if target is not None and h >= target]
        r["time_to_random_hv_s"] = reached[0] if reached else None
    print(f"\nbest known front (all runs): hypervolume {best:.4f}; reference {ref:,} params")
    print("| method | seed | full-fidelity results | trained | hypervolume | regret |"
          " time to random's final HV |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (list(METHODS).index(r["method"]), r["seed"])):
        reach = r["time_to_random_hv_s"]
        print(f"| {r['method']} | {r['seed']} | {len(r['results'])} | {r['started']} |"
              f" {r['hv']:.4f} | {r['regret']:.4f} |"
              f" {'never' if reach is None else f'{reach:.0f} s'} |")  # fmt: skip
    print("\n| method | mean hypervolume | mean regret | regret / random's |")
    print("|---|---|---|---|")
    means = {m: statistics.mean(r["regret"] for r in runs if r["method"] == m)
             for m in args.methods}  # fmt: skip
    for m in args.methods:
        hv = statistics.mean(r["hv"] for r in runs if r["method"] == m)
        ratio = means[m] / means["random"] if means.get("random") else float("nan")
        print(f"| {m} | {hv:.4f} | {means[m]:.4f} | {ratio:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "reference_params": ref, "best_hv": best, "grid_s": grid,
              "runs": runs, "machine": os.uname().nodename, "cpus": os.cpu_count()}  # fmt: skip
    (out / "search.json").write_text(json.dumps(record, indent=1))
    plot(runs, grid, out / "hypervolume.png", args.minutes)


def plot(runs: list[dict], grid: list[float], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"dnas": "tab:blue", "random": "tab:orange", "nsga2": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    minutes_grid = [t / 60 for t in grid]
    for m, color in colors.items():
        curves = [r["hv_curve"] for r in runs if r["method"] == m]
        for c in curves:
            ax.plot(minutes_grid, c, color=color, alpha=0.3, linewidth=1)
        if curves:
            mean = [statistics.mean(v) for v in zip(*curves)]
            ax.plot(minutes_grid, mean, color=color, linewidth=2.2, label=f"{m} (mean)")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("hypervolume (val acc vs params)")
    ax.set_title(f"Fashion-MNIST, 1M params + 20M FLOPs, {minutes:g} min per run, 2 CPU cores")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()

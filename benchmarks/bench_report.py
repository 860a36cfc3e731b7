"""Time `dnas.report.write_report` on a synthetic study of 1,000 or 10,000 trials (no training).

    .venv/bin/python benchmarks/bench_report.py [--trials 1000] [--out /tmp/bench-report]
    .venv/bin/python benchmarks/bench_report.py --trials 10000

The study has the layout `dnas search` writes: random DenseNet/WRN proposals from the default
spaces with their exact costs, a 1M-parameter budget (over-budget proposals stored as rejected,
never trained), a few failures, and 3-epoch learning curves for the trained ones. It is stored
in SQLite once (about 30 s for 1,000 trials, 9 min for 10,000: Optuna adds trials one by one)
and reused. The times printed: the study opened, its trials loaded (`dnas.trial_table`) and its
report written, end to end; the load alone, and Optuna's own `study.get_trials()` for comparison;
then the report of the same study held in memory.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from dnas.budget import parse_budget
from dnas.cost import count
from dnas.space import SPACES
from dnas.spec import WRN_BLOCK_TYPES, DenseNetSpec, WRNSpec
from dnas.trial_table import load_trials

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DISTRIBUTIONS = {
    "family": CategoricalDistribution(["densenet", "wrn"]),
    "densenet_layers_per_block": IntDistribution(
        min(SPACES["densenet"].layers_per_block), max(SPACES["densenet"].layers_per_block)
    ),
    "densenet_growth_rate": CategoricalDistribution(list(SPACES["densenet"].growth_rates)),
    "densenet_bottleneck": CategoricalDistribution(list(SPACES["densenet"].bottleneck)),
    "densenet_compression": CategoricalDistribution(list(SPACES["densenet"].compression)),
    "wrn_blocks_per_group": IntDistribution(
        min(SPACES["wrn"].blocks_per_group), max(SPACES["wrn"].blocks_per_group)
    ),
    "wrn_widen": IntDistribution(min(SPACES["wrn"].widen), max(SPACES["wrn"].widen)),
    "wrn_block": CategoricalDistribution(list(WRN_BLOCK_TYPES)),
}


def _proposal(rng: random.Random) -> tuple[dict, object]:
    if rng.random() < 0.5:
        n, k = rng.randint(1, 12), rng.choice([4, 6, 8, 12, 16])
        b, theta = rng.choice([True, False]), rng.choice([1.0, 0.5])
        params = {
            "family": "densenet",
            "densenet_layers_per_block": n,
            "densenet_growth_rate": k,
            "densenet_bottleneck": b,
            "densenet_compression": theta,
        }
        return params, DenseNetSpec((6 if b else 3) * n + 4, k, b, theta)
    n, k, block = rng.randint(1, 4), rng.randint(1, 4), rng.choice(["b33", "b313", "b131"])
    params = {"family": "wrn", "wrn_blocks_per_group": n, "wrn_widen": k, "wrn_block": block}
    return params, WRNSpec(6 * n + 4, k, WRN_BLOCK_TYPES[block])


def synthetic_study(
    trials: int = 1000,
    seed: int = 0,
    storage: str | None = None,
    name: str = "synthetic",
    budget: str = "1M-params",
    epochs: int = 3,
    run_dirs: dict[int, str] | None = None,
) -> optuna.Study:
    """A Pareto study shaped like `dnas search`'s; ``run_dirs`` maps trial numbers to run dirs."""
    rng = random.Random(seed)
    limit = parse_budget(budget)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    study.set_metric_names(["val_acc", "params"])
    for key, value in (
        ("budgets", [budget]),
        ("dataset", "cifar10"),
        ("space", "all"),
        ("objective", "pareto"),
        ("cost", "params"),
    ):
        study.set_user_attr(key, value)
    made = []
    for number in range(trials):
        params, spec = _proposal(rng)
        cost = count(spec)
        violation = cost.params / limit.limit - 1.0
        attrs = {
            "name": spec.name,
            "family": spec.family,
            "params": cost.params,
            "flops": cost.flops,
            "violation": violation,
        }
        dists = {k: DISTRIBUTIONS[k] for k in params}
        if violation > 0:
            attrs["rejected"] = "over budget"
            made.append(
                optuna.trial.create_trial(
                    values=[0.0, float(cost.params)],
                    params=params,
                    distributions=dists,
                    user_attrs=attrs,
                )
            )
            continue
        attrs.update(trained=True, device="cpu", epochs=epochs)
        if rng.random() < 0.03:
            attrs["failure"] = "RuntimeError: CUDA out of memory"
            made.append(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL,
                    params=params,
                    distributions=dists,
                    user_attrs=attrs,
                )
            )
            continue
        top = 0.55 + 0.1 * min(1.0, cost.params / limit.limit) + rng.uniform(-0.08, 0.08)
        metrics, t = [], 0.0
        for e in range(1, epochs + 1):
            acc = top * (1 - 0.5**e) / (1 - 0.5**epochs)
            dt = cost.flops / 2e7 + rng.uniform(0, 2)
            t += dt
            metrics.append(
                {
                    "epoch": e,
                    "train_loss": 2.3 * (1 - acc),
                    "train_acc": acc,
                    "val_loss": 2.3 * (1 - acc),
                    "val_acc": acc,
                    "lr": 0.1,
                    "train_time_s": dt,
                    "time_s": dt,
                    "images_per_s": 5e4 / dt,
                }
            )
        attrs.update(metrics=metrics, wall_time_s=t, images_per_s=metrics[-1]["images_per_s"])
        if run_dirs and number in run_dirs:
            attrs["run_dir"] = run_dirs[number]
        made.append(
            optuna.trial.create_trial(
                values=[metrics[-1]["val_acc"], float(cost.params)],
                params=params,
                distributions=dists,
                user_attrs=attrs,
            )
        )
    study.add_trials(made)
    return study


def main() -> None:
    from dnas.report import write_report

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument(
        "--out", type=Path, default=None, help="Keep the report here [default: a temp dir]."
    )
    p.add_argument(
        "--db",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dnas-bench-report-{trials}.db",
        help="SQLite file for the study, built once and reused.",
    )
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = Path(str(args.db).format(trials=args.trials))
    storage = f"sqlite:///{db}"
    if not db.exists():
        t0 = time.perf_counter()
        synthetic_study(args.trials, storage=storage)
        print(f"built {db} in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()  # end to end, first: opening the study, loading, the report
        study = optuna.load_study(study_name="synthetic", storage=storage)
        page = write_report(study, args.out or Path(tmp) / "report")
        took = time.perf_counter() - t0
        size = page.stat().st_size
        t0 = time.perf_counter()
        trials = load_trials(optuna.load_study(study_name="synthetic", storage=storage))
        loaded = time.perf_counter() - t0
        t0 = time.perf_counter()
        optuna_trials = optuna.load_study(study_name="synthetic", storage=storage).get_trials()
        optuna_load = time.perf_counter() - t0
        assert trials == optuna_trials, "load_trials and Optuna's loader disagree"
        memory_study = synthetic_study(args.trials)
        t0 = time.perf_counter()
        write_report(memory_study, Path(tmp) / "memory")
        memory = time.perf_counter() - t0
    print(
        f"{args.trials}-trial study: {took:.2f} s from SQLite storage, load and report (the load"
        f" alone {loaded:.2f} s; Optuna's own loader {optuna_load:.2f} s),"
        f" index.html {size / 1e6:.1f} MB; the report of the same study in memory {memory:.2f} s"
    )


if __name__ == "__main__":
    main()

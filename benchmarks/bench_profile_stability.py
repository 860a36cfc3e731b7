"""Do separate runs of `dnas profile NAME` agree on the timings? Which statistic agrees best?

    python benchmarks/bench_profile_stability.py [NAME] [--runs 5] [dnas profile options]

(Give NAME first: after them, a profile option's value could be taken for NAME.)

Runs the command ``--runs`` times back to back, each in a fresh process as a user would, and for
every timing (forward and training step of each variant) prints how far apart the runs are:
(largest - smallest) / smallest, for the reported figure and for each statistic of the timed
runs that ``--json`` carries (fastest, lower quartile, median). The target (issue 10) is the
reported figure of three runs within 10%. Beside each run, how far the machine's own speed moved
while it timed (``dnas.profile.Reference``), and whether each timing follows the reference's
time from run to run (correlation; how far apart the runs are in reference units). Writes
everything to --out as JSON.

    --arm NAME KEY=VALUE[,KEY=VALUE...]   (repeatable)

compares settings that only the environment can change (threads, OpenMP's wait policy, huge
pages): the runs take turns between the arms (ABBA order, so that a machine slowing down meanwhile
hurts none of them more), ``--runs`` each, and every arm gets its own figures.

    --checkout NAME DIR   (repeatable)

adds an arm that runs another checkout's code (say ``git worktree add /tmp/before HEAD~1``), so
that a change to the timing itself is compared with what it replaces on the same machine, in the
same series. Without ``--arm``, this checkout runs as the arm "as is" beside them.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dnas.profile import TIMED_S

STATISTICS = ("min_ms", "q1_ms", "median_ms")


def run_once(name: str, extra: list[str], env: dict[str, str], cwd: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "dnas_cli.main", "profile", name, "--json", *extra]
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, **env}, cwd=cwd
    )
    return json.loads(done.stdout)


def importing(checkout: Path, into: Path) -> Path:
    """A folder from which ``python -m dnas_cli.main`` imports ``checkout``'s dnas and CLI (the
    working folder comes first on ``sys.path``, before the installed dnas)."""
    if not (checkout / "dnas").is_dir() or not (checkout / "cli").is_dir():
        raise SystemExit(f"--checkout: {checkout} has no dnas/ and cli/: give a dnas checkout")
    into.mkdir()
    (into / "dnas").symlink_to(checkout.resolve() / "dnas")
    (into / "dnas_cli").symlink_to(checkout.resolve() / "cli")
    return into


def timed_seconds(cwd: Path | None) -> object:
    """dnas.profile.TIMED_S of the code that runs from ``cwd`` (this checkout's with None)."""
    if cwd is None:
        return TIMED_S
    code = "from dnas.profile import TIMED_S; print(repr(TIMED_S))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    return ast.literal_eval(done.stdout) if done.returncode == 0 else None


def commit_of(folder: Path) -> str | None:
    """The checkout's commit, marked when its files differ from it; None outside git."""
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return None
    status = [*git, "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + (" with uncommitted changes" if dirty else "")


def run_series(
    name: str, extra: list[str], count: int, arms: dict[str, dict[str, str]], cwd: dict[str, Path]
) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    """``count`` runs of every arm, taking turns in ABBA order: each run's JSON and seconds."""
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    for i in range(count):
        for arm in list(arms) if i % 2 == 0 else reversed(list(arms)):
            t0 = time.perf_counter()
            runs[arm].append(run_once(name, extra, arms[arm], cwd.get(arm)))
            seconds[arm].append(time.perf_counter() - t0)
            last = runs[arm][-1]
            print(
                f"run {i + 1}{'' if len(arms) == 1 else f' ({arm})'}: {seconds[arm][-1]:.0f} s,"
                f" other processes {last['cpu_busy_elsewhere']:.3f} cores, the machine's own"
                f" speed moved {100 * last['machine_drift']:.1f}%, reference"
                f" {last['reference_ms']:.3f} ms",
                flush=True,
            )
    return runs, seconds


def parse_env(text: str) -> dict[str, str]:
    pairs = [kv.split("=", 1) for kv in text.split(",") if kv]
    if not all(len(p) == 2 and p[0] for p in pairs):
        raise SystemExit(f"--arm: {text!r}: expected KEY=VALUE[,KEY=VALUE...]")
    return dict(pairs)


def apart(values: list[float]) -> float:
    return max(values) / min(values) - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", default="densenet-bc-100")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--arm", nargs=2, action="append", metavar=("NAME", "ENV"), default=[])
    ap.add_argument("--checkout", nargs=2, action="append", metavar=("NAME", "DIR"), default=[])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/profile_stability.json"))
    args, args.extra = ap.parse_known_args()  # the rest: more `dnas profile` options
    if args.runs < 3:
        raise SystemExit(f"--runs {args.runs}: give 3 or more (the figure is three in a row)")
    names = [name for name, _ in args.arm + args.checkout]
    if len(set(names)) < len(names) or not all(name.strip() for name in names):
        raise SystemExit("--arm, --checkout: each arm needs a name of its own, not empty")
    arms = {name: parse_env(env) for name, env in args.arm} or {"as is": {}}
    arms |= {name: {} for name, _ in args.checkout}
    with tempfile.TemporaryDirectory(prefix="dnas-bench-checkout-") as scratch:
        cwd = {
            name: importing(Path(folder), Path(scratch) / str(i))
            for i, (name, folder) in enumerate(args.checkout)
        }
        timed_s = {arm: timed_seconds(cwd.get(arm)) for arm in arms}
        runs, seconds = run_series(args.name, args.extra, args.runs, arms, cwd)
    results = {}
    for arm, env in arms.items():
        if len(arms) > 1:
            print(f"--- {arm}: {env}")
        results[arm] = {"env": env, "seconds_per_run": seconds[arm], **summarize(runs[arm])}
        results[arm]["timed_s"] = timed_s[arm]  # its dnas.profile.TIMED_S
        if arm in cwd:
            folder = Path(dict(args.checkout)[arm]).resolve()
            results[arm] |= {"checkout": str(folder), "commit": commit_of(folder)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "name": args.name,
        "runs": args.runs,
        "extra": args.extra,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if len(arms) == 1:  # the layout of the results before arms
        result |= results.popitem()[1]
    else:
        result["arms"] = results
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


def summarize(runs: list[dict]) -> dict:
    """How far apart the runs' figures are, per variant and timing, printed and returned."""
    rows = []
    for v, what in itertools.product(range(len(runs[0]["speed"])), ("forward", "train_step")):
        variant = "memory-efficient" if runs[0]["speed"][v]["memory_efficient"] else "standard"
        spreads = [r["speed"][v][f"{what}_spread"] for r in runs]
        row = {
            "variant": variant,
            "timing": what,
            "reported_ms": [r["speed"][v][f"{what}_ms"] for r in runs],
            "repeats": [s["repeats"] for s in spreads],
        }
        row |= {stat: [s[stat] for s in spreads] for stat in STATISTICS}
        row["apart"] = {k: apart(row[k]) for k in ("reported_ms", *STATISTICS)}
        # Does a run's figure follow the machine's speed in that run (the reference's median)?
        ref = [r["reference_ms"] for r in runs]
        row["correlation_with_reference"] = statistics.correlation(row["reported_ms"], ref)
        row["apart_per_reference"] = apart([x / y for x, y in zip(row["reported_ms"], ref)])
        # Every run of three consecutive ones, as the test asks.
        row["worst_three_in_a_row"] = max(
            apart(row["reported_ms"][i : i + 3]) for i in range(len(runs) - 2)
        )
        rows.append(row)
        figures = "  ".join(
            f"{k.removesuffix('_ms')} {100 * x:.1f}%" for k, x in row["apart"].items()
        )
        print(f"{variant:17s} {what:10s} apart over {len(runs)} runs: {figures}")
        print(
            f"{'':28s} reported ms: {', '.join(f'{x:.1f}' for x in row['reported_ms'])};"
            f" worst 3 in a row {100 * row['worst_three_in_a_row']:.1f}%; with the reference:"
            f" correlation {row['correlation_with_reference']:.2f}, apart per reference"
            f" {100 * row['apart_per_reference']:.1f}%"
        )
    return {
        "statistic": runs[0]["statistic"],
        "cpu_busy_elsewhere": [r["cpu_busy_elsewhere"] for r in runs],
        "machine_drift": [r["machine_drift"] for r in runs],
        "reference_ms": [r["reference_ms"] for r in runs],
        "rows": rows,
    }


if __name__ == "__main__":
    main()

"""Zero-cost proxies against trained accuracy: do they rank architectures better than parameter
count alone?

    python benchmarks/bench_proxies.py [--runs benchmarks/results/fidelity.json]

Reads the architectures the fidelity study trained (``bench_fidelity.py``: Fashion-MNIST, the
search's recipe, validation accuracy after its top rung) and scores each one at initialisation
with every proxy of ``dnas.proxies`` (seed 0, one batch of 64 training images drawn with seed 0
from the same training split). Prints every architecture's row, then Kendall's tau and
Spearman's rho between each score and the accuracy, beside the same figures for parameter count
and FLOPs, and the median seconds per proxy. Writes it all to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rank import kendall_tau, spearman_rho  # noqa: E402

from dnas.config import DATA_SEED  # noqa: E402
from dnas.data import load_data  # noqa: E402
from dnas.datasets import DATASETS  # noqa: E402
from dnas.names import parse_name  # noqa: E402
from dnas.proxies import Proxy, proxy_batch, score  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="benchmarks/results/fidelity.json")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/proxies.json")
    args = p.parse_args()
    runs = json.loads(Path(args.runs).read_text())
    train_args = runs["args"]
    data = load_data("fashion-mnist", None, "cpu", train_args["val_size"],
                     train_args["train_subset"], DATA_SEED)  # fmt: skip
    x, y = proxy_batch(data, args.batch, seed=0)
    info = DATASETS["fashion-mnist"]
    rows, seconds = [], {q.value: [] for q in Proxy}
    for r in runs["rows"]:
        spec = parse_name(r["name"], info.num_classes, info.channels)
        row = {"name": r["name"], "params": r["params"], "flops": r["flops"],
               "val_acc": r["val_acc"][-1]}  # fmt: skip
        for q in Proxy:
            t0 = time.perf_counter()
            row[q.value] = score(q, spec, x, y, seed=0)
            seconds[q.value].append(time.perf_counter() - t0)
        rows.append(row)
        print(f"{r['name']:28s} {r['params']:>9,} {row['val_acc']:.4f} "
              + " ".join(f"{q.value} {row[q.value]:.4g}" for q in Proxy), flush=True)  # fmt: skip
    acc = [r["val_acc"] for r in rows]
    table = {}
    for key in ["params", "flops", *(q.value for q in Proxy)]:
        v = [r[key] for r in rows]
        table[key] = {"kendall_tau": kendall_tau(v, acc), "spearman_rho": spearman_rho(v, acc)}
    print(f"\n{len(rows)} architectures; accuracy after {train_args['epochs']} epochs on"
          f" {train_args['train_subset']} Fashion-MNIST images")  # fmt: skip
    print(f"{'score':10s} {'tau':>7s} {'rho':>7s}  median s")
    for key, t in table.items():
        s = f"{statistics.median(seconds[key]):.2f}" if key in seconds else "-"
        print(f"{key:10s} {t['kendall_tau']:+7.3f} {t['spearman_rho']:+7.3f}  {s}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    result = {"args": vars(args), "training": train_args, "rows": rows, "correlation": table,
              "median_seconds": medians}  # fmt: skip
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

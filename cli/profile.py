"""`dnas profile NAME`: exact costs, fvcore beside the closed form, measured speed and memory."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from dnas.datasets import DatasetName
from dnas.device import Device

from .common import err, out, print_json, user_errors


def profile(
    name: Annotated[
        str,
        typer.Argument(
            help="A canonical name: densenet-bc-100, densenet121, wrn-28-10, wrn-40-2-b313, ..."
        ),
    ],
    dataset: Annotated[
        DatasetName, typer.Option(help="Sets classes, channels and input size.")
    ] = DatasetName.cifar10,  # type: ignore[attr-defined]
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Batch for speed and memory \\[default: 64 (the paper's) on cuda, 16 on cpu].",
        ),
    ] = None,
    device: Annotated[
        Device,
        typer.Option(help="Where to measure speed and memory; auto: cuda if a GPU is visible."),
    ] = Device.auto,
    memory_efficient: Annotated[
        bool,
        typer.Option(
            help="DenseNets: also measure the memory-efficient (checkpointed) variant beside"
            " the standard one."
        ),
    ] = True,
    repeats: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Timed runs per measurement (at most 200), after warm-up; the fastest is reported"
            " \\[default: at least 5 turns and 24 seconds' worth, on until every median is"
            " pinned within 2%].",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Profile a named model: parameters, FLOPs (fvcore and closed form), stages, speed, memory."""
    with user_errors():
        from dnas.datasets import dataset_info
        from dnas.names import parse_name

        info = dataset_info(dataset.value)
        spec = parse_name(name, info.num_classes, info.channels)
        from dnas.device import resolve_device

        dev = resolve_device(device.value)
        from dnas.profile import profile as run_profile

        with err.status(f"profiling {spec.name} on {dev}...") as status:
            result = run_profile(
                spec,
                info,
                batch_size,
                dev,
                memory_efficient,
                repeats,
                on_step=lambda s: status.update(f"{spec.name}: {s}"),
            )
        if as_json:
            print_json(result.to_dict())
        else:
            _show(result)


def _show(r) -> None:  # noqa: ANN001 - a ProfileResult
    same = "equal" if r.flops_fvcore == r.flops_closed_form else "DIFFERENT"
    out.print(
        f"[bold]{r.name}[/bold] on {r.dataset} (input {'x'.join(map(str, r.input_shape))}),"
        f" device {r.device} ({r.device_name})"
    )
    out.print(f"parameters      {r.params:>16,}   closed form {r.params_closed_form:,}")
    out.print(
        f"FLOPs (fvcore)  {r.flops_fvcore:>16,}   closed form {r.flops_closed_form:,} ({same});"
        " 1 multiply-add = 1 flop, batch 1"
    )
    out.print(
        f"MACs conv+linear{r.macs_conv_linear:>16,}   the papers'/torchvision's 'FLOPs';"
        f" x2 = {2 * r.macs_conv_linear:,} flops as torch.utils.flop_counter counts"
    )
    if r.uncounted_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in r.uncounted_ops.items())
        out.print(
            f"not counted by fvcore: {ops}"
            " (pooling and adds: the paper-style count ignores them too)"
        )
    stages = Table(
        "stage",
        "params",
        "FLOPs (closed form)",
        "FLOPs (fvcore)",
        "output (C, H, W)",
        title="per stage",
    )
    for s in r.stages:
        stages.add_row(
            s["name"],
            f"{s['params']:,}",
            f"{s['flops']:,}",
            f"{s['flops_fvcore']:,}",
            str(tuple(s["out_shape"])),
        )
    out.print(stages)
    speed = Table(
        "variant",
        "forward ms",
        "forward img/s",
        "train step ms",
        "train img/s",
        "peak train memory",
        "predicted (error)",
        title=f"measured, batch {r.batch_size}, after warm-up: the fastest (median, slowest) of"
        f" {_runs(r.speed, 'forward_spread')} forward and {_runs(r.speed, 'train_step_spread')}"
        " training-step runs",
    )
    for s in r.speed:
        speed.add_row(
            "memory-efficient" if s.memory_efficient else "standard",
            _ms(s.forward_ms, s.forward_spread),
            f"{s.forward_images_per_s:.1f}",
            _ms(s.train_step_ms, s.train_step_spread),
            f"{s.train_images_per_s:.1f}",
            f"{s.peak_train_memory_bytes / 2**20:.1f} MiB",
            f"{s.predicted_train_memory_bytes / 2**20:.1f} MiB ({100 * s.memory_error:+.1f}%)",
        )
    out.print(speed)
    if not all(s.forward_spread.steady and s.train_step_spread.steady for s in r.speed):
        out.print(
            "[yellow]the runs scattered too widely to pin their median within 2% (a busy"
            " machine?): compare the timings with care, or rerun[/yellow]"
        )
    if r.shared:
        out.print(
            f"[yellow]other processes kept {r.cpu_busy_elsewhere:.1f} CPU cores busy while this"
            " was measured: the timings are of a shared machine (several times slower than idle"
            " on a small one); rerun when it is idle[/yellow]"
        )
    if r.machine_drift is not None:
        moved = (
            f"this machine's own speed moved {100 * r.machine_drift:.1f}% while timing (a fixed"
            f" matrix product timed in every turn, {r.reference_ms:.3f} ms, its first, middle and"
            " last third)"
        )
        if r.unsteady:
            moved = (
                f"[yellow]{moved}: the timings carry about that much uncertainty; compare only"
                " figures measured together, as the variants are[/yellow]"
            )
        out.print(moved)
    out.print(f"time statistic: {r.statistic}")
    out.print(
        f"memory: {r.speed[0].memory_method}; predicted from the spec alone (dnas.memory:"
        " fp32, SGD with Nesterov momentum, the first step)"
    )
    if len(r.speed) == 2:
        a, b = r.speed
        saved = 1 - b.peak_train_memory_bytes / a.peak_train_memory_bytes
        slower = b.train_step_ms / a.train_step_ms - 1
        out.print(
            f"memory-efficient: {100 * saved:.0f}% less memory, {100 * slower:+.0f}% step time"
        )
    if r.paper:
        p = r.paper
        errors = ", ".join(f"{k} {v}%" for k, v in p["errors"].items()) or "-"
        printed = p["params_printed"] or "not printed"
        exact = ""
        if p["params_exact"]:
            equal = ", ours equal" if p["params_exact"] == r.params else ""
            exact = f"; exact {p['params_exact']:,} ({p['params_exact_source']}{equal})"
        out.print(
            f"published ({p['source']}): params {printed}, error {errors}{exact}", highlight=False
        )


def _ms(fastest: float, spread) -> str:  # noqa: ANN001 - a dnas.profile.Spread
    return f"{fastest:.1f} ({spread.median_ms:.1f}, {spread.max_ms:.1f})"


def _runs(speed: list, field: str) -> int:
    return getattr(speed[0], field).repeats


def register(app: typer.Typer) -> None:
    app.command()(profile)

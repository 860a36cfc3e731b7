"""`dnas profile`: exact costs, fvcore's count beside the closed form, and measured speed and memory.

Every figure is either computed exactly (parameters, closed-form FLOPs) or measured on the device
in this process (fvcore's count, latency, throughput, peak memory); the report says which.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from dnas.cost import Stage, stages
from dnas.datasets import DatasetInfo
from dnas.flops import fvcore_count
from dnas.models import build
from dnas.spec import DenseNetSpec, Spec
from dnas.zoo import PAPER_MODELS, PaperModel


@dataclass
class Speed:
    memory_efficient: bool
    forward_ms: float  # median eval forward of one batch
    forward_images_per_s: float
    train_step_ms: float  # median forward + backward + SGD step of one batch
    train_images_per_s: float
    peak_train_memory_bytes: int
    memory_method: str


@dataclass
class ProfileResult:
    name: str
    dataset: str
    input_shape: tuple[int, int, int]
    batch_size: int
    device: str
    device_name: str
    params: int  # counted on the built model
    params_closed_form: int
    flops_fvcore: int  # fvcore FlopCountAnalysis, batch 1, eval: 1 multiply-add = 1 flop
    flops_closed_form: int
    macs_conv_linear: int  # the papers'/torchvision's convention: conv + linear multiply-adds
    uncounted_ops: dict[str, int]  # ops fvcore met but did not count
    stages: list[dict]
    speed: list[Speed]
    paper: dict | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


UNCOUNTED_NOTE = {
    "aten::avg_pool2d": "transition average pooling (the paper-style count ignores it too)",
    "aten::max_pool2d": "stem max-pooling (ignored by the paper-style count too)",
    "aten::add": "residual additions (ignored by the paper-style count too)",
}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines, which bypass Python's sys.stderr."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes held by the CPU allocator while ``fn`` runs, above what was held before.

    Measured from the allocation and free events that torch.profiler records (profile_memory).
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return peak


def measure_speed(
    spec: Spec,
    dataset: DatasetInfo,
    batch_size: int,
    device: torch.device,
    memory_efficient: bool,
    repeats: int = 3,
) -> Speed:
    """Median forward latency and training-step time, and the peak memory of a training step."""
    torch.manual_seed(0)
    model = build(spec, memory_efficient=memory_efficient).to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    x = torch.randn(batch_size, *dataset.input_size, device=device)
    y = torch.randint(0, spec.num_classes, (batch_size,), device=device)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    # The first step is the warm-up; it is also the one whose memory is measured (it allocates the
    # optimizer state, so its peak is the largest).
    state_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        _sync(device)
        peak, method = (
            torch.cuda.max_memory_allocated(device),
            "CUDA caching allocator peak (max_memory_allocated)",
        )
    else:
        peak = state_bytes + cpu_peak_bytes(train_step)
        method = (
            "CPU allocator peak during a training step (torch.profiler memory events) + weights"
        )
    step = _median_time(train_step, repeats, device)

    model.eval()
    with torch.no_grad():
        model(x)
        fwd = _median_time(lambda: model(x), repeats, device)
    return Speed(
        memory_efficient,
        fwd * 1e3,
        batch_size / fwd,
        step * 1e3,
        batch_size / step,
        int(peak),
        method,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def profile(
    spec: Spec,
    dataset: DatasetInfo,
    batch_size: int,
    device: str = "cpu",
    memory_efficient: bool = True,
    repeats: int = 3,
    on_step: Callable[[str], None] = lambda _: None,
) -> ProfileResult:
    """Profile one architecture on one dataset's input size.

    Args:
        memory_efficient: for DenseNets, also measure the checkpointed variant beside the standard.
        on_step: called with a short description before each measurement (for progress display).
    """
    dev = torch.device(device)
    size = (dataset.height, dataset.width)
    closed: list[Stage] = stages(spec, size)
    on_step("fvcore count")
    model = build(spec)
    fv = fvcore_count(model, dataset.input_size)
    params = sum(p.numel() for p in model.parameters())
    stage_rows = [
        {
            "name": s.name,
            "params": s.params,
            "flops": s.flops,
            "flops_fvcore": fv.by_module.get(s.name, 0),
            "macs": s.macs,
            "out_shape": list(s.out_shape),
        }
        for s in closed
    ]
    variants = [False] + ([True] if memory_efficient and isinstance(spec, DenseNetSpec) else [])
    speed = []
    for me in variants:
        on_step("speed and memory" + (" (memory-efficient)" if me else ""))
        speed.append(measure_speed(spec, dataset, batch_size, dev, me, repeats))
    paper = PAPER_MODELS.get(spec.name)
    return ProfileResult(
        name=spec.name,
        dataset=dataset.name,
        input_shape=dataset.input_size,
        batch_size=batch_size,
        device=device,
        device_name=_device_name(dev),
        params=params,
        params_closed_form=sum(s.params for s in closed),
        flops_fvcore=fv.total,
        flops_closed_form=sum(s.flops for s in closed),
        macs_conv_linear=sum(s.macs for s in closed),
        uncounted_ops=fv.uncounted,
        stages=stage_rows,
        speed=speed,
        paper=_paper_row(spec.name, paper) if paper else None,
        versions={"torch": torch.__version__, "python": platform.python_version()},
    )


def _paper_row(name: str, p: PaperModel) -> dict:
    errors = dict(p.errors)
    if p.source.startswith("torchvision"):
        # torchvision publishes its ImageNet weights' accuracy beside them.
        import torchvision

        meta = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta
        metrics = meta["_metrics"]["ImageNet-1K"]
        errors = {
            "ImageNet top-1": round(100 - metrics["acc@1"], 3),
            "ImageNet top-5": round(100 - metrics["acc@5"], 3),
        }
    return {
        "source": p.source,
        "params": p.params_exact,
        "params_rounded": p.params_rounded,
        "errors": errors,
    }

"""`dnas profile`: exact costs, fvcore's count beside the closed form, measured speed and memory.

Every figure is either computed exactly (parameters, closed-form FLOPs) or measured on the device
in this process (fvcore's count, latency, throughput, peak memory); the report says which.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from dnas.budget import require_fits
from dnas.cost import Stage, stages
from dnas.datasets import DatasetInfo
from dnas.device import available_memory, device_name, keep_freed_memory, resolve_device
from dnas.errors import DnasError
from dnas.flops import fvcore_count
from dnas.memory import training_memory
from dnas.models import build
from dnas.spec import DenseNetSpec, Spec
from dnas.zoo import PAPER_MODELS, PaperModel

# Timed runs per measurement, after an untimed run of each: the training steps and forward passes
# of every variant take turns, at least TIMED_S seconds of them all together and MIN_REPEATS turns,
# then on until the median of every measurement is pinned to PRECISION (``Spread.steady``) on an
# otherwise idle machine, or PATIENCE times TIMED_S have passed (MAX_REPEATS at most). Taking
# turns spreads each measurement's runs over the whole time, so that its fastest run is not
# taken from a few seconds that the machine happened to spend slow (below). On this project's
# 2-core AMD EPYC, idle, `dnas profile densenet-bc-100` takes 31-53 s, 19-34 turns.
TIMED_S = 24.0
MIN_REPEATS, MAX_REPEATS = 5, 200
PATIENCE = 4
# The headline time of a measurement is the fastest of its timed runs, as timeit advises: other
# work only ever adds time to a run. Which statistic lets separate invocations agree best was
# measured, not assumed: benchmarks/bench_profile_stability.py records the fastest, lower quartile
# and median of every fresh `dnas profile densenet-bc-100` run, so each series compares them on
# the same runs. The figure is the worst three invocations in a row of the four timings.
# - On this project's later 2-core AMD EPYC (AVX-512), whose speed moves by itself (``Reference``
#   below), the fastest agreed better than the median in all eight series with the training steps
#   and forward passes timed one after the other (12 s, then 4 s): 8.4 vs 11.7%, 9.3 vs 17.2%,
#   12.1 vs 15.6% (twice the timed seconds), 15.0 vs 21.9%, 31.5 vs 37.0%, 8.9 vs 14.7%, 13.5 vs
#   18.2%, 10.4 vs 11.5% (results/profile_stability_avx512*.json, _min_avx512*.json,
#   profile_arms_*.json, profile_threads_*.json), within 10% in three of them. One thread or
#   PyTorch's huge pages steadied neither.
# - All in turns over TIMED_S: 8.2 vs 9.0% and 8.9 vs 13.5% over 15 fresh runs
#   (results/profile_stability_turns_avx512*.json), and 7.8 vs 8.0% against 7.5 vs 11.8% for the
#   one-after-the-other timing in the same series, 12 runs each in ABBA order
#   (results/profile_turns_vs_phases_avx512.json): within 10% on every run of three, on a day
#   when the timing it replaced agreed as well.
# - On the AVX2 machine of earlier sessions the median agreed better (9.6 vs 22.4%, 8.0 vs 11.7%,
#   20.2 vs 30.4% with 7-40 timed runs: results/profile_stability.json, _3runs, _fastest), when
#   the fastest run was whichever met the host's quietest moment. The median and the slowest
#   are printed beside the fastest, so either reading is at hand on any machine.
# Over 5-second windows of one idle process the median forward pass ranged over 36.7%, and a
# fixed matrix product with it (correlation 0.90, results/machine_drift_avx512.json); the forward
# pass slid from 126 to 113 ms over 9 minutes of runs and jumped back to 131
# (results/profile_stability_avx512_long.json).
STATISTIC = "min: the fastest of the timed runs (the median and the slowest printed beside it)"
PRECISION = 0.02  # runs go on until the median's standard error is within this share of it
# A fixed matrix product on the same device and threads, timed in every turn beside the measured
# runs (``Reference``), shows whether the machine itself changed speed meanwhile, which no repeat
# scheme can average away. A virtual machine's host may move its CPUs or lend their cores to
# others without any of it showing inside: on this project's 2-core AMD EPYC, in one process with
# nothing else running, a 256x256 product's time moved 32% over 80 s in 2-second windows, and
# densenet-bc-100's training step moved 33% with it (correlation 0.82), while alone on one core
# the product stayed within 3.4%. ``machine_drift`` is how far the medians of the first, middle
# and last third of the reference's runs lie apart. The report prints it; from DRIFT_WARN, the
# agreement that separate runs of `dnas profile` aim for, it warns that the timings carry about
# that much of the machine's own unsteadiness.
DRIFT_WARN = 0.10
# CPU cores other processes may keep busy, on average, before the machine counts as busy while
# the speed is measured (timing then goes on, and the report says so): on this 2-core machine one
# other PyTorch process made training steps 4-20x slower, and bursts of a tenth of a core 25%.
BUSY_ELSEWHERE = 0.1


@dataclass(frozen=True)
class Spread:
    """How the timed runs of one measurement scattered, in milliseconds."""

    min_ms: float  # the headline figure (``STATISTIC``)
    q1_ms: float  # lower quartile
    median_ms: float
    q3_ms: float  # upper quartile
    max_ms: float
    repeats: int  # timed runs

    @classmethod
    def of(cls, seconds: list[float]) -> Spread:
        ms = sorted(1e3 * s for s in seconds)
        q1, q2, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else ms * 3
        return cls(ms[0], q1, q2, q3, ms[-1], len(ms))

    @property
    def median_error(self) -> float:
        """The median's standard error as a share of it, estimated from the quartiles:
        sqrt(pi / 2) * sigma / sqrt(n), with sigma = IQR / 1.349 as for a normal spread."""
        return 0.929 * (self.q3_ms - self.q1_ms) / self.repeats**0.5 / self.median_ms

    @property
    def steady(self) -> bool:
        """Whether the median is pinned: its standard error is within ``PRECISION`` of it."""
        return self.median_error <= PRECISION


@dataclass
class Speed:
    memory_efficient: bool
    forward_ms: float  # fastest eval forward of one batch (STATISTIC)
    forward_images_per_s: float
    train_step_ms: float  # fastest forward + backward + SGD step of one batch (STATISTIC)
    train_images_per_s: float
    peak_train_memory_bytes: int
    memory_method: str
    forward_spread: Spread
    train_step_spread: Spread
    predicted_train_memory_bytes: int  # dnas.memory, from the spec alone

    @property
    def memory_error(self) -> float:
        """The prediction's error relative to the measured peak (0.01 = 1% over)."""
        return self.predicted_train_memory_bytes / self.peak_train_memory_bytes - 1


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
    statistic: str = STATISTIC  # which of their timed runs the speed's figures are
    cpu_busy_elsewhere: float | None = None  # cores other processes used meanwhile (mean)
    machine_drift: float | None = None  # how far the machine's own speed moved (``Reference``)
    reference_ms: float | None = None  # the ``Reference``'s median run: the machine's speed
    paper: dict | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, s in zip(d["speed"], self.speed):
            row["predicted_memory_error"] = s.memory_error
        return d

    @property
    def shared(self) -> bool:
        """Whether other processes used the CPU enough, while the speed was measured, to slow
        it (``BUSY_ELSEWHERE``)."""
        return (self.cpu_busy_elsewhere or 0.0) >= BUSY_ELSEWHERE

    @property
    def unsteady(self) -> bool:
        """Whether the machine's own speed moved by ``DRIFT_WARN`` or more while timing."""
        return (self.machine_drift or 0.0) >= DRIFT_WARN


class Reference:
    """A fixed piece of work timed in every turn: products of two constant square matrices on
    the device (256 x 256 on a CPU, about a millisecond in all on this project's 2 cores; 2048 x
    2048 on a GPU), with the threads that the measured runs use."""

    def __init__(self, device: torch.device, products: int = 4) -> None:
        n = 256 if device.type == "cpu" else 2048
        g = torch.Generator().manual_seed(0)
        self.a, self.b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
        self.out = torch.empty(n, n, device=device)
        self.products = products

    def __call__(self) -> None:
        for _ in range(self.products):
            torch.mm(self.a, self.b, out=self.out)


def machine_drift(seconds: list[float], parts: int = 3) -> float | None:
    """How far the machine's speed moved over a run of reference timings, in order: the largest
    median of ``parts`` consecutive equal shares of them over the smallest, less 1. None with
    fewer than three timings a share."""
    size = len(seconds) // parts
    if size < 3:
        return None
    medians = [statistics.median(seconds[i * size : (i + 1) * size]) for i in range(parts)]
    return max(medians) / min(medians) - 1


class BusyElsewhere:
    """CPU cores the machine's other processes kept busy, on average, while the block ran:
    ``cores``, from the busy time of all CPUs (Linux's /proc/stat) less this process's own; None
    where /proc/stat cannot be read."""

    cores: float | None = None

    def __enter__(self) -> BusyElsewhere:
        self._start = _cpu_seconds_elsewhere(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cores = self.so_far()

    def so_far(self) -> float | None:
        """The cores busy elsewhere since the block began."""
        (start, t0), end = self._start, _cpu_seconds_elsewhere()
        if end is None or start is None:
            return None
        return max(0.0, (end - start) / max(time.perf_counter() - t0, 1e-9))


def _cpu_seconds_elsewhere() -> float | None:
    try:
        with open("/proc/stat") as f:
            ticks = [int(n) for n in f.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    except (OSError, ValueError):
        return None
    own = os.times()
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy - own.user - own.system


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


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def time_runs(
    fns: list[Callable[[], object]],
    device: torch.device,
    repeats: int | None = None,
    timed_s: float = 4.0,
    reference: Callable[[], object] | None = None,
    before: list[Callable[[], object]] | None = None,
) -> list[list[float]]:
    """Seconds of each timed run of each function, and last those of ``reference``.

    Each function runs once untimed first, outside the timed region (kernel selection,
    allocator caches, the first touch of its buffers). Then they take turns, in alternating
    order, so that a busier moment on the machine slows them alike: ``repeats`` turns, or with
    None for at least ``timed_s`` seconds and ``MIN_REPEATS`` turns, and on until every
    function's runs are ``Spread.steady`` with no other process busy (``BUSY_ELSEWHERE``), or
    ``PATIENCE * timed_s`` seconds have passed (at most ``MAX_REPEATS``). ``before[i]``, if
    given, runs untimed before every run of ``fns[i]`` (a model's train or eval mode). Garbage
    collection is off while timing, as in ``timeit``. A ``reference`` (see ``Reference``) takes
    every turn too, last, but not part in deciding when to stop.
    """
    if before is not None and len(before) != len(fns):
        raise ValueError(f"time_runs: {len(before)} functions before {len(fns)} to time")
    times: list[list[float]] = [[] for _ in fns] + ([[]] if reference is not None else [])
    timed = times[: len(fns)]  # the same lists, less the reference's
    turns = list(zip(fns, before or [_nothing] * len(fns), timed))
    for fn, setup, _ in turns:
        setup()
        _seconds(fn, device)
    if reference is not None:
        _seconds(reference, device)
    t0 = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with BusyElsewhere() as busy:
            while True:
                for fn, setup, t in turns if len(times[0]) % 2 == 0 else reversed(turns):
                    setup()
                    t.append(_seconds(fn, device))
                if reference is not None:
                    times[-1].append(_seconds(reference, device))
                n, spent = len(times[0]), time.perf_counter() - t0
                if repeats is not None and n >= repeats:
                    break
                if repeats is None and (n >= MAX_REPEATS or _enough(timed, spent, timed_s, busy)):
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def _nothing() -> None:
    pass


def _enough(times: list[list[float]], spent: float, timed_s: float, busy: BusyElsewhere) -> bool:
    """Whether automatic repeats may stop: after ``timed_s``, once every median is pinned on an
    otherwise idle machine, or else after ``PATIENCE * timed_s`` (steady runs on a busy machine
    may all be slowed alike)."""
    if len(times[0]) < MIN_REPEATS or spent < timed_s:
        return False
    idle = (busy.so_far() or 0.0) < BUSY_ELSEWHERE
    return spent >= PATIENCE * timed_s or (idle and all(Spread.of(t).steady for t in times))


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


class Workload:
    """One variant's network, optimizer and random batch: a training step and a forward pass."""

    def __init__(
        self,
        spec: Spec,
        dataset: DatasetInfo,
        batch_size: int,
        device: torch.device,
        memory_efficient: bool,
    ) -> None:
        torch.manual_seed(0)
        self.device = device
        # What other networks hold on the GPU, which this one's CUDA peak must not count.
        self.held = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        self.model = build(spec, memory_efficient=memory_efficient).to(device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4
        )
        self.x = torch.randn(batch_size, *dataset.input_size, device=device)
        self.y = torch.randint(0, spec.num_classes, (batch_size,), device=device)

    def train_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    @torch.no_grad()
    def forward(self) -> None:
        self.model(self.x)

    def peak_train_memory(self) -> tuple[int, str]:
        """Peak memory of the first training step (it allocates the optimizer state, so its peak
        is the largest), and how it was measured. Call it before any other step."""
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.train_step()
            _sync(self.device)
            method = "CUDA caching allocator peak (max_memory_allocated)"
            return torch.cuda.max_memory_allocated(self.device) - self.held, method
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        method = (
            "CPU allocator peak during a training step (torch.profiler memory events) + weights"
        )
        return weights + cpu_peak_bytes(self.train_step), method


def measure_speed(
    spec: Spec,
    dataset: DatasetInfo,
    batch_size: int,
    device: torch.device,
    variants: list[bool],
    repeats: int | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> tuple[list[Speed], list[float]]:
    """Peak training memory, then training-step and forward times, of each variant
    (``memory_efficient`` False/True): each after an untimed run, all timed in the same turns
    (see ``time_runs``), the fastest run as the headline (``STATISTIC``) with the others'
    spread. A ``Reference`` takes every turn too; its seconds come with the speeds, in order."""
    loads, memory = [], []
    for me in variants:
        on_step("peak memory" + (" (memory-efficient)" if me else ""))
        loads.append(Workload(spec, dataset, batch_size, device, me))
        memory.append(loads[-1].peak_train_memory())  # also makes the optimizer's state
    on_step("timing training steps and forward passes in turns")
    fns: list[Callable[[], object]] = []
    modes: list[Callable[[], object]] = []
    for w in loads:
        fns += [w.train_step, w.forward]
        modes += [w.model.train, w.model.eval]
    *times, reference_s = time_runs(fns, device, repeats, TIMED_S, Reference(device), modes)
    speed = []
    for i, me in enumerate(variants):
        step, fwd = Spread.of(times[2 * i]), Spread.of(times[2 * i + 1])
        speed.append(
            Speed(
                me,
                fwd.min_ms,
                batch_size / fwd.min_ms * 1e3,
                step.min_ms,
                batch_size / step.min_ms * 1e3,
                int(memory[i][0]),
                memory[i][1],
                fwd,
                step,
                training_memory(spec, batch_size, dataset.input_size[1:], me, device.type).peak,
            )
        )
    return speed, reference_s


def default_batch_size(device: str) -> int:
    """The paper's 64 on a GPU; 16 on a CPU, where a step of a paper model takes seconds."""
    return 64 if torch.device(device).type == "cuda" else 16


def profile(
    spec: Spec,
    dataset: DatasetInfo,
    batch_size: int | None = None,
    device: str = "cpu",
    memory_efficient: bool = True,
    repeats: int | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> ProfileResult:
    """Profile one architecture on one dataset's input size.

    Args:
        batch_size: for speed and memory; None: ``default_batch_size(device)``.
        device: "cpu", "cuda" or "auto" (see ``dnas.device.resolve_device``).
        memory_efficient: for DenseNets, also measure the checkpointed variant beside the standard.
        repeats: timed runs per measurement; None: as many as fit in ``TIMED_S``, or more on a
            busy machine (see ``time_runs``).
        on_step: called with a short description before each measurement (for progress display).
    """
    if repeats is not None and not 1 <= repeats <= MAX_REPEATS:
        raise DnasError(f"--repeats {repeats}: give 1 to {MAX_REPEATS} timed runs")
    device = resolve_device(device)
    if device == "cpu":
        keep_freed_memory()  # as training does: the timings are of the same allocator
    batch_size = batch_size or default_batch_size(device)
    size = (dataset.height, dataset.width)
    require_fits(spec, available_memory(device), device, batch_size, size)
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
    dev = torch.device(device)
    with BusyElsewhere() as busy:
        speed, ref_s = measure_speed(spec, dataset, batch_size, dev, variants, repeats, on_step)
    paper = PAPER_MODELS.get(spec.name)
    return ProfileResult(
        name=spec.name,
        dataset=dataset.name,
        input_shape=dataset.input_size,
        batch_size=batch_size,
        device=device,
        device_name=device_name(device),
        params=params,
        params_closed_form=sum(s.params for s in closed),
        flops_fvcore=fv.total,
        flops_closed_form=sum(s.flops for s in closed),
        macs_conv_linear=sum(s.macs for s in closed),
        uncounted_ops=fv.uncounted,
        stages=stage_rows,
        speed=speed,
        cpu_busy_elsewhere=busy.cores,
        machine_drift=machine_drift(ref_s),
        reference_ms=1e3 * statistics.median(ref_s),
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
        "source": p.source,  # where the errors and the printed parameter count come from
        "params_printed": p.params_rounded,  # as the source prints it ("" if it prints none)
        "params_exact": p.params_exact,
        "params_exact_source": p.params_exact_source if p.params_exact else None,
        "errors": errors,
    }

"""Which device a command runs on, and the name a run records for it.

torch is imported inside the functions: the command line imports this module to check ``--device``
and must stay fast to start.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import os
import platform
from collections.abc import Iterator

from dnas.errors import DnasError


class Device(str, enum.Enum):
    auto = "auto"  # CUDA when a GPU is visible, else the CPU
    cpu = "cpu"
    cuda = "cuda"


DEVICES = tuple(d.value for d in Device)


def resolve_device(requested: str = "auto") -> str:
    """``"cpu"`` or ``"cuda"``: ``"auto"`` picks CUDA when a GPU is visible.

    Raises:
        DnasError: ``"cuda"`` with no GPU visible, or a device that is none of ``DEVICES``.
    """
    if requested == "cpu":
        return "cpu"
    if requested not in DEVICES:
        raise DnasError(f"unknown device {requested!r}; choose auto, cpu or cuda")
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DnasError(
            "--device cuda: no CUDA GPU is visible on this machine; use --device cpu or auto"
        )
    return "cpu"


def device_name(device: str) -> str:
    """The GPU's name on CUDA ("NVIDIA H100 80GB HBM3"); the processor and threads on CPU."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def bf16_by_default(device: str) -> bool:
    """Whether training autocasts to bf16 unless told: on a GPU that computes in bf16 natively
    (compute capability 8.0 on: A100, H100, RTX 30xx and later); not on older GPUs (V100, T4),
    which would only emulate it, nor on the CPU, where it measured 9-25x slower."""
    import torch

    dev = torch.device(device)
    return dev.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def available_memory(device: str) -> int | None:
    """Bytes a new network may still take on ``device``: the GPU's free memory on CUDA, the
    kernel's MemAvailable on the CPU (Linux); None where it cannot be known."""
    if device == "cuda":
        import torch

        try:
            return torch.cuda.mem_get_info()[0]
        except (RuntimeError, AssertionError):  # no driver, or torch built without CUDA
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit (HEAP_MAX / 2).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process keep the memory PyTorch frees on the CPU for its next allocation, rather
    than hand it back to the kernel and fault it in again, zeroed, at the next step: glibc's
    malloc serves blocks up to 32 MiB from its heap (not fresh mmaps) and trims the heap only
    above 2 GiB free. Every training step frees and reallocates the same activations, so the
    process's size stays at one step's peak either way. Measured on 2 CPU cores: forward
    passes of densenet-bc-100 at batch 16 for 15 s, 2.6-3.3M page faults → 0.11-0.12M, medians
    of 8 passes 158-206 → 124-152 ms; `dnas train` on Fashion-MNIST 1.01-1.16x the images/s
    (benchmarks/bench_malloc.py).
    Returns whether it applied: Linux with glibc, unless the user tuned malloc already
    (``MALLOC_*_`` or ``GLIBC_TUNABLES`` in the environment); once per process."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
            and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        )
    except (OSError, AttributeError):
        return False


def worker_gpu(index: int, count: int) -> str:
    """The GPU of local worker ``index`` when ``count`` GPUs are visible: one each, in turn, named
    as this process's ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs), so that a worker
    never sees a GPU its parent was not given."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")][:count] if visible else []
    return ids[index % len(ids)] if len(ids) == count else str(index % count)


@contextlib.contextmanager
def visible_gpu(gpu: str | None) -> Iterator[None]:
    """Within the block, ``CUDA_VISIBLE_DEVICES`` is ``gpu`` (None: as it was), for a worker
    process started there; the variable is as before after it."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved

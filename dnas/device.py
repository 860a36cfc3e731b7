"""Which device a command runs on, and the name a run records for it.

torch is imported inside the functions: the command line imports this module to check ``--device``
and must stay fast to start.
"""

from __future__ import annotations

import enum
import platform

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

from __future__ import annotations

import os

import pytest
import torch
from dnas_cli.main import app
from typer.testing import CliRunner

from dnas import device
from dnas.device import (
    available_memory,
    bf16_by_default,
    device_name,
    keep_freed_memory,
    resolve_device,
    visible_gpu,
    worker_gpu,
)
from dnas.errors import DnasError


@pytest.fixture(params=[True, False], ids=["cuda-visible", "no-cuda"])
def gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """A machine with or without a visible CUDA GPU, as torch sees it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    return request.param


def test_auto_picks_cuda_when_a_gpu_is_visible(gpu: bool) -> None:
    assert resolve_device() == resolve_device("auto") == ("cuda" if gpu else "cpu")


def test_cpu_is_always_cpu(gpu: bool) -> None:
    assert resolve_device("cpu") == "cpu"


def test_cuda_needs_a_gpu(gpu: bool) -> None:
    if gpu:
        assert resolve_device("cuda") == "cuda"
        return
    with pytest.raises(DnasError) as e:
        resolve_device("cuda")
    assert str(e.value) == (
        "--device cuda: no CUDA GPU is visible on this machine; use --device cpu or auto"
    )


@pytest.mark.parametrize("requested", ["gpu", "mps", "", "CUDA", "cuda:0"])
def test_other_devices_name_the_choices(gpu: bool, requested: str) -> None:
    with pytest.raises(DnasError, match="choose auto, cpu or cuda"):
        resolve_device(requested)


def test_device_name(gpu: bool) -> None:
    assert device_name("cuda") == "NVIDIA H100 80GB HBM3"
    assert device_name("cpu").endswith(f", {torch.get_num_threads()} threads")


@pytest.mark.parametrize("command", ["train", "profile"])
def test_commands_take_device_auto(command: str) -> None:
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "auto|cpu|cuda" in r.output and "[default: auto]" in r.output


def test_cli_without_a_gpu_refuses_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = CliRunner().invoke(app, ["profile", "wrn-10-1", "--device", "cuda"])
    assert r.exit_code == 2 and "use --device cpu or auto" in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.gpu
def test_a_real_gpu_is_chosen_and_named() -> None:
    assert resolve_device() == "cuda"
    assert device_name("cuda") == torch.cuda.get_device_name()


def test_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = available_memory("cpu")  # MemAvailable on Linux
    assert isinstance(cpu, int) and 0 < cpu <= os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (3 * 2**30, 80 * 2**30))
    assert available_memory("cuda") == 3 * 2**30  # free, not total

    def no_driver(*a: object) -> None:
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_driver)
    assert available_memory("cuda") is None
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no")))
    assert available_memory("cpu") is None  # not Linux: unknown, nothing is refused


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_freed_cpu_memory_is_kept_for_the_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's mallopt: blocks up to 32 MiB from the heap (M_MMAP_THRESHOLD = -3), trimmed only
    above 2 GiB free (M_TRIM_THRESHOLD = -1); never over a user's own malloc settings."""
    apply = keep_freed_memory.__wrapped__
    libc = _FakeLibc()
    monkeypatch.setattr(device.platform, "system", lambda: "Linux")
    monkeypatch.setattr(device.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(device.ctypes, "CDLL", lambda name: libc)
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(key)
    assert apply() is True
    assert libc.calls == [(-3, 32 * 2**20), (-1, 2**31 - 1)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert apply() is False and len(libc.calls) == 2
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setattr(device.platform, "libc_ver", lambda: ("", ""))  # musl, macOS
    assert apply() is False and len(libc.calls) == 2


def test_worker_gpu_takes_turns_among_the_visible_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [worker_gpu(i, 2) for i in range(3)] == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")  # a machine's GPUs 2 and 3 only
    assert [worker_gpu(i, 2) for i in range(3)] == ["2", "3", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-x,MIG-y,MIG-z")
    assert [worker_gpu(i, 3) for i in range(4)] == ["MIG-x", "MIG-y", "MIG-z", "MIG-x"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7,bad,5")  # CUDA stops at the first bad entry
    assert [worker_gpu(i, 2) for i in range(2)] == ["4", "7"]


def test_visible_gpu_is_scoped(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with visible_gpu("1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with visible_gpu(None):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with pytest.raises(RuntimeError), visible_gpu("1"):
        raise RuntimeError
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_bf16_is_the_default_only_where_the_gpu_computes_it_natively(monkeypatch):
    def supported(native: bool):  # emulation is always possible; natively only from Ampere
        return lambda including_emulation=True: including_emulation or native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported(native=True))  # an A100
    assert bf16_by_default("cuda") and bf16_by_default("cuda:1") and not bf16_by_default("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported(native=False))  # a T4
    assert not bf16_by_default("cuda")

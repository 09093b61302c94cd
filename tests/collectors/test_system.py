from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass
from subprocess import PIPE

import pytest

from rmswatch.collectors.system import SystemSampler, load_nvml, visible_device_indexes


class FakeNvml:
    """NVML cannot run here (no GPU, no driver): this stands in for `pynvml` with two devices.

    It implements only the calls SystemSampler makes, with the shapes nvidia-ml-py returns.
    """

    @dataclass
    class Utilization:
        gpu: int
        memory: int

    @dataclass
    class Memory:
        total: int
        used: int
        free: int

    def __init__(self, utils: list[int], used: list[int], fail: bool = False) -> None:
        self.utils, self.used, self.fail = utils, used, fail

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's own names
        return len(self.utils)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Utilization:  # noqa: N802
        if self.fail:
            raise RuntimeError("NVMLError_GpuIsLost")
        return self.Utilization(self.utils[handle], 0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Memory:  # noqa: N802
        return self.Memory(80 << 30, self.used[handle], 0)


def test_cpu_and_resident_memory_of_this_process_are_sampled() -> None:
    sample = SystemSampler(nvml=False, clock=lambda: 123.0).sample()
    assert sample is not None
    assert sample.time == 123.0
    assert sample.rss_bytes > 10 << 20  # a Python process with numpy loaded
    assert sample.cpu_percent >= 0.0


def test_without_a_gpu_the_gpu_fields_are_empty_and_count_zero() -> None:
    sample = SystemSampler(nvml=False).sample()
    assert sample is not None
    assert (sample.gpu_util_percent, sample.gpu_memory_bytes, sample.gpu_count) == (None, None, 0)


def test_load_nvml_is_none_when_the_driver_cannot_initialise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No NVIDIA driver can run here; a stand-in module raises what pynvml raises without one.
    broken = types.ModuleType("pynvml")

    def init() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert load_nvml() is None


def test_load_nvml_is_none_when_nvidia_ml_py_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert load_nvml() is None


def test_gpus_come_from_nvml_for_the_visible_devices_when_cuda_is_in_use() -> None:
    nvml = FakeNvml(utils=[10, 90], used=[1 << 30, 3 << 30])
    sampler = SystemSampler(nvml=nvml, cuda_in_use=lambda: True, environ={})
    sample = sampler.sample()
    assert sample is not None
    assert sample.gpu_count == 2
    assert sample.gpu_util_percent == 50.0
    assert sample.gpu_memory_bytes == 4 << 30
    only_second = SystemSampler(
        nvml=nvml, cuda_in_use=lambda: True, environ={"CUDA_VISIBLE_DEVICES": "1"}
    ).sample()
    assert only_second is not None
    assert (only_second.gpu_count, only_second.gpu_util_percent) == (1, 90.0)


def test_a_process_that_never_initialised_cuda_uses_no_gpus() -> None:
    nvml = FakeNvml(utils=[10], used=[1])
    sample = SystemSampler(nvml=nvml, cuda_in_use=lambda: False, environ={}).sample()
    assert sample is not None
    assert sample.gpu_count == 0 and sample.gpu_util_percent is None


def test_an_nvml_error_mid_run_keeps_cpu_and_memory() -> None:
    nvml = FakeNvml(utils=[10], used=[1], fail=True)
    sample = SystemSampler(nvml=nvml, cuda_in_use=lambda: True, environ={}).sample()
    assert sample is not None
    assert sample.rss_bytes > 0
    assert sample.gpu_util_percent is None and sample.gpu_count == 1


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, [0, 1, 2]), ("2,0", [2, 0]), ("", []), ("1,GPU-abc,2", [1]), ("0,7", [0])],
)
def test_cuda_visible_devices_selects_nvml_indexes(
    visible: str | None, expected: list[int]
) -> None:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert visible_device_indexes(environ, 3) == expected


def test_a_process_that_has_gone_gives_no_sample() -> None:
    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=PIPE)
    process = psutil.Process(child.pid)
    sampler = SystemSampler(nvml=False, process=process)
    child.communicate(b"")
    assert sampler.sample() is None

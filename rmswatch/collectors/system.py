"""System sampler: CPU and resident memory of the training process, and its GPUs through NVML.

`SystemSampler().sample()` is called by the monitor on its sink thread; it returns a
`SystemSample` (or None when even psutil cannot read the process), never raises.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import psutil

from rmswatch.trainer_hooks.records import SystemSample

log = logging.getLogger(__name__)


def load_nvml() -> ModuleType | None:
    """The NVML bindings (`pip install rmswatch[gpu]`), initialised; None without a GPU driver."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        log.debug("NVML unavailable: %s", exc)
        return None
    return nvml


def _cuda_in_use() -> bool:
    # Only a process that has created a CUDA context uses (and pays for) GPUs; a CPU training on a
    # GPU machine must report gpu_count 0. torch is only consulted if the trainer imported it.
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001
        return False


def visible_device_indexes(environ: Mapping[str, str], count: int) -> list[int]:
    """NVML indexes of the GPUs this process may use (`CUDA_VISIBLE_DEVICES`, else all)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    indexes = []
    for part in visible.split(","):
        part = part.strip()
        if not part.isdigit():
            # UUIDs / MIG names and an empty value ("no GPUs") are not mapped; the first stops the
            # list, exactly as the CUDA runtime does with an invalid entry.
            break
        if int(part) < count:
            indexes.append(int(part))
    return indexes


class SystemSampler:
    """Samples the current process (psutil) and, with NVML and CUDA in use, its GPUs.

    `nvml`: an initialised NVML module, or None to load `pynvml` if installed; pass
    `nvml=False` to never look for GPUs. `cuda_in_use` decides whether this process uses its
    GPUs at all (default: torch has initialised CUDA). `clock` stamps samples.
    """

    def __init__(
        self,
        *,
        nvml: ModuleType | Any | None = None,
        cuda_in_use: Callable[[], bool] = _cuda_in_use,
        process: psutil.Process | None = None,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._process = process or psutil.Process()
        # The first cpu_percent() call only starts the measurement window; it returns 0.0.
        self._process.cpu_percent(interval=None)
        self._nvml = load_nvml() if nvml is None else (nvml or None)
        self._cuda_in_use = cuda_in_use
        self._clock = clock
        self._environ: Mapping[str, str] = environ if environ is not None else os.environ
        self._handles: list[Any] | None = None

    def sample(self) -> SystemSample | None:
        try:
            with self._process.oneshot():
                cpu = float(self._process.cpu_percent(interval=None))
                rss = int(self._process.memory_info().rss)
        except psutil.Error as exc:
            log.debug("cannot read process stats: %s", exc)
            return None
        util, memory, count = self._gpu()
        return SystemSample(
            time=self._clock(),
            cpu_percent=cpu,
            rss_bytes=rss,
            gpu_util_percent=util,
            gpu_memory_bytes=memory,
            gpu_count=count,
        )

    def _gpu(self) -> tuple[float | None, int | None, int]:
        nvml = self._nvml
        if nvml is None or not self._cuda_in_use():
            return None, None, 0
        try:
            if self._handles is None:
                indexes = visible_device_indexes(self._environ, int(nvml.nvmlDeviceGetCount()))
                self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indexes]
            if not self._handles:
                return None, None, 0
            utils = [float(nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self._handles]
            used = [int(nvml.nvmlDeviceGetMemoryInfo(h).used) for h in self._handles]
        except Exception as exc:  # noqa: BLE001 - a GPU that falls off the bus is data, not a crash
            log.warning("NVML query failed: %s", exc)
            return None, None, len(self._handles or ())
        return sum(utils) / len(utils), sum(used), len(self._handles)

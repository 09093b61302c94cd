"""The statistics path, chosen once at `watch()` time from the device and the knobs.

Nothing on the hot path re-decides it: `StatsEngine` follows the plan, and the tests
parametrize on plans rather than inspecting which buffers an engine allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from rmswatch._validation import ArgumentError

KERNELS = ("eager", "compiled")
NORM_PATHS = ("fused", "per-layer")
# Exact full-tensor distributions on the CPU cost more than the step budget; see docs/hooks.md.
DEFAULT_EXACT_EVERY_CPU = 50


@dataclass(frozen=True, slots=True)
class StatsPlan:
    """How every telemetry step's statistics are computed.

    `host_reads`: the CPU reads norms back for free, so exact non-finite counts run only where a
    norm is non-finite; on an accelerator that read would stall the stream, so counts always run.
    `norms`: "fused" (CPU: one chunked pass per plain dense layer, `chunk_bytes` of scratch) or
    "per-layer" (CUDA, or `chunk_bytes=0`: full-size temporaries). `kernel`: the fused pass
    eager, or as one `torch.compile`d kernel per layer (CPU, opt-in). Exact distributions run
    at every `exact_every`-th telemetry step; in between, tensors over `sample_size` elements
    are estimated from their fixed sample.
    """

    device: str
    host_reads: bool
    norms: Literal["fused", "per-layer"]
    kernel: Literal["eager", "compiled"]
    chunk_bytes: int
    exact_every: int
    sample_size: int

    @property
    def name(self) -> str:
        """Short label, e.g. "cpu/fused/eager" (benchmarks, logs, test ids)."""
        return f"{self.device}/{self.norms}/{self.kernel}"

    def exact_at(self, telemetry_index: int) -> bool:
        """Whether the telemetry step with this 0-based index gets exact distributions."""
        return telemetry_index % self.exact_every == 0


def choose_plan(
    device: torch.device,
    *,
    chunk_bytes: int = 1 << 20,
    kernel: str = "eager",
    exact_every: int | None = None,
    sample_size: int = 4096,
) -> StatsPlan:
    """The plan for parameters on `device` with these knobs (validated here, once)."""
    if kernel not in KERNELS:
        raise ArgumentError(f"kernel={kernel!r}: expected one of {', '.join(KERNELS)}")
    cpu = device.type == "cpu"
    # Chunked passes keep temporaries in cache-sized scratch buffers instead of allocating and
    # writing tensors as large as the parameters (CPU: writes dominate).
    fused = chunk_bytes > 0 and cpu
    return StatsPlan(
        device=device.type,
        host_reads=cpu,
        norms="fused" if fused else "per-layer",
        kernel="compiled" if fused and kernel == "compiled" else "eager",
        chunk_bytes=chunk_bytes,
        exact_every=exact_every or (1 if device.type == "cuda" else DEFAULT_EXACT_EVERY_CPU),
        sample_size=sample_size,
    )

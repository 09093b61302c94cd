"""Optimizer hooks and device-side statistics; produces records, performs no I/O.

`Monitor` is imported on first use: the records and the sink protocol need no torch, so the
server and the store can read them without importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rmswatch.trainer_hooks.records import (
    CheckpointRecord,
    Histogram,
    LayerInfo,
    LayerStats,
    RankCheckRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    ValidationRecord,
)
from rmswatch.trainer_hooks.sinks import Sink

if TYPE_CHECKING:
    from rmswatch.trainer_hooks.monitor import Monitor

__all__ = [
    "CheckpointRecord",
    "Histogram",
    "LayerInfo",
    "LayerStats",
    "Monitor",
    "RankCheckRecord",
    "RunInfo",
    "RunStatus",
    "Sink",
    "StepRecord",
    "SystemSample",
    "ValidationRecord",
]


def __getattr__(name: str) -> Any:
    if name == "Monitor":
        from rmswatch.trainer_hooks.monitor import Monitor

        return Monitor
    raise AttributeError(f"module 'rmswatch.trainer_hooks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

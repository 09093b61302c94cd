"""Optimizer hooks and device-side statistics; produces records, performs no I/O."""

from __future__ import annotations

from rmswatch.trainer_hooks.monitor import Monitor
from rmswatch.trainer_hooks.records import (
    CheckpointRecord,
    Histogram,
    LayerInfo,
    LayerStats,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    ValidationRecord,
)
from rmswatch.trainer_hooks.sinks import Sink

__all__ = [
    "CheckpointRecord",
    "Histogram",
    "LayerInfo",
    "LayerStats",
    "Monitor",
    "RunInfo",
    "RunStatus",
    "Sink",
    "StepRecord",
    "SystemSample",
    "ValidationRecord",
]

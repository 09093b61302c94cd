"""rmswatch: SRE-grade observability for PyTorch training jobs.

The whole public API fits on one screen: `watch()` attaches a `Monitor` to an optimizer, and the
monitor produces `StepRecord`s (with per-layer `LayerStats` and RMS `Histogram`s). Every error
rmswatch raises on purpose is a `RmswatchError` (`CheckpointError` is one).

Names are imported on first use, so the server, the store and the CLI never pay for importing
torch; `import rmswatch; rmswatch.watch(...)` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmswatch._validation import CheckpointError, RmswatchError
    from rmswatch._watch import watch
    from rmswatch.checkpoint import (
        CheckpointInfo,
        Fidelity,
        load_checkpoint,
        save_checkpoint,
    )
    from rmswatch.trainer_hooks.monitor import Monitor
    from rmswatch.trainer_hooks.records import Histogram, LayerStats, StepRecord

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Fidelity",
    "Histogram",
    "LayerStats",
    "Monitor",
    "RmswatchError",
    "StepRecord",
    "__version__",
    "load_checkpoint",
    "save_checkpoint",
    "watch",
]

_LAZY = {
    "CheckpointError": "rmswatch._validation",
    "RmswatchError": "rmswatch._validation",
    "watch": "rmswatch._watch",
    "Monitor": "rmswatch.trainer_hooks.monitor",
    "Histogram": "rmswatch.trainer_hooks.records",
    "LayerStats": "rmswatch.trainer_hooks.records",
    "StepRecord": "rmswatch.trainer_hooks.records",
    "CheckpointInfo": "rmswatch.checkpoint",
    "Fidelity": "rmswatch.checkpoint",
    "load_checkpoint": "rmswatch.checkpoint",
    "save_checkpoint": "rmswatch.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rmswatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

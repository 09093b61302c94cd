"""rmswatch: SRE-grade observability for PyTorch training jobs.

The whole public API fits on one screen: `watch()` attaches a `Monitor` to an optimizer, and the
monitor produces `StepRecord`s (with per-layer `LayerStats` and RMS `Histogram`s).
"""

from __future__ import annotations

from rmswatch._watch import watch
from rmswatch.trainer_hooks.monitor import Monitor
from rmswatch.trainer_hooks.records import Histogram, LayerStats, StepRecord

__version__ = "0.1.0"

__all__ = ["Histogram", "LayerStats", "Monitor", "StepRecord", "__version__", "watch"]

"""Callbacks for training frameworks: `rmswatch.integrations.lightning.RmswatchCallback`
(Lightning 2.x, extra `rmswatch[lightning]`) and `rmswatch.integrations.transformers.
RmswatchCallback` (Hugging Face `Trainer`, extra `rmswatch[transformers]`).

Each module imports its framework; this package imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def find_rmsprop(optimizers: Sequence[Any], where: str) -> torch.optim.Optimizer:
    """The first RMSprop among `optimizers`, looking through wrappers that keep the real one in
    `.optimizer` (Lightning's LightningOptimizer, accelerate's AcceleratedOptimizer)."""
    seen: list[str] = []
    for optimizer in optimizers:
        inner = optimizer
        while not isinstance(inner, torch.optim.RMSprop) and hasattr(inner, "optimizer"):
            inner = inner.optimizer
        if isinstance(inner, torch.optim.RMSprop):
            return inner
        seen.append(type(inner).__name__)
    raise TypeError(
        f"rmswatch: {where} has no torch.optim.RMSprop optimizer (found: "
        f"{', '.join(seen) or 'none'}); rmswatch reads RMSprop's square_avg state"
    )

"""Monitor: attaches to an optimizer's step hooks and produces StepRecords (being built)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from rmswatch.trainer_hooks.records import Telemetry
from rmswatch.trainer_hooks.sinks import Sink


class Monitor:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        model: torch.nn.Module | None = None,
        job: str = "default",
        run_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        every: int = 1,
        sinks: Iterable[Sink] = (),
        samplers: Sequence[Callable[[], Telemetry | None]] = (),
        **options: Any,
    ) -> None:
        raise NotImplementedError("Monitor is being built in the trainer-hooks issue")

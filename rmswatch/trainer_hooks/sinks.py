"""The sink protocol: what the monitor's background thread hands telemetry to.

Sinks run on the monitor's sink thread, never on the training thread. `open` is called once
before the first batch, `write` with batches in step order, `flush` when the user asks for
everything to be delivered, `close` once at the end. A sink that raises is logged and counted;
it never reaches the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry


@runtime_checkable
class Sink(Protocol):
    def open(self, run: RunInfo) -> None: ...

    def write(self, items: Sequence[Telemetry]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: RunStatus) -> None: ...

"""Tiny models, training loops and recording sinks shared by the trainer-hooks tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rmswatch.trainer_hooks.records import RunInfo, RunStatus, StepRecord, Telemetry


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 12),
        torch.nn.GELU(),
        torch.nn.Linear(12, 12),
        torch.nn.GELU(),
        torch.nn.Linear(12, 3),
    )
    return model.to(dtype)


def batches(n: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 6, generator=gen).to(dtype) for _ in range(n)]


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: Sequence[torch.Tensor],
    *,
    after_backward: Callable[[int], None] | None = None,
    after_step: Callable[[int, torch.Tensor], None] | None = None,
) -> None:
    for i, x in enumerate(data):
        opt.zero_grad()
        loss = model(x).float().pow(2).mean()
        loss.backward()
        if after_backward is not None:
            after_backward(i)
        opt.step()
        if after_step is not None:
            after_step(i, loss)


class RecordingSink:
    """A real Sink that keeps what it was given (the sink protocol needs no fake)."""

    def __init__(self) -> None:
        self.run: RunInfo | None = None
        self.items: list[Telemetry] = []
        self.flushes = 0
        self.status: RunStatus | None = None
        self.opened = 0

    def open(self, run: RunInfo) -> None:
        self.run = run
        self.opened += 1

    def write(self, items: Sequence[Telemetry]) -> None:
        self.items.extend(items)

    def flush(self) -> None:
        self.flushes += 1

    def close(self, status: RunStatus) -> None:
        self.status = status

    def of(self, kind: type[Any]) -> list[Any]:
        return [i for i in self.items if isinstance(i, kind)]

    @property
    def steps(self) -> list[StepRecord]:
        return self.of(StepRecord)


class BlockingSink(RecordingSink):
    """Blocks in write() until released: fills the monitor's queue deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, items: Sequence[Telemetry]) -> None:
        self.entered.set()
        self.release.wait(timeout=30)
        super().write(items)


class FailingSink(RecordingSink):
    def __init__(self, fail_on: Sequence[str] = ("open", "write", "flush", "close")) -> None:
        super().__init__()
        self.fail_on = set(fail_on)
        self.calls: list[str] = []

    def _maybe(self, op: str) -> None:
        self.calls.append(op)
        if op in self.fail_on:
            raise RuntimeError(f"sink {op} broke")

    def open(self, run: RunInfo) -> None:
        self._maybe("open")

    def write(self, items: Sequence[Telemetry]) -> None:
        self._maybe("write")

    def flush(self) -> None:
        self._maybe("flush")

    def close(self, status: RunStatus) -> None:
        self._maybe("close")

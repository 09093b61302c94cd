"""Sink delivery: one daemon thread per monitor behind a bounded queue that drops when full.

The training thread only ever appends to a deque under a short lock (`offer`); opening, writing,
flushing and closing sinks, and polling samplers, all happen on the dispatcher's thread. A sink
that raises is logged once per (sink, operation) and counted, never re-raised.

`offer` does not wake the thread for every record: the thread collects what is queued every
`wake_interval` seconds, or at once when `wake_batch` records wait (and on flush/close). Waking it
every step (budget mode records every step) cost the training thread a GIL hand-off per step,
measured at up to 20 ms on a loaded machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rmswatch._validation import ArgumentError
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry
from rmswatch.trainer_hooks.sinks import Sink

log = logging.getLogger("rmswatch.trainer_hooks")

Sampler = Callable[[], Telemetry | None]


@dataclass
class _Control:
    kind: str  # "flush" | "close"
    done: threading.Event = field(default_factory=threading.Event)
    status: RunStatus | None = None


class Dispatcher:
    """Delivers telemetry to sinks on a background thread; see the module docstring."""

    def __init__(
        self,
        run: RunInfo,
        sinks: Sequence[Sink],
        *,
        samplers: Sequence[Sampler] = (),
        queue_size: int = 1024,
        sample_interval: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        wake_interval: float = 0.2,
        wake_batch: int = 256,
    ) -> None:
        if queue_size < 1:
            raise ArgumentError(f"queue_size={queue_size!r}: expected an int >= 1")
        if sample_interval <= 0:
            raise ArgumentError(f"sample_interval={sample_interval!r}: expected seconds > 0")
        self.run = run
        self.sinks = list(sinks)
        self.samplers = list(samplers)
        self.queue_size = queue_size
        self.sample_interval = sample_interval
        self.wake_interval = wake_interval
        self.wake_batch = max(1, min(wake_batch, queue_size))
        self._monotonic = monotonic
        self._items: deque[Telemetry | _Control] = deque()
        self._queued = 0  # telemetry items waiting (controls never count, never drop)
        self._cond = threading.Condition(threading.Lock())
        self.dropped = 0
        self.errors = 0
        self._logged: set[tuple[int, str]] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- training-thread side -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"rmswatch-sinks-{self.run.run_id}", daemon=True
            )
            self._thread.start()

    def offer(self, item: Telemetry) -> bool:
        """Queue `item` for the sinks; when the queue is full drop it, count it, return False."""
        with self._cond:
            if self._closed or self._queued >= self.queue_size:
                self.dropped += 1
                return False
            self._items.append(item)
            self._queued += 1
            if self._queued >= self.wake_batch:
                self._cond.notify()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything offered so far is written and every sink flushed."""
        return self._control(_Control("flush"), timeout)

    def close(self, status: RunStatus, timeout: float | None = None) -> bool:
        ok = self._control(_Control("close", status=status), timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        return ok

    def _control(self, control: _Control, timeout: float | None) -> bool:
        with self._cond:
            if self._closed:
                return True
            if control.kind == "close":
                self._closed = True
            self._items.append(control)
            self._cond.notify()
        self.start()
        return control.done.wait(timeout)

    # -- dispatcher thread ----------------------------------------------------------------------

    def _run(self) -> None:
        for sink in self.sinks:
            self._call(sink, "open", sink.open, self.run)
        next_sample = self._monotonic() + self.sample_interval if self.samplers else None
        while True:
            with self._cond:
                deadline = self._monotonic() + self.wake_interval
                while True:
                    now = self._monotonic()
                    if self._has_work(now, deadline):
                        break
                    if next_sample is not None and next_sample <= now:
                        break
                    if now >= deadline:  # nothing arrived: look again in one interval
                        deadline = now + self.wake_interval
                    wait = deadline - now
                    if next_sample is not None:
                        wait = min(wait, next_sample - now)
                    self._cond.wait(wait)
                batch: list[Telemetry] = []
                control: _Control | None = None
                while self._items:
                    item = self._items.popleft()
                    if isinstance(item, _Control):
                        control = item
                        break
                    batch.append(item)
                self._queued -= len(batch)
            if next_sample is not None and self._monotonic() >= next_sample:
                batch.extend(self._sample())
                next_sample = self._monotonic() + self.sample_interval
            if batch:
                for sink in self.sinks:
                    self._call(sink, "write", sink.write, batch)
            if control is None:
                continue
            if control.kind == "flush":
                for sink in self.sinks:
                    self._call(sink, "flush", sink.flush)
                control.done.set()
                continue
            final = self._sample() if self.samplers else []
            for sink in self.sinks:
                if final:
                    self._call(sink, "write", sink.write, final)
                self._call(sink, "flush", sink.flush)
                assert control.status is not None
                self._call(sink, "close", sink.close, control.status)
            control.done.set()
            return

    def _has_work(self, now: float, deadline: float) -> bool:
        """(Under the lock.) A control waits, enough records wait, or records waited long enough."""
        if not self._items:
            return False
        if self._queued >= self.wake_batch or len(self._items) > self._queued:
            return True  # a batch is due, or a flush/close control is queued
        return now >= deadline

    def _sample(self) -> list[Telemetry]:
        out: list[Telemetry] = []
        for sampler in self.samplers:
            try:
                item = sampler()
            except Exception:  # noqa: BLE001 - a broken sampler must not stop delivery
                self._failed(sampler, "sample")
                continue
            if item is not None:
                out.append(item)
        return out

    def _call(self, sink: object, op: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - sinks never reach the training loop
            self._failed(sink, op)

    def _failed(self, who: object, op: str) -> None:
        self.errors += 1
        key = (id(who), op)
        if key not in self._logged:
            self._logged.add(key)
            log.exception(
                "rmswatch: %s.%s raised; counted and ignored (logged once)", type(who).__name__, op
            )

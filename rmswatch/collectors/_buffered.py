"""`BufferedSink`: the buffering, flusher thread and retry mechanism shared by the delivering sinks.

`StoreWriter` and `HttpShipper` subclass it and supply only what differs: how a batch and the
final run status are delivered, which errors are worth retrying, the backoff, and their counters.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar

from rmswatch._validation import ArgumentError
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry


class RetryLater(Exception):
    """Raised by a delivery hook when the same batch may succeed later; the message is the error."""


class BufferedSink(ABC):
    """A Sink whose `write()` only appends to a bounded buffer that a daemon thread delivers.

    Every `flush_interval` seconds the flusher thread delivers the buffer in batches of
    `_batch_records` (unless a backoff is pending). A batch whose delivery raises one of
    `_retryable` goes back to the front of the buffer and the next attempt waits `_backoff()`;
    a full buffer drops its oldest records and counts them. `close()` delivers the rest and the
    run status for up to `close_timeout` seconds, then counts what is left as dropped.
    """

    _retryable: ClassVar[tuple[type[BaseException], ...]] = (RetryLater,)

    def __init__(
        self,
        *,
        flush_interval: float,
        max_buffer: int,
        batch_records: int,
        clock: Callable[[], float],
        close_timeout: float,
        thread_name: str,
    ) -> None:
        if flush_interval <= 0:
            raise ArgumentError(f"flush_interval={flush_interval!r}: must be > 0 seconds")
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._batch_records = batch_records
        self._clock = clock
        self._close_timeout = close_timeout
        self._thread_name = thread_name

        self._pending: deque[Telemetry] = deque()
        self._buffer_lock = threading.Lock()
        # one delivery at a time: the flusher thread, flush() and close() never interleave batches
        self._io_lock = threading.Lock()
        self._run: RunInfo | None = None
        self._status: RunStatus | None = None
        self._status_delivered = False
        self._failures = 0
        self._next_attempt = 0.0
        self._dropped = 0
        self._failed_attempts = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what subclasses supply ----------------------------------------------------------------

    def _prepare(self) -> None:
        """Runs at the start of every delivery attempt (connect, create the run); may raise."""
        return None

    @abstractmethod
    def _deliver_batch(self, batch: list[Telemetry]) -> None:
        """Deliver `batch`, taken from the front of the buffer.

        To deliver less, return a tail to the buffer with `_put_back(..., drop_overflow=False)`
        and shorten `batch` in place. If an exception escapes, what `batch` then holds goes back
        to the buffer; one of `_retryable` also schedules a retry.
        """

    @abstractmethod
    def _deliver_status(self, status: RunStatus) -> None:
        """Deliver the run's final status once the buffer is empty, unless a batch carried it
        (`_status_delivered`)."""

    @abstractmethod
    def _backoff(self, failures: int) -> float:
        """Seconds to wait before the next attempt after `failures` failed attempts in a row."""

    def _close_retry_wait(self) -> float:
        """Seconds `flush()`/`close()` wait between attempts: by default the backoff."""
        return max(0.0, self._next_attempt - self._clock())

    @abstractmethod
    def _report_lost(self, count: int) -> None:
        """Say that `count` records are dropped because `close()` could not deliver them."""

    # -- Sink protocol -------------------------------------------------------------------------

    def open(self, run: RunInfo) -> None:
        self._run = run
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"{self._thread_name}-{run.run_id}", daemon=True
        )
        self._thread.start()

    def write(self, items: Sequence[Telemetry]) -> None:
        with self._buffer_lock:
            self._pending.extend(items)
            self._drop_overflow()

    def flush(self) -> None:
        """Deliver what is buffered, retrying with backoff for up to `close_timeout` seconds."""
        self._deliver_until(self._clock() + self._close_timeout)

    def close(self, status: RunStatus) -> None:
        self._status = status
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._deliver_until(self._clock() + self._close_timeout)
        with self._buffer_lock:
            if self._pending:
                self._dropped += len(self._pending)
                self._report_lost(len(self._pending))
                self._pending.clear()

    @property
    def dropped_total(self) -> int:
        return self._dropped

    # -- the mechanism -------------------------------------------------------------------------

    def _buffered(self) -> int:
        with self._buffer_lock:
            return len(self._pending)

    def _put_back(self, records: Sequence[Telemetry], *, drop_overflow: bool = True) -> None:
        with self._buffer_lock:
            self._pending.extendleft(reversed(records))
            if drop_overflow:
                self._drop_overflow()

    def _drop_overflow(self) -> None:
        # oldest first: after an outage the on-call needs the newest steps, not the first ones
        overflow = len(self._pending) - self.max_buffer
        for _ in range(overflow):
            self._pending.popleft()
        if overflow > 0:
            self._dropped += overflow

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._deliver(force=False)

    def _deliver_until(self, deadline: float) -> None:
        while not self._deliver(force=True):
            wait = self._close_retry_wait()
            if self._clock() + wait > deadline:
                return
            time.sleep(wait)

    def _deliver(self, *, force: bool) -> bool:
        """One attempt (skipped during a backoff unless `force`): True when the buffer, and the
        status once closing, were delivered; False after a retryable failure."""
        with self._io_lock:
            if not force and self._clock() < self._next_attempt:
                return False
            try:
                self._prepare()
                while True:
                    with self._buffer_lock:
                        n = min(self._batch_records, len(self._pending))
                        batch = [self._pending.popleft() for _ in range(n)]
                    if not batch:
                        break
                    try:
                        self._deliver_batch(batch)
                    except BaseException:
                        self._put_back(batch)
                        raise
                if self._status is not None and not self._status_delivered:
                    self._deliver_status(self._status)
                    self._status_delivered = True
            except self._retryable as exc:
                self._on_failure(exc)
                return False
            self._failures = 0
            return True

    def _on_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._failed_attempts += 1
        if isinstance(exc, RetryLater):
            self._last_error = str(exc)
        else:
            self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self._next_attempt = self._clock() + self._backoff(self._failures)

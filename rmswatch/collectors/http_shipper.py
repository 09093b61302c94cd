"""`HttpShipper`: the sink that sends telemetry to an rmswatch server's ingest API.

Same buffering as `StoreWriter` (bounded, oldest dropped and counted), batches POSTed as JSON
(`rmswatch.collectors.wire`) with a bearer token, retried with exponential backoff and full
jitter. The server is idempotent on (run, step), so a batch retried after a lost response
creates no duplicates.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rmswatch.collectors.wire import encode_batch
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
# answers after which the same batch may succeed later
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class Transport(Protocol):
    """POST `body` to `url`; return the HTTP status. Network failures raise OSError."""

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> int: ...


def requests_transport() -> Transport:
    import requests

    session = requests.Session()

    def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        try:
            return session.post(url, data=body, headers=dict(headers), timeout=timeout).status_code
        except requests.RequestException as exc:
            raise OSError(str(exc)) from exc

    return post


class _Retry(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ShipperStats:
    sent: int
    dropped: int
    rejected: int
    buffered: int
    retries: int
    last_error: str | None


class HttpShipper:
    """Sink POSTing a run's telemetry to `<url>/api/v1/ingest`.

    `transport=` replaces the HTTP client (a callable, see `Transport`); `rng=` the jitter
    source; `max_batch_records`/`max_batch_bytes` keep each POST under the server's limit.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        flush_interval: float = 1.0,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        max_buffer: int = 5_000,
        max_batch_records: int = 200,
        max_batch_bytes: int = 4 * 1024 * 1024,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
        close_timeout: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url={url!r}: expected the rmswatch server's http(s):// URL")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval={flush_interval!r}: must be > 0 seconds")
        self.url = url if url.rstrip("/").endswith(INGEST_PATH) else url.rstrip("/") + INGEST_PATH
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._token = token
        self._transport = transport if transport is not None else requests_transport()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._max_records = max_batch_records
        self._max_bytes = max_batch_bytes
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._timeout = timeout
        self._close_timeout = close_timeout

        self._pending: deque[Telemetry] = deque()
        self._buffer_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._run: RunInfo | None = None
        self._opened = False
        self._status: RunStatus | None = None
        self._status_sent = False
        self._failures = 0
        self._next_attempt = 0.0
        self._sent = 0
        self._dropped = 0
        self._rejected = 0
        self._retries = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- Sink protocol -------------------------------------------------------------------------

    def open(self, run: RunInfo) -> None:
        self._run = run
        self._thread = threading.Thread(
            target=self._loop, name=f"rmswatch-ship-{run.run_id}", daemon=True
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
                log.error(
                    "rmswatch shipper: %d records never reached %s (%s)",
                    len(self._pending),
                    self.url,
                    self._last_error,
                )
                self._pending.clear()

    # -- counters -----------------------------------------------------------------------------

    @property
    def dropped_total(self) -> int:
        return self._dropped

    def stats(self) -> ShipperStats:
        with self._buffer_lock:
            buffered = len(self._pending)
        return ShipperStats(
            self._sent, self._dropped, self._rejected, buffered, self._retries, self._last_error
        )

    # -- internals ----------------------------------------------------------------------------

    def _drop_overflow(self) -> None:
        overflow = len(self._pending) - self.max_buffer
        for _ in range(overflow):
            self._pending.popleft()
        if overflow > 0:
            self._dropped += overflow

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            if self._clock() >= self._next_attempt:
                self._send_all()

    def _deliver_until(self, deadline: float) -> None:
        while not self._send_all():
            wait = max(0.0, self._next_attempt - self._clock())
            if self._clock() + wait > deadline:
                return
            time.sleep(wait)

    def _done(self) -> bool:
        with self._buffer_lock:
            empty = not self._pending
        return empty and (self._status is None or self._status_sent)

    def _send_all(self) -> bool:
        """Send until the buffer is empty; False after a retryable failure (backoff scheduled)."""
        with self._io_lock:
            while not self._done():
                with self._buffer_lock:
                    n = min(self._max_records, len(self._pending))
                    chunk = [self._pending.popleft() for _ in range(n)]
                try:
                    self._send_chunk(chunk)
                except _Retry as retry:
                    unsent: list[Telemetry] = retry.args[0]
                    with self._buffer_lock:
                        self._pending.extendleft(reversed(unsent))
                        self._drop_overflow()
                    return False
            return True

    def _send_chunk(self, chunk: list[Telemetry]) -> list[Telemetry]:
        """POST `chunk` (shrunk to fit `max_batch_bytes`); returns what was actually sent."""
        while True:
            with self._buffer_lock:
                final = self._status is not None and not self._pending
            status = self._status if final else None
            body = encode_batch(self._run, chunk, open_run=not self._opened, status=status)
            if len(body) <= self._max_bytes or len(chunk) <= 1:
                break
            half = len(chunk) // 2
            with self._buffer_lock:
                self._pending.extendleft(reversed(chunk[half:]))
            chunk = chunk[:half]
        code = self._post(body, chunk)
        if code < 300:
            self._sent += len(chunk)
            self._opened = True
            self._failures = 0
            if status is not None:
                self._status_sent = True
            return chunk
        if code in RETRYABLE_STATUS:
            self._schedule_retry(f"HTTP {code}", chunk)
        # 401/403/413/422: sending the same bytes again can't succeed
        self._rejected += len(chunk)
        self._dropped += len(chunk)
        self._last_error = f"HTTP {code} from {self.url}"
        log.error("rmswatch shipper: %s; %d records dropped", self._last_error, len(chunk))
        if status is not None:
            self._status_sent = True
        return chunk

    def _post(self, body: bytes, chunk: list[Telemetry]) -> int:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            return self._transport(self.url, body, headers, self._timeout)
        except OSError as exc:
            self._schedule_retry(f"{type(exc).__name__}: {exc}", chunk)
            raise AssertionError("unreachable") from None

    def _schedule_retry(self, error: str, chunk: list[Telemetry]) -> None:
        self._failures += 1
        self._retries += 1
        self._last_error = error
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(self._failures - 1, 16))
        # full jitter: many trainers that lost the server at once don't come back in lockstep
        self._next_attempt = self._clock() + self._rng.uniform(0, ceiling)
        raise _Retry(chunk)

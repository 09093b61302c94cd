"""`HttpShipper`: the sink that sends telemetry to an rmswatch server's ingest API.

Same buffering as `StoreWriter` (bounded, oldest dropped and counted), batches POSTed as JSON
(`rmswatch.collectors.wire`) with a bearer token, retried with exponential backoff and full
jitter. The server is idempotent on (run, step), so a batch retried after a lost response
creates no duplicates.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from rmswatch._validation import ArgumentError, check_url
from rmswatch.collectors._buffered import BufferedSink, RetryLater
from rmswatch.collectors.wire import encode_batch
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry
from rmswatch.trainer_hooks.screen import check_run, describe, safe_status, screen

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
# answers after which the same batch may succeed later; a 4xx is never retried (the same bytes
# can't succeed), a 5xx is (the server's state, not the batch, is the problem)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class Transport(Protocol):
    """POST `body` to `url`; return the HTTP status, or (status, response body) so a 422 can say
    which records were refused. Network failures raise OSError."""

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> int | tuple[int, bytes]: ...


def requests_transport() -> Transport:
    import requests

    session = requests.Session()

    def post(
        url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes]:
        try:
            response = session.post(url, data=body, headers=dict(headers), timeout=timeout)
        except requests.RequestException as exc:
            raise OSError(str(exc)) from exc
        return response.status_code, response.content

    return post


def refused_records(answer: bytes) -> int | None:
    """How many records a 422 answer says were not stored; None when it refused the batch whole
    (no `accepted` in the answer)."""
    try:
        parsed = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict) or "accepted" not in parsed:
        return None
    rejected = parsed.get("rejected")
    if not isinstance(rejected, list):
        return None
    return len({r.get("index") for r in rejected if isinstance(r, dict) and not r.get("stored")})


@dataclass(frozen=True, slots=True)
class ShipperStats:
    sent: int
    dropped: int
    rejected: int
    buffered: int
    retries: int
    last_error: str | None


class HttpShipper(BufferedSink):
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
        try:
            check_url(url)  # the one URL rule, as in the server's config
        except ValueError as exc:
            raise ArgumentError(
                f"url={url!r}: expected the rmswatch server's http(s):// URL ({exc})"
            ) from None
        super().__init__(
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            batch_records=max_batch_records,
            clock=clock,
            close_timeout=close_timeout,
            thread_name="rmswatch-ship",
        )
        self.url = url if url.rstrip("/").endswith(INGEST_PATH) else url.rstrip("/") + INGEST_PATH
        self._token = token
        self._transport = transport if transport is not None else requests_transport()
        self._rng = rng if rng is not None else random.Random()
        self._max_bytes = max_batch_bytes
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._timeout = timeout
        self._opened = False
        self._sent = 0
        self._rejected = 0
        self._screened_out = 0

    # -- counters -----------------------------------------------------------------------------

    def stats(self) -> ShipperStats:
        return ShipperStats(
            self._sent,
            self._dropped,
            self._rejected,
            self._buffered(),
            self._failed_attempts,
            self._last_error,
        )

    # -- delivery -----------------------------------------------------------------------------

    def _send_all(self) -> bool:
        """One attempt now, backoff or not; False after a retryable failure (backoff scheduled)."""
        return self._deliver(force=True)

    def open(self, run: RunInfo) -> None:
        super().open(check_run(run))

    def close(self, status: RunStatus) -> None:
        super().close(safe_status(status))
        if self._screened_out:
            log.warning(
                "rmswatch shipper: %d records (or parts) not sent, outside the store's limits",
                self._screened_out,
            )

    def _deliver_batch(self, batch: list[Telemetry]) -> None:
        """POST `batch`, shrunk to fit `max_batch_bytes`; the last one at close carries the
        run status. Records are screened first: what no store takes is never sent."""
        kept: list[Telemetry] = []
        for item in batch:
            screened, problems = screen(item)
            if problems:
                self._screened_out += 1
                if screened is None:
                    self._rejected += 1
                    self._dropped += 1
                log.warning("rmswatch shipper: %s: %s", describe(item), problems[0])
            if screened is not None:
                kept.append(screened)
        batch[:] = kept
        while True:
            final = self._status is not None and not self._buffered()
            status = self._status if final else None
            body = encode_batch(self._run, batch, open_run=not self._opened, status=status)
            if len(body) <= self._max_bytes or len(batch) <= 1:
                break
            half = len(batch) // 2
            self._put_back(batch[half:], drop_overflow=False)
            del batch[half:]
        code, answer = self._post(body)
        if code == 422:
            refused = refused_records(answer)
            if refused is not None:
                # the server stored the valid records and named the others: never resend
                self._sent += len(batch) - refused
                self._rejected += refused
                self._dropped += refused
                self._opened = True
                self._failures = 0
                self._last_error = f"HTTP 422 from {self.url}: {refused} records refused"
                log.error("rmswatch shipper: %s: %s", self._last_error, answer[:300])
                if status is not None:
                    self._status_delivered = True
                return
        if code < 300:
            self._sent += len(batch)
            self._opened = True
            self._failures = 0
            if status is not None:
                self._status_delivered = True
            return
        if code in RETRYABLE_STATUS:
            raise RetryLater(f"HTTP {code}")
        # 401/403/413/422: sending the same bytes again can't succeed
        self._rejected += len(batch)
        self._dropped += len(batch)
        self._last_error = f"HTTP {code} from {self.url}"
        log.error("rmswatch shipper: %s; %d records dropped", self._last_error, len(batch))
        if status is not None:
            self._status_delivered = True

    def _deliver_status(self, status: RunStatus) -> None:
        # the buffer was already empty at close: the status goes alone, in an empty batch
        self._deliver_batch([])

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            result = self._transport(self.url, body, headers, self._timeout)
        except OSError as exc:
            raise RetryLater(f"{type(exc).__name__}: {exc}") from exc
        return result if isinstance(result, tuple) else (result, b"")

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 16))
        # full jitter: many trainers that lost the server at once don't come back in lockstep
        return self._rng.uniform(0, ceiling)

    def _report_lost(self, count: int) -> None:
        log.error(
            "rmswatch shipper: %d records never reached %s (%s)", count, self.url, self._last_error
        )

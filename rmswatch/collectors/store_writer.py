"""`StoreWriter`: the sink that writes telemetry into the run store in batches.

`write()` only appends to a bounded buffer; a flusher thread commits it every `flush_interval`
seconds, so a trainer killed with SIGKILL loses at most about one interval. When the store is
unreachable the buffer holds on (oldest records dropped and counted once full) and the writer
reconnects with backoff; training never waits for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rmswatch.store.engine import make_engine, upgrade, write_transaction
from rmswatch.store.writes import close_run, upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry

log = logging.getLogger(__name__)

# records per transaction: short transactions keep other writers on the same SQLite file moving
CHUNK_RECORDS = 200


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of one writer; `dropped` counts records lost to a full buffer or a dead store."""

    written: int
    dropped: int
    buffered: int
    flush_errors: int
    last_error: str | None


class StoreWriter:
    """Sink writing a run's telemetry to a SQLAlchemy store (SQLite file or PostgreSQL).

    `engine=` replaces the URL (tests, a shared server engine); `max_buffer` bounds the records
    held while the store is unreachable; `close_timeout` is how long `close()` keeps retrying a
    dead store before counting what is left as dropped.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        flush_interval: float = 1.0,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_buffer: int = 5_000,
        retry_max_seconds: float = 30.0,
        close_timeout: float = 10.0,
        create_schema: bool = True,
    ) -> None:
        if engine is None and not url:
            raise ValueError("StoreWriter needs a store URL or engine=")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval={flush_interval!r}: must be > 0 seconds")
        if max_buffer < 1:
            raise ValueError(f"max_buffer={max_buffer!r}: must be >= 1 record")
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else make_engine(str(url))
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._clock = clock
        self._retry_max = retry_max_seconds
        self._close_timeout = close_timeout
        self._create_schema = create_schema

        self._pending: deque[Telemetry] = deque()
        self._buffer_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._run: RunInfo | None = None
        self._run_pk: int | None = None
        self._reopen = True
        self._status: RunStatus | None = None
        self._schema_ready = False
        self._failures = 0
        self._next_attempt = 0.0
        self._written = 0
        self._dropped = 0
        self._flush_errors = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- Sink protocol -------------------------------------------------------------------------

    def open(self, run: RunInfo) -> None:
        self._run = run
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"rmswatch-store-{run.run_id}", daemon=True
        )
        self._thread.start()

    def write(self, items: Sequence[Telemetry]) -> None:
        with self._buffer_lock:
            self._pending.extend(items)
            self._drop_overflow()

    def flush(self) -> None:
        """Deliver everything buffered now (one attempt; a dead store keeps it buffered)."""
        self._drain(force=True)

    def close(self, status: RunStatus) -> None:
        self._status = status
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = self._clock() + self._close_timeout
        while not self._drain(force=True) and self._clock() < deadline:
            time.sleep(min(0.2, self.flush_interval))
        with self._buffer_lock:
            if self._pending:
                self._dropped += len(self._pending)
                log.error(
                    "rmswatch store writer: %d records never reached the store (%s)",
                    len(self._pending),
                    self._last_error,
                )
                self._pending.clear()
        if self._owns_engine:
            self.engine.dispose()

    # -- counters -----------------------------------------------------------------------------

    @property
    def dropped_total(self) -> int:
        return self._dropped

    @property
    def written_total(self) -> int:
        return self._written

    def stats(self) -> WriterStats:
        with self._buffer_lock:
            buffered = len(self._pending)
        return WriterStats(
            self._written, self._dropped, buffered, self._flush_errors, self._last_error
        )

    # -- internals ----------------------------------------------------------------------------

    def _drop_overflow(self) -> None:
        # oldest first: after an outage the on-call needs the newest steps, not the first ones
        overflow = len(self._pending) - self.max_buffer
        for _ in range(overflow):
            self._pending.popleft()
        if overflow > 0:
            self._dropped += overflow

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._drain(force=False)

    def _drain(self, *, force: bool) -> bool:
        """Write out the buffer; True when everything (and a pending close) reached the store."""
        with self._io_lock:
            if not force and self._clock() < self._next_attempt:
                return False
            try:
                self._ensure_run()
                while True:
                    with self._buffer_lock:
                        n = min(CHUNK_RECORDS, len(self._pending))
                        chunk = [self._pending.popleft() for _ in range(n)]
                    if not chunk:
                        break
                    try:
                        self._write_chunk(chunk)
                    except BaseException:
                        with self._buffer_lock:
                            self._pending.extendleft(reversed(chunk))
                            self._drop_overflow()
                        raise
                    self._written += len(chunk)
                if self._status is not None:
                    assert self._run_pk is not None
                    with write_transaction(self.engine) as conn:
                        close_run(conn, self._run_pk, self._status)
            except (SQLAlchemyError, OSError) as exc:
                self._on_failure(exc)
                return False
            self._failures = 0
            return True

    def _ensure_run(self) -> None:
        if self._run is None:
            raise RuntimeError("StoreWriter.write() before open()")
        if self._create_schema and not self._schema_ready:
            upgrade(self.engine)
            self._schema_ready = True
        if self._run_pk is None or self._reopen:
            with write_transaction(self.engine) as conn:
                self._run_pk = upsert_run(conn, self._run, reopen=self._reopen)
            self._reopen = False

    def _write_chunk(self, chunk: list[Telemetry]) -> None:
        assert self._run_pk is not None
        with write_transaction(self.engine) as conn:
            write_telemetry(conn, self._run_pk, chunk)

    def _on_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._flush_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        backoff = min(self.flush_interval * 2 ** min(self._failures, 16), self._retry_max)
        self._next_attempt = self._clock() + backoff
        if self._failures == 1:
            log.warning("rmswatch store unreachable, buffering telemetry: %s", self._last_error)
        # Broken pooled connections (a restarted server, a file opened read-only) are
        # thrown away so the next attempt reconnects from scratch.
        self.engine.dispose()

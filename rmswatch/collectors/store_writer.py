"""`StoreWriter`: the sink that writes telemetry into the run store in batches.

`write()` only appends to a bounded buffer; a flusher thread commits it every `flush_interval`
seconds, so a trainer killed with SIGKILL loses at most about one interval. When the store is
unreachable the buffer holds on (oldest records dropped and counted once full) and the writer
reconnects with backoff; training never waits for the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rmswatch.collectors._buffered import BufferedSink
from rmswatch.store.engine import make_engine, upgrade, write_transaction
from rmswatch.store.writes import close_run, upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import RunStatus, Telemetry

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


class StoreWriter(BufferedSink):
    """Sink writing a run's telemetry to a SQLAlchemy store (SQLite file or PostgreSQL).

    `engine=` replaces the URL (tests, a shared server engine); `max_buffer` bounds the records
    held while the store is unreachable; `close_timeout` is how long `close()` keeps retrying a
    dead store before counting what is left as dropped.
    """

    _retryable: ClassVar[tuple[type[BaseException], ...]] = (SQLAlchemyError, OSError)

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
        super().__init__(
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            batch_records=CHUNK_RECORDS,
            clock=clock,
            close_timeout=close_timeout,
            thread_name="rmswatch-store",
        )
        if max_buffer < 1:
            raise ValueError(f"max_buffer={max_buffer!r}: must be >= 1 record")
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else make_engine(str(url))
        self._retry_max = retry_max_seconds
        self._create_schema = create_schema
        self._run_pk: int | None = None
        self._reopen = True
        self._schema_ready = False
        self._written = 0

    # -- Sink protocol -------------------------------------------------------------------------

    def flush(self) -> None:
        """Deliver everything buffered now (one attempt; a dead store keeps it buffered)."""
        self._deliver(force=True)

    def close(self, status: RunStatus) -> None:
        super().close(status)
        if self._owns_engine:
            self.engine.dispose()

    # -- counters -----------------------------------------------------------------------------

    @property
    def written_total(self) -> int:
        return self._written

    def stats(self) -> WriterStats:
        return WriterStats(
            self._written, self._dropped, self._buffered(), self._failed_attempts, self._last_error
        )

    # -- delivery -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._run is None:
            raise RuntimeError("StoreWriter.write() before open()")
        if self._create_schema and not self._schema_ready:
            upgrade(self.engine)
            self._schema_ready = True
        if self._run_pk is None or self._reopen:
            with write_transaction(self.engine) as conn:
                self._run_pk = upsert_run(conn, self._run, reopen=self._reopen)
            self._reopen = False

    def _deliver_batch(self, batch: list[Telemetry]) -> None:
        assert self._run_pk is not None
        with write_transaction(self.engine) as conn:
            write_telemetry(conn, self._run_pk, batch)
        self._written += len(batch)

    def _deliver_status(self, status: RunStatus) -> None:
        assert self._run_pk is not None
        with write_transaction(self.engine) as conn:
            close_run(conn, self._run_pk, status, rank=self._run.rank if self._run else 0)

    def _backoff(self, failures: int) -> float:
        return min(self.flush_interval * 2.0 ** min(failures, 16), self._retry_max)

    def _close_retry_wait(self) -> float:
        # close() polls instead of honouring the backoff: a store that comes back within the
        # close window is caught within 0.2 s, not after a 30 s backoff the process won't see
        return min(0.2, self.flush_interval)

    def _on_failure(self, exc: BaseException) -> None:
        super()._on_failure(exc)
        if self._failures == 1:
            log.warning("rmswatch store unreachable, buffering telemetry: %s", self._last_error)
        # Broken pooled connections (a restarted server, a file opened read-only) are
        # thrown away so the next attempt reconnects from scratch.
        self.engine.dispose()

    def _report_lost(self, count: int) -> None:
        log.error(
            "rmswatch store writer: %d records never reached the store (%s)",
            count,
            self._last_error,
        )

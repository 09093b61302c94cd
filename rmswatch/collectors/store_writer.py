"""`StoreWriter`: the sink that writes telemetry into the run store in batches.

`write()` only appends to a bounded buffer; a flusher thread commits it every `flush_interval`
seconds, so a trainer killed with SIGKILL loses at most about one interval. When the store is
unreachable the buffer holds on (oldest records dropped and counted once full) and the writer
reconnects with backoff; training never waits for the database.

One bad value never costs a batch: records are screened against the store's limits
(`rmswatch.trainer_hooks.screen`) and what fails is cut out and counted as rejected; a row the
store still refuses (a reason no limit foresaw) is isolated by writing the batch one record at a
time, and only that record is quarantined: counted, kept in `quarantined`, logged at close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from rmswatch._validation import ArgumentError
from rmswatch.collectors._buffered import BufferedSink
from rmswatch.store.engine import make_engine, upgrade, write_transaction
from rmswatch.store.writes import WriteCounts, close_run, upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, Telemetry
from rmswatch.trainer_hooks.screen import check_run, describe, safe_status, screen

log = logging.getLogger(__name__)

# records per transaction: short transactions keep other writers on the same SQLite file moving
CHUNK_RECORDS = 200
# quarantined records kept for inspection; beyond this they are only counted
MAX_QUARANTINED = 100


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of one writer; `dropped` counts records lost to a full buffer or a dead store,
    `rejected` records (or parts) outside the store's limits, `quarantined` records the store
    refused for another reason (see `StoreWriter.quarantined`)."""

    written: int
    dropped: int
    buffered: int
    flush_errors: int
    last_error: str | None
    rejected: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record the store refused, with why; the rest of its batch was written."""

    record: Telemetry
    reason: str


def is_bad_data(exc: BaseException) -> bool:
    """True when the store refused the values, not the connection: retrying can't help."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True  # the driver refused to convert a value (e.g. an int beyond 64 bits)
    return isinstance(exc, ValueError | TypeError | OverflowError)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def write_isolating(
    engine: Engine, run_pk: int, items: list[Telemetry], quarantine: Callable[[Quarantined], None]
) -> WriteCounts:
    """Write `items` in one transaction. If the store refuses a value, bisect (a transaction per
    half, recursively) so only the refused records are lost, each handed to `quarantine`.
    Errors that aren't about the values (the store is down) propagate."""
    counts = WriteCounts()
    if not items:
        return counts
    try:
        with write_transaction(engine) as conn:
            counts.add(write_telemetry(conn, run_pk, items))
        return counts
    except Exception as exc:
        if not is_bad_data(exc):
            raise
        if len(items) == 1:
            quarantine(Quarantined(items[0], _reason(exc)))
            return counts
    middle = len(items) // 2
    counts.add(write_isolating(engine, run_pk, items[:middle], quarantine))
    counts.add(write_isolating(engine, run_pk, items[middle:], quarantine))
    return counts


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
            raise ArgumentError("StoreWriter needs a store URL or engine=")
        super().__init__(
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            batch_records=CHUNK_RECORDS,
            clock=clock,
            close_timeout=close_timeout,
            thread_name="rmswatch-store",
        )
        if max_buffer < 1:
            raise ArgumentError(f"max_buffer={max_buffer!r}: must be >= 1 record")
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else make_engine(str(url))
        self._retry_max = retry_max_seconds
        self._create_schema = create_schema
        self._run_pk: int | None = None
        self._reopen = True
        self._schema_ready = False
        self._written = 0
        self._rejected = 0
        self._quarantined_total = 0
        self.quarantined: list[Quarantined] = []

    # -- Sink protocol -------------------------------------------------------------------------

    def flush(self) -> None:
        """Deliver everything buffered now (one attempt; a dead store keeps it buffered)."""
        self._deliver(force=True)

    def open(self, run: RunInfo) -> None:
        super().open(check_run(run))

    def close(self, status: RunStatus) -> None:
        super().close(safe_status(status))
        if self._rejected or self._quarantined_total:
            first = self.quarantined[0].reason if self.quarantined else "-"
            log.warning(
                "rmswatch store writer: %d records (or parts) rejected, outside the store's "
                "limits; %d quarantined, refused by the store (first: %s)",
                self._rejected,
                self._quarantined_total,
                first,
            )
        if self._owns_engine:
            self.engine.dispose()

    # -- counters -----------------------------------------------------------------------------

    @property
    def written_total(self) -> int:
        return self._written

    def stats(self) -> WriterStats:
        return WriterStats(
            self._written,
            self._dropped,
            self._buffered(),
            self._failed_attempts,
            self._last_error,
            self._rejected,
            self._quarantined_total,
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
        kept: list[Telemetry] = []
        for item in batch:
            screened, problems = screen(item)
            if problems:
                self._rejected += 1
                log.warning(
                    "rmswatch store writer: %s %s: %s",
                    describe(item),
                    "not stored" if screened is None else "stored without that part",
                    problems[0],
                )
            if screened is not None:
                kept.append(screened)
        # what goes back to the buffer on a retryable error: screened once, counted once
        batch[:] = kept

        def quarantine(entry: Quarantined) -> None:
            self._quarantine(entry)
            batch[:] = [item for item in batch if item is not entry.record]

        write_isolating(self.engine, self._run_pk, kept, quarantine)
        self._written += len(batch)

    def _quarantine(self, entry: Quarantined) -> None:
        self._quarantined_total += 1
        if len(self.quarantined) < MAX_QUARANTINED:
            self.quarantined.append(entry)
        log.error(
            "rmswatch store writer: the store refused %s, quarantined (the rest of the batch "
            "is written): %s",
            describe(entry.record),
            entry.reason,
        )

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

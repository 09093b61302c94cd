"""The alerting loop inside `rmswatch serve`: evaluate -> lifecycle -> route -> outbox -> send.

An APScheduler 3.11 BackgroundScheduler runs one tick every `evaluation.interval_seconds`
(coalesced, one at a time) and the outbox sender every `outbox.poll_seconds`. Only the leader
works: on PostgreSQL, the server holding `pg_try_advisory_lock` on a dedicated connection; on
SQLite there is one server process per file, which is always the leader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from rmswatch.alerting.delivery import DeliveryWorker
from rmswatch.alerting.lifecycle import Transition, apply_signals, utc, utcnow
from rmswatch.alerting.outbox import DeliveryReport, deliver_due
from rmswatch.alerting.receivers import Transport, requests_transport
from rmswatch.alerting.routing import dispatch
from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from rmswatch.store.retention import RetentionReport, apply_retention

log = logging.getLogger(__name__)

Evaluate = Callable[[Engine, Config, datetime], list[Signal]]
Clock = Callable[[], datetime]

# pg advisory lock key: the first 8 bytes of sha256("rmswatch.alerting.leader"), as a signed int64
LEADER_LOCK_KEY = 0x2B1E_5A0C_7D43_9F61
# Retention deletes in bulk; hourly keeps each pass small without mattering for freshness.
RETENTION_INTERVAL_SECONDS = 3600.0


def _default_evaluate(engine: Engine, config: Config, now: datetime) -> list[Signal]:
    from rmswatch.alerting.evaluate import evaluate

    return list(evaluate(engine, config, now))


class IncrementalEvaluate:
    """The real evaluator, kept across ticks so that each tick reads only what is new.

    A cold `evaluate()` re-reads the whole SLO period (30 days by default) every tick.
    """

    def __init__(self) -> None:
        self.evaluator: Any = None

    def __call__(self, engine: Engine, config: Config, now: datetime) -> list[Signal]:
        from rmswatch.alerting.evaluate import Evaluator

        if self.evaluator is None:
            self.evaluator = Evaluator(engine, config)
        return list(self.evaluator.tick(now))


@dataclass(frozen=True, slots=True)
class TickResult:
    signals: int
    transitions: list[Transition]
    notifications: int


def run_tick(
    engine: Engine, config: Config, now: datetime, evaluate: Evaluate = _default_evaluate
) -> TickResult:
    """One evaluation: signals -> alert states -> outbox, all in one transaction.

    If evaluation raises, nothing changes: a broken rule must not resolve every alert.
    """
    now = utc(now)
    signals = evaluate(engine, config, now)
    from rmswatch.store.engine import write_transaction

    # the write lock up front (SQLite BEGIN IMMEDIATE): the ingest writer shares the file
    with write_transaction(engine) as conn, Session(bind=conn) as session:
        transitions = apply_signals(session, signals, now)
        session.flush()
        notifications = dispatch(session, config, now)
        session.flush()
    for t in transitions:
        log.info("alert %s %s (job %s): %s -> %s", t.fingerprint, t.alertname, t.job,
                 t.from_state, t.to_state)  # fmt: skip
    return TickResult(len(signals), transitions, len(notifications))


class LeaderLock:
    """Session-level `pg_try_advisory_lock` on a connection of its own; SQLite: always leader.

    The lock lives as long as the connection: if the server dies or its connection drops,
    PostgreSQL releases it and another server takes over at its next tick.
    """

    def __init__(self, engine: Engine, key: int = LEADER_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self._conn: Connection | None = None
        self.single_process = engine.dialect.name != "postgresql"

    @property
    def held(self) -> bool:
        return self.single_process or self._conn is not None

    def acquire(self) -> bool:
        """True when this process is the leader (checks a held lock's connection is alive)."""
        if self.single_process:
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # noqa: BLE001 - a dead connection means the lock is gone
                log.warning("leader connection lost; leadership released")
                self._drop()
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
            )
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
            log.info("this server is now the alerting leader")
        else:
            conn.close()
        return got

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        except Exception:  # noqa: BLE001 - closing the connection releases it anyway
            pass
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # never hand a lock-holding session back to the pool
                conn.close()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class SchedulerHandle:
    """What `start_scheduler` returns; `tick()`/`deliver()` run one step now (tests, CLI)."""

    engine: Engine
    config: Config
    clock: Clock
    evaluate: Evaluate
    transport: Transport
    environ: Mapping[str, str] | None
    lock: LeaderLock
    scheduler: Any = None
    # per-receiver delivery threads while the scheduler runs (None: tick() sends inline)
    worker: DeliveryWorker | None = None
    ticks: int = 0
    deliveries: int = 0
    last_error: str = ""
    _send_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_leader(self) -> bool:
        return self.lock.held

    def tick(self) -> TickResult | None:
        """Evaluate, route and send if leader; None when another server leads."""
        try:
            if not self.lock.acquire():
                return None
            result = run_tick(self.engine, self.config, self.clock(), self.evaluate)
            self.ticks += 1
        except Exception as exc:  # a failed tick is logged and retried at the next interval
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("alert evaluation tick failed")
            return None
        if self.worker is not None:
            self.worker.wake()  # sending is the workers' job: a slow receiver can't hold the tick
        else:
            self.deliver()
        return result

    def deliver(self) -> DeliveryReport | None:
        try:
            if not self.lock.acquire():
                return None
            # the tick and the poller both send; one at a time keeps per-receiver order
            with self._send_lock:
                report = deliver_due(
                    self.engine,
                    self.config.receivers,
                    self.config.outbox,
                    clock=self.clock,
                    transport=self.transport,
                    environ=self.environ,
                )
            self.deliveries += report.delivered
            return report
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("notification delivery failed")
            return None

    def retain(self) -> RetentionReport | None:
        """Thin and expire old telemetry (store.retention); the leader alone does it."""
        try:
            if not self.lock.acquire():
                return None
            return apply_retention(self.engine, self.config.store.retention, self.clock())
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("retention pass failed")
            return None

    def poll(self) -> None:
        """The poller job: wakes the delivery threads (or sends now without them)."""
        if self.worker is None:
            self.deliver()
            return
        self.worker.wake()
        if self.lock.held:
            try:
                self.worker.warn_orphans()
            except Exception as exc:  # noqa: BLE001 - the store may be down; next poll
                self.last_error = f"{type(exc).__name__}: {exc}"

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        if self.worker is not None:
            # before the lock goes: a request in flight must not overlap the next leader's
            self.worker.stop(timeout=None if wait else 0)
            self.deliveries += self.worker.delivered
            self.worker = None
        self.lock.release()


def start_scheduler(
    engine: Engine,
    config: Config,
    *,
    clock: Clock = utcnow,
    evaluate: Evaluate | None = None,
    transport: Transport = requests_transport,
    environ: Mapping[str, str] | None = None,
    start: bool = True,
) -> SchedulerHandle:
    """Start the background alerting jobs; call `.shutdown()` on the handle to stop them."""
    from apscheduler.schedulers.background import BackgroundScheduler

    handle = SchedulerHandle(
        engine=engine,
        config=config,
        clock=clock,
        evaluate=evaluate or IncrementalEvaluate(),
        transport=transport,
        environ=environ,
        lock=LeaderLock(engine),
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    common: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    scheduler.add_job(
        handle.tick,
        "interval",
        seconds=config.evaluation.interval_seconds,
        id="rmswatch-evaluate",
        next_run_time=datetime.now(UTC),
        **common,
    )
    scheduler.add_job(
        handle.poll,
        "interval",
        seconds=config.outbox.poll_seconds,
        id="rmswatch-deliver",
        **common,
    )
    scheduler.add_job(
        handle.retain,
        "interval",
        seconds=RETENTION_INTERVAL_SECONDS,
        id="rmswatch-retention",
        **common,
    )
    handle.scheduler = scheduler
    if start:
        handle.worker = DeliveryWorker(
            engine,
            config.receivers,
            config.outbox,
            clock=clock,
            transport=transport,
            environ=environ,
            is_leader=lambda: handle.lock.held,
        ).start()
        scheduler.start()
    return handle

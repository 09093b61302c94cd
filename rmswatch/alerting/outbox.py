"""The durable notification outbox: written with the state change, delivered after, in order.

`enqueue` adds a row inside the caller's transaction (the one that changed alert state), so a
crash can't lose a notification that was decided. `deliver_due` sends per receiver, oldest
first; a failure stops that receiver (later notifications wait, keeping order) and schedules a
retry with exponential backoff, forever. Delivery is at-least-once. A receiver sees a request
twice in exactly two cases: the request timed out (`timeout_seconds`) after the receiver got it,
or the server crashed between the receiver's 2xx and our commit. The resent request is the same
bytes with the same `Idempotency-Key` header (and PagerDuty `dedup_key`, Alertmanager labels),
so receivers can drop it; a request answered 2xx in time is never sent again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rmswatch.alerting.lifecycle import utc, utcnow
from rmswatch.alerting.receivers import DeliveryError, Transport, requests_transport, send
from rmswatch.alerting.routing_config import OutboxConfig, ReceiverConfig
from rmswatch.store.engine import write_session
from rmswatch.store.models_alerting import NotificationRow

log = logging.getLogger(__name__)


def enqueue(
    session: Session,
    *,
    receiver: ReceiverConfig,
    group_key: str,
    status: str,
    fingerprints: Sequence[str],
    requests: Sequence[Any],
    now: datetime,
) -> NotificationRow:
    row = NotificationRow(
        receiver=receiver.name,
        kind=receiver.kind,
        group_key=group_key,
        status=status,
        fingerprints=list(fingerprints),
        requests=list(requests),
        requests_sent=0,
        created_at=now,
        attempts=0,
        next_attempt_at=now,
        delivered_at=None,
        last_error="",
    )
    session.add(row)
    return row


def backoff_seconds(attempts: int, policy: OutboxConfig) -> float:
    """initial, 2x initial, 4x initial, ... capped at max_backoff_seconds."""
    exponent = min(max(attempts - 1, 0), 60)
    return float(min(policy.max_backoff_seconds, policy.initial_backoff_seconds * 2.0**exponent))


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    delivered: int
    failed_attempts: int
    waiting: int


def deliver_due(
    engine: Engine,
    receivers: Sequence[ReceiverConfig],
    policy: OutboxConfig,
    *,
    clock: Callable[[], datetime] = utcnow,
    transport: Transport = requests_transport,
    environ: Mapping[str, str] | None = None,
    only: Collection[str] | None = None,
) -> DeliveryReport:
    """Send every due notification, receiver by receiver, in the order they were written.

    `only` limits the pass to those receiver names (the per-receiver delivery threads). No
    database transaction is held open while a request is in flight.
    """
    env = os.environ if environ is None else environ
    by_name = {r.name: r for r in receivers}
    delivered = failed = waiting = 0
    with Session(engine) as session:
        pending_receivers = list(
            session.scalars(
                select(NotificationRow.receiver)
                .where(NotificationRow.delivered_at.is_(None))
                .distinct()
            )
        )
    for name in sorted(pending_receivers):
        if only is not None and name not in only:
            continue
        receiver = by_name.get(name)
        with Session(engine) as session:
            rows = list(
                session.scalars(
                    select(NotificationRow)
                    .where(NotificationRow.receiver == name, NotificationRow.delivered_at.is_(None))
                    .order_by(NotificationRow.id)
                )
            )
            session.expunge_all()
        if receiver is None:
            log.warning(
                "%d notification(s) for receiver %r wait: it is no longer in the config",
                len(rows),
                name,
            )
            waiting += len(rows)
            continue
        for index, row in enumerate(rows):
            now = utc(clock())
            if utc(row.next_attempt_at) > now:
                waiting += len(rows) - index
                break
            if _deliver_one(engine, receiver, row, policy, clock, transport, env):
                delivered += 1
            else:
                failed += 1
                waiting += len(rows) - index
                break
    return DeliveryReport(delivered=delivered, failed_attempts=failed, waiting=waiting)


def _deliver_one(
    engine: Engine,
    receiver: ReceiverConfig,
    row: NotificationRow,
    policy: OutboxConfig,
    clock: Callable[[], datetime],
    transport: Transport,
    environ: Mapping[str, str],
) -> bool:
    sent = row.requests_sent
    error = ""
    for index, body in enumerate(row.requests[sent:], start=sent):
        timestamp = str(int(utc(clock()).timestamp()))
        try:
            # the same key on every attempt of this request: a retry after a timeout (the
            # receiver may have taken the first one) can be recognised and dropped
            send(receiver, body, transport=transport, environ=environ, timestamp=timestamp,
                 idempotency_key=f"rmswatch-{row.id}-{index}")  # fmt: skip
        except DeliveryError as exc:
            error = str(exc)
            break
        sent += 1
        # remember progress per request so a retry doesn't resend the accepted ones
        _update(engine, row.id, requests_sent=sent)
    now = utc(clock())
    if not error:
        _update(engine, row.id, delivered_at=now, attempts=row.attempts + 1, last_error="")
        log.info("notification %d to %s delivered (%s)", row.id, receiver.name, row.status)
        return True
    attempts = row.attempts + 1
    delay = backoff_seconds(attempts, policy)
    _update(
        engine,
        row.id,
        attempts=attempts,
        last_error=error[:2000],
        next_attempt_at=now + timedelta(seconds=delay),
    )
    log.warning(
        "notification %d to %s failed (attempt %d, retry in %.3gs): %s",
        row.id,
        receiver.name,
        attempts,
        delay,
        error,
    )
    return False


def _update(engine: Engine, row_id: int, **values: Any) -> None:
    with write_session(engine) as session:
        row = session.get(NotificationRow, row_id)
        if row is None:  # pragma: no cover - rows are never deleted while pending
            return
        for name, value in values.items():
            setattr(row, name, value)

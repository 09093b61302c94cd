"""SQLAlchemy models of alerting state: alerts, their history, silences, groups and the outbox.

Everything the scheduler needs to survive a restart lives here, so a new process neither pages
again nor forgets to resolve. Same `Base` as the run store; created by Alembic revision 0002.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rmswatch.store.models import Base

_BigId = BigInteger().with_variant(Integer, "sqlite")


class AlertRow(Base):
    """One alert identity (fingerprint) and its current state; episodes live in `alert_events`."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(32), unique=True)
    alertname: Mapped[str] = mapped_column(String(256), index=True)
    job: Mapped[str] = mapped_column(String(256), index=True)
    # the run the latest signal came from; not part of the fingerprint (see lifecycle.py)
    run_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    severity: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # inactive | pending | firing | resolved
    state: Mapped[str] = mapped_column(String(16), index=True)
    value: Mapped[float | None] = mapped_column(Float)
    for_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    active_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(256))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # ids of the silences and fingerprints of the inhibiting alerts at the last tick
    silenced_by: Mapped[list[Any]] = mapped_column(JSON, default=list)
    inhibited_by: Mapped[list[Any]] = mapped_column(JSON, default=list)


class AlertEventRow(Base):
    """A state change of an alert (or an acknowledgement): the history views read these."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    alertname: Mapped[str] = mapped_column(String(256))
    job: Mapped[str] = mapped_column(String(256), index=True)
    run_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    severity: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    from_state: Mapped[str] = mapped_column(String(16))
    # pending | firing | resolved | inactive | acknowledged
    to_state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="")


class AlertFiringRow(Base):
    """One firing of an alert: the run it was about, when it started and ended, its peak value.

    An alert's identity leaves run_id out, so one alert row spans every run of a job; its
    firings don't: when the run behind a firing alert changes, that firing ends and the new
    run's begins. `notified_at` is when a receiver was first told it fired (routing uses it to
    deliver a firing that ended before its group was flushed).
    """

    __tablename__ = "alert_firings"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    alertname: Mapped[str] = mapped_column(String(256))
    job: Mapped[str] = mapped_column(String(256), index=True)
    run_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    severity: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    peak_value: Mapped[float | None] = mapped_column(Float)
    last_value: Mapped[float | None] = mapped_column(Float)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SilenceRow(Base):
    """Mutes notifications of alerts matching every matcher between starts_at and ends_at."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # [{"name": ..., "op": "=|!=|=~|!~", "value": ...}, ...]
    matchers: Mapped[list[Any]] = mapped_column(JSON)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    author: Mapped[str] = mapped_column(String(256))
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expired_by: Mapped[str | None] = mapped_column(String(256))


class AlertGroupRow(Base):
    """Alertmanager's aggregation group, persisted: what this receiver was last told, and when."""

    __tablename__ = "alert_groups"
    __table_args__ = (UniqueConstraint("receiver", "group_key", name="uq_alert_groups"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    receiver: Mapped[str] = mapped_column(String(256))
    group_key: Mapped[str] = mapped_column(String(1024))
    group_labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_flush_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # fingerprints the receiver was last told are firing: their resolution is owed to it
    notified_firing: Mapped[list[Any]] = mapped_column(JSON, default=list)


class NotificationRow(Base):
    """The durable outbox: written with the state change, sent later, marked delivered once.

    `requests` are the HTTP bodies to POST in order (PagerDuty takes one event per alert);
    secrets (PagerDuty routing key, HMAC signature) are added at send time, never stored.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    receiver: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    group_key: Mapped[str] = mapped_column(String(1024))
    # firing | resolved (Alertmanager's group status)
    status: Mapped[str] = mapped_column(String(16))
    fingerprints: Mapped[list[Any]] = mapped_column(JSON, default=list)
    requests: Mapped[list[Any]] = mapped_column(JSON)
    # how many of `requests` have been accepted, so a retry resumes after the last one
    requests_sent: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, default="")


Index("ix_notifications_pending", NotificationRow.receiver, NotificationRow.delivered_at)

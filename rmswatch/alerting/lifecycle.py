"""Alert lifecycle: signals from evaluation -> pending / firing / resolved alerts in the store.

An alert's identity is its fingerprint: alertname + job + the other non-empty labels, *without*
`run_id`, so a job that is retried or resumed under a new run id keeps the same alert (one page,
one resolution) instead of a fresh page per attempt. The latest run id is kept on the alert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rmswatch._validation import ArgumentError
from rmswatch.alerting.signals import Signal
from rmswatch.store.engine import write_session
from rmswatch.store.models_alerting import AlertEventRow, AlertFiringRow, AlertRow

# Labels that describe an attempt, not the problem: they never change the fingerprint.
FINGERPRINT_EXCLUDED_LABELS: frozenset[str] = frozenset({"run_id"})

LIVE_STATES = ("pending", "firing")


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time in alerting is aware UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def identity_labels(signal: Signal) -> dict[str, str]:
    """The labels that identify the alert: alertname, severity and every non-empty label
    except run_id (empty labels are absent labels, as in Prometheus)."""
    labels = {
        str(k): str(v)
        for k, v in signal.labels.items()
        if v not in ("", None) and k not in FINGERPRINT_EXCLUDED_LABELS
    }
    labels["alertname"] = signal.alertname
    labels["severity"] = signal.severity
    return dict(sorted(labels.items()))


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable 16-hex-digit hash of a label set (order-independent)."""
    digest = hashlib.sha256()
    for name, value in sorted(labels.items()):
        digest.update(name.encode())
        digest.update(b"\xff")
        digest.update(value.encode())
        digest.update(b"\xff")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Transition:
    fingerprint: str
    alertname: str
    job: str
    run_id: str
    from_state: str
    to_state: str
    time: datetime


def _merge(signals: Iterable[Signal]) -> dict[str, tuple[Signal, dict[str, str]]]:
    """One signal per fingerprint: two runs of one job reporting the same problem are one alert,
    active if either is; the active (latest listed) one supplies run id and annotations."""
    merged: dict[str, tuple[Signal, dict[str, str]]] = {}
    for signal in signals:
        labels = identity_labels(signal)
        fp = fingerprint(labels)
        previous = merged.get(fp)
        if previous is None or signal.active or not previous[0].active:
            merged[fp] = (signal, labels)
    return merged


def apply_signals(
    session: Session, signals: Iterable[Signal], now: datetime, *, resolve_missing: bool = True
) -> list[Transition]:
    """Advance every alert by one evaluation; returns the state changes (also recorded as events).

    With `resolve_missing`, a pending or firing alert that no signal mentions this tick is
    treated as inactive: the evaluator reports conditions, and a condition that is no longer
    reported (its run finished, its rule was removed) no longer holds.
    """
    now = utc(now)
    merged = _merge(signals)
    rows = {
        row.fingerprint: row
        for row in session.scalars(
            select(AlertRow).where(
                AlertRow.fingerprint.in_(list(merged)) | AlertRow.state.in_(LIVE_STATES)
            )
        )
    }
    transitions: list[Transition] = []
    open_firings = {
        f.fingerprint: f
        for f in session.scalars(
            select(AlertFiringRow).where(
                AlertFiringRow.ended_at.is_(None), AlertFiringRow.fingerprint.in_(list(rows))
            )
        )
    }

    def move(row: AlertRow, to_state: str, detail: str = "") -> None:
        transitions.append(
            Transition(
                row.fingerprint, row.alertname, row.job, row.run_id, row.state, to_state, now
            )
        )
        session.add(_event(row, to_state, now, detail))
        row.state = to_state
        if to_state == "firing":
            open_firings[row.fingerprint] = _open_firing(session, row, now)
        elif to_state == "resolved" and row.fingerprint in open_firings:
            open_firings.pop(row.fingerprint).ended_at = now

    for fp, (signal, labels) in merged.items():
        row = rows.get(fp)
        if row is None:
            if not signal.active:
                continue
            row = AlertRow(
                fingerprint=fp,
                alertname=signal.alertname,
                job=labels.get("job", ""),
                severity=signal.severity,
                state="inactive",
                last_evaluated_at=now,
                silenced_by=[],
                inhibited_by=[],
            )
            session.add(row)
            rows[fp] = row
        row.last_evaluated_at = now
        if signal.active:
            # the firing alert's description follows the latest numbers; the identity does not
            run_id = str(signal.labels.get("run_id", "") or "")
            firing = open_firings.get(fp)
            if firing is not None and firing.run_id != run_id:
                # the same alert, now about another run of the job: that run's firing begins
                firing.ended_at = now
                open_firings[fp] = firing = _open_firing(session, row, now, notified=firing)
                firing.run_id = run_id
            row.run_id = run_id
            row.value = signal.value
            row.labels = labels
            row.annotations = dict(signal.annotations)
            row.for_seconds = signal.for_seconds
            _advance_active(row, now, move)
            if fp in open_firings:
                _record_value(open_firings[fp], row)
        else:
            if row.state in LIVE_STATES:
                # an inactive signal from a later run must not move an episode to that run
                row.value = signal.value
            _advance_inactive(row, now, move)

    if resolve_missing:
        for fp, row in rows.items():
            if fp not in merged and row.state in LIVE_STATES:
                row.last_evaluated_at = now
                _advance_inactive(row, now, move, detail="no longer reported by evaluation")
    return transitions


def _event(row: AlertRow, to_state: str, now: datetime, detail: str = "") -> AlertEventRow:
    return AlertEventRow(
        fingerprint=row.fingerprint,
        alertname=row.alertname,
        job=row.job,
        run_id=row.run_id,
        severity=row.severity,
        time=now,
        from_state=row.state,
        to_state=to_state,
        value=row.value,
        detail=detail,
    )


def _open_firing(
    session: Session, row: AlertRow, now: datetime, notified: AlertFiringRow | None = None
) -> AlertFiringRow:
    firing = AlertFiringRow(
        fingerprint=row.fingerprint,
        alertname=row.alertname,
        job=row.job,
        run_id=row.run_id,
        severity=row.severity,
        labels=dict(row.labels or {}),
        annotations=dict(row.annotations or {}),
        started_at=now,
        ended_at=None,
        peak_value=row.value,
        last_value=row.value,
        # a firing that continues under a new run was already announced with the alert
        notified_at=notified.notified_at if notified is not None else None,
    )
    session.add(firing)
    return firing


def _record_value(firing: AlertFiringRow, row: AlertRow) -> None:
    if row.value is not None and (firing.peak_value is None or row.value > firing.peak_value):
        firing.peak_value = row.value
    firing.last_value = row.value
    firing.annotations = dict(row.annotations or {})
    firing.labels = dict(row.labels or {})


def _advance_active(row: AlertRow, now: datetime, move: _Move) -> None:
    if row.state in ("inactive", "resolved"):
        row.active_since = now
        row.starts_at = None
        row.ends_at = None
        row.acknowledged_by = None
        row.acknowledged_at = None
        move(row, "pending")
    if row.state == "pending":
        assert row.active_since is not None
        if (now - utc(row.active_since)).total_seconds() >= row.for_seconds:
            row.starts_at = now
            move(row, "firing")


def _advance_inactive(row: AlertRow, now: datetime, move: _Move, detail: str = "") -> None:
    if row.state == "pending":
        row.active_since = None
        move(row, "inactive", detail)
    elif row.state == "firing":
        row.ends_at = now
        move(row, "resolved", detail)


class _Move(Protocol):
    def __call__(self, row: AlertRow, to_state: str, detail: str = "") -> None: ...


def acknowledge_alert(
    engine: Engine, fingerprint: str, by: str, *, now: datetime | None = None
) -> bool:
    """Mark a pending or firing alert as acknowledged by `by`; it then stops repeating.

    Returns False when no live alert has that fingerprint. The acknowledgement lasts until the
    alert resolves; a new episode must be acknowledged again.
    """
    if not by.strip():
        raise ArgumentError("acknowledge_alert: `by` must name who acknowledged")
    moment = utc(now or utcnow())
    with write_session(engine) as session:
        row = session.scalars(
            select(AlertRow).where(
                AlertRow.fingerprint == fingerprint, AlertRow.state.in_(LIVE_STATES)
            )
        ).one_or_none()
        if row is None:
            return False
        row.acknowledged_by = by
        row.acknowledged_at = moment
        session.add(_event(row, "acknowledged", moment, f"acknowledged by {by}"))
        return True

"""Alert state for the app's on-call and history views: alerts, their history, silences and
the notification outbox. Notification bodies are never returned: the views show delivery
state, not payloads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from rmswatch.store.models_alerting import AlertEventRow, AlertRow, NotificationRow, SilenceRow
from rmswatch.store.queries._common import TimeLike, _utc, as_datetime

ALERT_COLUMNS = [
    "fingerprint", "alertname", "job", "run_id", "severity", "state", "value", "active_since",
    "starts_at", "ends_at", "summary", "runbook_url", "dashboard_url", "acknowledged_by",
    "acknowledged_at", "silenced", "inhibited", "labels", "annotations",
]  # fmt: skip


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def active_alerts(
    engine: Engine, *, job: str | None = None, include_pending: bool = True
) -> pd.DataFrame:
    """Firing (and pending) alerts, pages first, oldest first within a severity."""
    states = ["firing", "pending"] if include_pending else ["firing"]
    query = select(AlertRow).where(AlertRow.state.in_(states))
    if job is not None:
        query = query.where(AlertRow.job == job)
    frame = _alert_frame(_all(engine, query))
    order = frame.assign(
        _not_page=frame["severity"] != "page", _not_firing=frame["state"] != "firing"
    ).sort_values(["_not_page", "_not_firing", "active_since"], kind="stable")
    return frame.loc[order.index].reset_index(drop=True)


def _alert_frame(alerts: list[AlertRow]) -> pd.DataFrame:
    rows = [
        {
            "fingerprint": a.fingerprint,
            "alertname": a.alertname,
            "job": a.job,
            "run_id": a.run_id,
            "severity": a.severity,
            "state": a.state,
            "value": a.value,
            "active_since": _aware(a.active_since),
            "starts_at": _aware(a.starts_at),
            "ends_at": _aware(a.ends_at),
            "summary": (a.annotations or {}).get("summary", ""),
            "runbook_url": (a.annotations or {}).get("runbook_url", ""),
            "dashboard_url": (a.annotations or {}).get("dashboard_url", ""),
            "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": _aware(a.acknowledged_at),
            "silenced": bool(a.silenced_by),
            "inhibited": bool(a.inhibited_by),
            "labels": dict(a.labels or {}),
            "annotations": dict(a.annotations or {}),
        }
        for a in alerts
    ]
    return _utc(
        pd.DataFrame(rows, columns=ALERT_COLUMNS),
        "active_since",
        "starts_at",
        "ends_at",
        "acknowledged_at",
    )


def resolved_alerts(engine: Engine, since: TimeLike) -> pd.DataFrame:
    """Alerts that resolved at or after `since`, most recent first: what paged the on-call
    engineer while they were away, with its runbook."""
    query = select(AlertRow).where(
        AlertRow.state == "resolved", AlertRow.ends_at >= as_datetime(since)
    )
    frame = _alert_frame(_all(engine, query))
    order = frame.assign(_not_page=frame["severity"] != "page")
    order = order.sort_values(["ends_at"], ascending=False, kind="stable")
    return frame.loc[order.sort_values("_not_page", kind="stable").index].reset_index(drop=True)


def alerts_for_run(engine: Engine, run_id: str) -> pd.DataFrame:
    """Every alert (any state) that a run raised, oldest first: the postmortem's alert list.

    Alerts are per job (run_id is not in the fingerprint), so this finds them through the
    run's history events, with the alert's state as it is now.
    """
    fingerprints = select(AlertEventRow.fingerprint).where(AlertEventRow.run_id == run_id)
    found = _all(engine, select(AlertRow).where(AlertRow.fingerprint.in_(fingerprints)))
    frame = _alert_frame(found)
    return frame.sort_values("active_since", kind="stable").reset_index(drop=True)


def alerts_named(engine: Engine, alertnames: Sequence[str]) -> pd.DataFrame:
    """Every alert (any state) with one of these alertnames, newest first: e.g. what each SLO
    raised (its `slo` label says which)."""
    query = select(AlertRow).where(AlertRow.alertname.in_(list(alertnames)))
    frame = _alert_frame(_all(engine, query))
    return frame.sort_values("active_since", ascending=False, kind="stable").reset_index(drop=True)


def _all(engine: Engine, query: Select[Any]) -> list[Any]:
    """ORM rows, detached: plain attribute reads after the session closes."""
    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


EVENT_COLUMNS = [
    "time", "fingerprint", "alertname", "job", "run_id", "severity", "from_state", "to_state",
    "value", "detail",
]  # fmt: skip


def alert_history(
    engine: Engine,
    *,
    run_id: str | None = None,
    job: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
) -> pd.DataFrame:
    """State changes and acknowledgements, oldest first (a run's postmortem timeline)."""
    query = select(AlertEventRow).order_by(AlertEventRow.time, AlertEventRow.id)
    if run_id is not None:
        query = query.where(AlertEventRow.run_id == run_id)
    if job is not None:
        query = query.where(AlertEventRow.job == job)
    if since is not None:
        query = query.where(AlertEventRow.time >= as_datetime(since))
    if until is not None:
        query = query.where(AlertEventRow.time <= as_datetime(until))
    events = _all(engine, query)
    rows = [{c: getattr(e, c) for c in EVENT_COLUMNS} for e in events]
    return _utc(pd.DataFrame(rows, columns=EVENT_COLUMNS), "time")


SILENCE_COLUMNS = [
    "id", "state", "matchers", "starts_at", "ends_at", "author", "comment", "created_at",
]  # fmt: skip


def silences(
    engine: Engine, *, include_expired: bool = False, now: TimeLike | None = None
) -> pd.DataFrame:
    """Silences with their state (pending / active / expired), newest first."""
    moment = as_datetime(now if now is not None else datetime.now(UTC))
    query = select(SilenceRow).order_by(SilenceRow.id.desc())
    if not include_expired:
        query = query.where(SilenceRow.ends_at > moment)
    found = _all(engine, query)
    rows = []
    for s in found:
        starts, ends = _aware(s.starts_at), _aware(s.ends_at)
        assert starts is not None and ends is not None
        state = "pending" if moment < starts else ("active" if moment < ends else "expired")
        shown = ", ".join(f'{m["name"]}{m["op"]}"{m["value"]}"' for m in s.matchers)
        rows.append(
            {"id": s.id, "state": state, "matchers": shown, "starts_at": starts, "ends_at": ends,
             "author": s.author, "comment": s.comment, "created_at": _aware(s.created_at)}
        )  # fmt: skip
    return _utc(pd.DataFrame(rows, columns=SILENCE_COLUMNS), "starts_at", "ends_at", "created_at")


NOTIFICATION_COLUMNS = [
    "id", "receiver", "kind", "group_key", "status", "fingerprints", "created_at", "attempts",
    "next_attempt_at", "delivered_at", "last_error",
]  # fmt: skip


def notifications(
    engine: Engine,
    *,
    receiver: str | None = None,
    undelivered_only: bool = False,
    limit: int = 200,
) -> pd.DataFrame:
    """The outbox, newest first: what was sent where, and what is still waiting and why."""
    query = select(NotificationRow).order_by(NotificationRow.id.desc()).limit(limit)
    if receiver is not None:
        query = query.where(NotificationRow.receiver == receiver)
    if undelivered_only:
        query = query.where(NotificationRow.delivered_at.is_(None))
    found = _all(engine, query)
    rows = [{c: getattr(n, c) for c in NOTIFICATION_COLUMNS} for n in found]
    return _utc(
        pd.DataFrame(rows, columns=NOTIFICATION_COLUMNS),
        "created_at",
        "next_attempt_at",
        "delivered_at",
    )

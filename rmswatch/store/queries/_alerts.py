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

from rmswatch.store.models_alerting import (
    AlertEventRow,
    AlertFiringRow,
    AlertRow,
    NotificationRow,
    SilenceRow,
)
from rmswatch.store.queries._common import TimeLike, _utc, as_datetime

ALERT_COLUMNS = [
    "fingerprint", "alertname", "job", "run_id", "severity", "state", "value", "active_since",
    "starts_at", "ends_at", "summary", "runbook_url", "dashboard_url", "acknowledged_by",
    "acknowledged_at", "silenced", "inhibited", "labels", "annotations", "peak_value",
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


_ALERT_TIMES = ("active_since", "starts_at", "ends_at", "acknowledged_at")


def _shared(source: AlertRow | AlertFiringRow) -> dict[str, Any]:
    """The columns an alert and one of its firings show alike: identity, labels, texts."""
    annotations = dict(source.annotations or {})
    return {
        "fingerprint": source.fingerprint,
        "alertname": source.alertname,
        "job": source.job,
        "run_id": source.run_id,
        "severity": source.severity,
        "summary": annotations.get("summary", ""),
        "runbook_url": annotations.get("runbook_url", ""),
        "dashboard_url": annotations.get("dashboard_url", ""),
        "labels": dict(source.labels or {}),
        "annotations": annotations,
    }


def _alert_frame(alerts: list[AlertRow]) -> pd.DataFrame:
    rows = [
        {
            **_shared(a),
            "state": a.state,
            "value": a.value,
            "active_since": _aware(a.active_since),
            "starts_at": _aware(a.starts_at),
            "ends_at": _aware(a.ends_at),
            "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": _aware(a.acknowledged_at),
            "silenced": bool(a.silenced_by),
            "inhibited": bool(a.inhibited_by),
            "peak_value": a.value,
        }
        for a in alerts
    ]
    return _utc(pd.DataFrame(rows, columns=ALERT_COLUMNS), *_ALERT_TIMES)


def _firing_frame(firings: list[AlertFiringRow], alerts: Sequence[AlertRow]) -> pd.DataFrame:
    """One row per firing, in the columns of `active_alerts`: the firing's own run, start, end
    and peak value; acknowledgement and suppression from the alert while it is still live."""
    by_fp = {a.fingerprint: a for a in alerts}
    rows = []
    for f in firings:
        alert = by_fp.get(f.fingerprint)
        live = f.ended_at is None and alert is not None
        rows.append(
            {
                **_shared(f),
                "state": "firing" if f.ended_at is None else "resolved",
                "value": f.last_value,
                "active_since": _aware(f.started_at),
                "starts_at": _aware(f.started_at),
                "ends_at": _aware(f.ended_at),
                "acknowledged_by": alert.acknowledged_by if live and alert else None,
                "acknowledged_at": _aware(alert.acknowledged_at) if live and alert else None,
                "silenced": bool(alert.silenced_by) if live and alert else False,
                "inhibited": bool(alert.inhibited_by) if live and alert else False,
                "peak_value": f.peak_value,
            }
        )
    return _utc(pd.DataFrame(rows, columns=ALERT_COLUMNS), *_ALERT_TIMES)


def _firings(engine: Engine, query: Select[Any]) -> pd.DataFrame:
    firings = _all(engine, query)
    fingerprints = sorted({f.fingerprint for f in firings})
    alerts = _all(engine, select(AlertRow).where(AlertRow.fingerprint.in_(fingerprints)))
    return _firing_frame(firings, alerts)


def resolved_alerts(engine: Engine, since: TimeLike) -> pd.DataFrame:
    """Firings that ended at or after `since`, pages first, most recent first: what paged the
    on-call engineer while they were away, each under the run it was about, with its peak
    value and runbook. An alert that fired twice is listed twice."""
    query = select(AlertFiringRow).where(AlertFiringRow.ended_at >= as_datetime(since))
    frame = _firings(engine, query)
    order = frame.assign(_not_page=frame["severity"] != "page")
    order = order.sort_values(["ends_at"], ascending=False, kind="stable")
    return frame.loc[order.sort_values("_not_page", kind="stable").index].reset_index(drop=True)


def alerts_for_run(engine: Engine, run_id: str) -> pd.DataFrame:
    """Every firing about a run, oldest first, plus its alerts that went pending and never
    fired (the postmortem's alert list): each firing with its own start, end and peak."""
    fired = _firings(engine, select(AlertFiringRow).where(AlertFiringRow.run_id == run_id))
    fingerprints = select(AlertEventRow.fingerprint).where(
        AlertEventRow.run_id == run_id, AlertEventRow.to_state == "pending"
    )
    never = select(AlertRow).where(
        AlertRow.fingerprint.in_(fingerprints),
        AlertRow.fingerprint.not_in(list(fired["fingerprint"])),
    )
    pending = _alert_frame(_all(engine, never))
    parts = [f for f in (fired, pending) if not f.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else fired
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

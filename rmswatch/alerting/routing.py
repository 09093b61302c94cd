"""Alertmanager's dispatcher, built in: route tree, inhibition, silences, aggregation groups.

`dispatch(session, config, now)` runs once per evaluation tick after the lifecycle, in the same
transaction, and writes the notifications that are due to the outbox. Group state lives in
`alert_groups`, so a restarted scheduler knows what each receiver has already been told.
Times are quantised to the tick: a group_wait of 30s with a 10s tick flushes at the first tick
at least 30s after the group appeared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from rmswatch.alerting.lifecycle import utc
from rmswatch.alerting.outbox import enqueue
from rmswatch.alerting.receivers import ZERO_TIME, render_requests, webhook_message
from rmswatch.alerting.routing_config import (
    DEFAULT_GROUP_INTERVAL,
    DEFAULT_GROUP_WAIT,
    DEFAULT_REPEAT_INTERVAL,
    InhibitRuleConfig,
    ReceiverConfig,
    RouteConfig,
    matches_all,
)
from rmswatch.alerting.silences import Silence, active_silences
from rmswatch.config import Config
from rmswatch.store.models_alerting import (
    AlertFiringRow,
    AlertGroupRow,
    AlertRow,
    NotificationRow,
)

# How long after its end a firing nobody was told about is still delivered (see dispatch).
UNHEARD_HORIZON = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class MatchedRoute:
    """A route node with its inherited settings resolved."""

    key: str
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float


def _resolve(node: RouteConfig, parent: MatchedRoute | None, key: str) -> MatchedRoute:
    def pick(own: Any, inherited: Any, default: Any) -> Any:
        if own is not None:
            return own
        return inherited if parent is not None else default

    return MatchedRoute(
        key=key,
        receiver=pick(node.receiver, parent and parent.receiver, ""),
        group_by=pick(node.group_by, parent and parent.group_by, ("job",)),
        group_wait=pick(node.group_wait, parent and parent.group_wait, DEFAULT_GROUP_WAIT),
        group_interval=pick(
            node.group_interval, parent and parent.group_interval, DEFAULT_GROUP_INTERVAL
        ),
        repeat_interval=pick(
            node.repeat_interval, parent and parent.repeat_interval, DEFAULT_REPEAT_INTERVAL
        ),
    )


def match_routes(route: RouteConfig, labels: Mapping[str, str]) -> list[MatchedRoute]:
    """Alertmanager's walk: depth first, the first matching child wins unless it says
    `continue`; a node none of whose children match handles the alert itself."""

    def walk(node: RouteConfig, parent: MatchedRoute | None, key: str) -> list[MatchedRoute]:
        here = _resolve(node, parent, key)
        found: list[MatchedRoute] = []
        for child in node.routes:
            if not matches_all(child.matchers, labels):
                continue
            child_key = key + "/{" + ",".join(str(m) for m in child.matchers) + "}"
            found.extend(walk(child, here, child_key))
            if not child.continue_:
                break
        return found or [here]

    return walk(route, None, "{}")


def group_labels_for(route: MatchedRoute, labels: Mapping[str, str]) -> dict[str, str]:
    if "..." in route.group_by:
        return dict(sorted(labels.items()))
    return {name: labels[name] for name in sorted(route.group_by) if labels.get(name)}


def group_key(route: MatchedRoute, group_labels: Mapping[str, str]) -> str:
    """Alertmanager's format: `{route path}:{group labels}`."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
    return f"{route.key}:{{{inner}}}"


def inhibitors(
    target: AlertRow, firing: Sequence[AlertRow], rules: Sequence[InhibitRuleConfig]
) -> list[str]:
    """Fingerprints of the firing alerts that inhibit `target` (silenced sources still count,
    as in Alertmanager; an alert never inhibits itself)."""
    found: list[str] = []
    for rule in rules:
        if not matches_all(rule.target_matchers, target.labels):
            continue
        for source in firing:
            if source.fingerprint == target.fingerprint:
                continue
            if matches_all(rule.source_matchers, source.labels) and all(
                source.labels.get(name, "") == target.labels.get(name, "") for name in rule.equal
            ):
                found.append(source.fingerprint)
    return sorted(set(found))


def oncall_url(external_url: str, alert: AlertRow, now: datetime) -> str:
    """The run's on-call view around the alert: an hour before it started until now/its end."""
    start = utc(alert.starts_at or alert.active_since or now) - timedelta(hours=1)
    end = utc(alert.ends_at) + timedelta(minutes=15) if alert.ends_at else now
    query = {"job": alert.job, "run": alert.run_id, "from": _iso(start), "to": _iso(end)}
    return f"{external_url.rstrip('/')}/oncall?{urlencode(query)}"


def _iso(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def render_alert(alert: AlertRow, status: str, external_url: str, now: datetime) -> dict[str, Any]:
    """One alert as Alertmanager's webhook shows it; run_id and value go in annotations
    because they describe this occurrence, not the alert's identity."""
    annotations = {str(k): str(v) for k, v in (alert.annotations or {}).items()}
    if alert.run_id:
        annotations.setdefault("run_id", alert.run_id)
    if alert.value is not None:
        annotations.setdefault("value", f"{alert.value:.6g}")
    generator = annotations.get("dashboard_url") or oncall_url(external_url, alert, now)
    ends = alert.ends_at or now
    return {
        "status": status,
        "labels": dict(alert.labels),
        "annotations": dict(sorted(annotations.items())),
        "startsAt": _iso(alert.starts_at or alert.active_since or now),
        "endsAt": _iso(ends) if status == "resolved" else ZERO_TIME,
        "generatorURL": generator,
        "fingerprint": alert.fingerprint,
    }


@dataclass
class _Group:
    route: MatchedRoute
    labels: dict[str, str]
    firing: list[AlertRow] = field(default_factory=list)
    muted: list[AlertRow] = field(default_factory=list)
    resolved: list[AlertRow] = field(default_factory=list)
    # firings that began and ended between two flushes of this group: told as firing, then
    # resolved, in one flush (Alertmanager drops them; we don't, see docs/alerting-routing.md)
    unheard: list[AlertRow] = field(default_factory=list)


def external_url_of(config: Config) -> str:
    return config.server.external_url or f"http://{config.server.host}:{config.server.port}"


def dispatch(session: Session, config: Config, now: datetime) -> list[NotificationRow]:
    """Mark silences and inhibitions on alerts, then flush the groups that are due."""
    now = utc(now)
    if config.route is None:
        return []
    receivers = {r.name: r for r in config.receivers}
    groups_in_store = {
        (row.receiver, row.group_key): row for row in session.scalars(select(AlertGroupRow))
    }
    owed = {fp for row in groups_in_store.values() for fp in row.notified_firing}
    alerts = list(
        session.scalars(
            select(AlertRow)
            .where((AlertRow.state == "firing") | AlertRow.fingerprint.in_(sorted(owed)))
            .order_by(AlertRow.id)
        )
    )
    firing = [a for a in alerts if a.state == "firing"]
    silences = active_silences(session, now)
    for alert in firing:
        _mark_suppression(alert, firing, silences, config.inhibit_rules, now)

    groups: dict[tuple[str, str], _Group] = {}
    for alert in alerts:
        for route in match_routes(config.route, alert.labels):
            labels = group_labels_for(route, alert.labels)
            key = (route.receiver, group_key(route, labels))
            group = groups.setdefault(key, _Group(route, labels))
            stored = groups_in_store.get(key)
            told_firing = stored is not None and alert.fingerprint in stored.notified_firing
            if alert.state != "firing":
                if told_firing:
                    # a resolution is owed even if the alert is silenced now: an incident left
                    # open in PagerDuty is worse than one extra "resolved" message
                    group.resolved.append(alert)
            elif alert.silenced_by or alert.inhibited_by:
                if told_firing:
                    group.muted.append(alert)
            else:
                group.firing.append(alert)
    by_fp = {a.fingerprint: a for a in alerts}
    for past in _unheard_firings(session, now):
        owner = (
            by_fp.get(past.fingerprint)
            or session.scalars(
                select(AlertRow).where(AlertRow.fingerprint == past.fingerprint)
            ).one_or_none()
        )
        if owner is None or owner.silenced_by or owner.inhibited_by:
            past.notified_at = now  # muted at its end: nobody is owed it
            continue
        episode = _episode(owner, past)
        for route in match_routes(config.route, episode.labels):
            labels = group_labels_for(route, episode.labels)
            key = (route.receiver, group_key(route, labels))
            groups.setdefault(key, _Group(route, labels)).unheard.append(episode)

    external_url = external_url_of(config)
    written: list[NotificationRow] = []
    for key, stored in groups_in_store.items():
        if key not in groups:
            session.delete(stored)  # the route tree changed or every alert is gone
    for key, group in groups.items():
        receiver = receivers.get(group.route.receiver)
        if receiver is None:
            continue
        row = groups_in_store.get(key)
        if row is None:
            if not group.firing and not group.unheard:
                continue
            row = AlertGroupRow(
                receiver=key[0],
                group_key=key[1],
                group_labels=group.labels,
                created_at=now,
                next_flush_at=now + timedelta(seconds=group.route.group_wait),
                last_notified_at=None,
                notified_firing=[],
            )
            session.add(row)
        if now < utc(row.next_flush_at):
            continue
        for notification in _flush(session, row, group, receiver, external_url, now):
            written.append(notification)
            _mark_notified(session, notification.fingerprints, now)
        if not row.notified_firing and not group.firing:
            session.delete(row)
    return written


def _unheard_firings(session: Session, now: datetime) -> list[AlertFiringRow]:
    return list(
        session.scalars(
            select(AlertFiringRow)
            .where(
                AlertFiringRow.notified_at.is_(None),
                AlertFiringRow.ended_at.is_not(None),
                AlertFiringRow.ended_at >= now - UNHEARD_HORIZON,
            )
            .order_by(AlertFiringRow.id)
        )
    )


def _episode(alert: AlertRow, firing: AlertFiringRow) -> AlertRow:
    """A detached alert as it was during one past firing (never added to the session)."""
    return AlertRow(
        fingerprint=alert.fingerprint,
        alertname=alert.alertname,
        job=alert.job,
        run_id=firing.run_id,
        severity=alert.severity,
        labels=dict(firing.labels or alert.labels),
        annotations=dict(firing.annotations or alert.annotations),
        state="resolved",
        value=firing.peak_value,
        active_since=firing.started_at,
        starts_at=firing.started_at,
        ends_at=firing.ended_at,
        acknowledged_at=None,
    )


def _mark_notified(session: Session, fingerprints: Sequence[str], now: datetime) -> None:
    for firing in session.scalars(
        select(AlertFiringRow).where(
            AlertFiringRow.fingerprint.in_(list(fingerprints)),
            AlertFiringRow.notified_at.is_(None),
        )
    ):
        firing.notified_at = now


def _mark_suppression(
    alert: AlertRow,
    firing: Sequence[AlertRow],
    silences: Sequence[Silence],
    rules: Sequence[InhibitRuleConfig],
    now: datetime,
) -> None:
    silenced = sorted(s.id for s in silences if s.mutes(alert.labels, now))
    inhibited = inhibitors(alert, firing, rules)
    # assign only on change, so an unchanged alert costs no UPDATE
    if list(alert.silenced_by or []) != silenced:
        alert.silenced_by = silenced
    if list(alert.inhibited_by or []) != inhibited:
        alert.inhibited_by = inhibited


def _flush(
    session: Session,
    row: AlertGroupRow,
    group: _Group,
    receiver: ReceiverConfig,
    external_url: str,
    now: datetime,
) -> list[NotificationRow]:
    """Alertmanager's dedup stage: notify when something new fires, something resolves, or
    the repeat interval has passed (acknowledged alerts alone don't repeat). Firings that
    ended unheard go out first as firing, then as resolved: two notifications, in order."""
    row.next_flush_at = now + timedelta(seconds=group.route.group_interval)
    told = set(row.notified_firing)
    firing_fps = [a.fingerprint for a in group.firing]
    repeat = group.route.repeat_interval
    if receiver.kind == "alertmanager":
        repeat = min(repeat, receiver.resend_seconds)
    # Alertmanager needs its alerts re-posted; people don't need acknowledged alerts repeated
    wants_repeat = receiver.kind == "alertmanager" or any(
        a.acknowledged_at is None for a in group.firing
    )
    repeat_due = (
        bool(group.firing)
        and wants_repeat
        and row.last_notified_at is not None
        and (now - utc(row.last_notified_at)).total_seconds() >= repeat
    )
    changed = bool(set(firing_fps) - told) or bool(group.resolved) or bool(group.unheard)
    send_resolved = [a for a in group.resolved if receiver.send_resolved]
    written: list[NotificationRow] = []

    def send(alerts: list[dict[str, Any]]) -> None:
        message = webhook_message(
            receiver=receiver.name,
            group_key=row.group_key,
            group_labels=row.group_labels,
            alerts=alerts,
            external_url=external_url,
            max_alerts=receiver.max_alerts,
        )
        written.append(
            enqueue(
                session,
                receiver=receiver,
                group_key=row.group_key,
                status=message["status"],
                fingerprints=[a["fingerprint"] for a in alerts],
                requests=render_requests(receiver, message),
                now=now,
            )
        )

    if group.unheard:
        firing_now = [render_alert(a, "firing", external_url, now) for a in group.firing]
        send(firing_now + [_as_firing(render_alert(a, "firing", external_url, now))
                           for a in group.unheard])  # fmt: skip
        if receiver.send_resolved:
            send([render_alert(a, "resolved", external_url, now) for a in group.unheard])
        if send_resolved:
            send([render_alert(a, "resolved", external_url, now) for a in send_resolved])
        row.last_notified_at = now
    elif (changed or repeat_due) and (group.firing or send_resolved):
        alerts = [render_alert(a, "firing", external_url, now) for a in group.firing]
        alerts += [render_alert(a, "resolved", external_url, now) for a in send_resolved]
        send(alerts)
        row.last_notified_at = now
    if changed or written:
        row.notified_firing = sorted(set(firing_fps) | {a.fingerprint for a in group.muted})
    return written


def _as_firing(alert: dict[str, Any]) -> dict[str, Any]:
    """An ended firing told as it began: firing, no end time (its resolution follows)."""
    return {**alert, "status": "firing", "endsAt": ZERO_TIME}

"""Route tree, grouping (group_wait / group_interval / repeat_interval), inhibition, silences."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rmswatch.alerting.lifecycle import acknowledge_alert, fingerprint, identity_labels
from rmswatch.alerting.routing import match_routes
from rmswatch.alerting.scheduler import run_tick
from rmswatch.alerting.signals import Signal
from rmswatch.alerting.silences import create_silence, expire_silence
from rmswatch.config import Config
from tests.alerting.routing_support import (
    Clock,
    alert_states,
    config,
    events,
    outbox,
    signal,
    store,
)

HOOK = "http://127.0.0.1:9/hook"


def routed(**route: Any) -> Config:
    base = {"receiver": "oncall", "group_by": ["job"], "group_wait": "30s",
            "group_interval": "5m", "repeat_interval": "4h"}  # fmt: skip
    return config(
        [{"name": "oncall", "url": HOOK}, {"name": "tickets", "url": HOOK + "2"}],
        {**base, **route},
    )


class Loop:
    """Ticks the lifecycle + dispatcher with hand-built signals on a hand-moved clock."""

    def __init__(self, engine: Any, cfg: Config) -> None:
        self.engine, self.cfg, self.clock = engine, cfg, Clock()

    def tick(self, *signals: Signal, after: float = 0.0) -> list[dict[str, Any]]:
        """Returns the webhook bodies written to the outbox by this tick."""
        self.clock.advance(after)
        before = len(outbox(self.engine))
        run_tick(self.engine, self.cfg, self.clock(), lambda _e, _c, _n: list(signals))
        return [row.requests[0] for row in outbox(self.engine)[before:]]


def test_first_notification_waits_group_wait_and_carries_the_whole_group(sqlite_url: str) -> None:
    loop = Loop(store(sqlite_url), routed())
    a, b = signal("LossDiverging"), signal("NonFiniteGradients")
    assert loop.tick(a) == []
    assert loop.tick(a, b, after=10) == []  # joins the group during group_wait
    [message] = loop.tick(a, b, after=20)
    assert message["status"] == "firing"
    assert message["groupLabels"] == {"job": "resnet-retrain"}
    assert message["groupKey"] == '{}:{job="resnet-retrain"}'
    assert sorted(x["labels"]["alertname"] for x in message["alerts"]) == [
        "LossDiverging",
        "NonFiniteGradients",
    ]
    assert message["commonLabels"]["job"] == "resnet-retrain"
    assert "alertname" not in message["commonLabels"]


def test_new_alert_in_a_notified_group_waits_for_group_interval(sqlite_url: str) -> None:
    loop = Loop(store(sqlite_url), routed())
    a, b = signal("LossDiverging"), signal("NonFiniteGradients")
    loop.tick(a)
    assert len(loop.tick(a, after=30)) == 1
    assert loop.tick(a, b, after=60) == []
    assert loop.tick(a, b, after=200) == []
    [message] = loop.tick(a, b, after=40)  # 300s after the last flush
    assert len(message["alerts"]) == 2


def test_unchanged_group_repeats_only_after_repeat_interval(sqlite_url: str) -> None:
    loop = Loop(store(sqlite_url), routed())
    a = signal()
    loop.tick(a)
    assert len(loop.tick(a, after=30)) == 1
    for _ in range(47):  # 47 group intervals: 3h55m
        assert loop.tick(a, after=300) == []
    assert len(loop.tick(a, after=300)) == 1  # 4h


def test_acknowledged_alert_stops_repeating(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    loop = Loop(engine, routed(repeat_interval="10m"))
    a = signal()
    loop.tick(a)
    loop.tick(a, after=30)
    acknowledge_alert(engine, fingerprint(identity_labels(a)), "alice")
    assert loop.tick(a, after=300) == []
    assert loop.tick(a, after=300) == []


def test_resolution_is_sent_at_the_next_group_interval(sqlite_url: str) -> None:
    loop = Loop(store(sqlite_url), routed())
    a = signal()
    loop.tick(a)
    loop.tick(a, after=30)
    assert loop.tick(after=60) == []  # resolved now, told at the next flush
    [message] = loop.tick(after=240)
    assert message["status"] == "resolved"
    [alert] = message["alerts"]
    assert alert["status"] == "resolved" and alert["endsAt"] != "0001-01-01T00:00:00Z"
    assert loop.tick(after=300) == []  # told once; the empty group is gone


def test_an_incident_that_ends_within_group_wait_is_delivered_once_firing_then_resolved(
    sqlite_url: str,
) -> None:
    # e.g. a job that hit NaN and aborted at once: Alertmanager would drop it; nobody hearing of
    # an incident is the worst outcome, so it goes out at the group's flush, told and closed
    loop = Loop(store(sqlite_url), routed())
    loop.tick(signal(value=7.0))
    assert loop.tick(after=10) == []  # resolved, but group_wait has not passed
    firing, resolved = loop.tick(after=30)
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    [told] = firing["alerts"]
    assert told["status"] == "firing" and told["endsAt"] == "0001-01-01T00:00:00Z"
    assert told["annotations"]["run_id"] == "run-1" and told["annotations"]["value"] == "7"
    [closed] = resolved["alerts"]
    assert closed["fingerprint"] == told["fingerprint"] and closed["startsAt"] == told["startsAt"]
    assert closed["endsAt"] != "0001-01-01T00:00:00Z"
    assert loop.tick(after=300) == [] and loop.tick(after=300) == []  # delivered once


def test_a_silenced_incident_that_ended_unheard_stays_unsent(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    loop = Loop(engine, routed())
    create_silence(engine, ["job=resnet-retrain"], loop.clock(),
                   loop.clock() + timedelta(hours=1), "alice", "maintenance")  # fmt: skip
    loop.tick(signal())
    assert loop.tick(after=10) == [] and loop.tick(after=30) == []


def test_child_route_takes_the_alert_and_inherits_group_settings() -> None:
    cfg = routed(
        routes=[
            {"matchers": ["severity=ticket"], "receiver": "tickets"},
            {"matchers": ['job=~"resnet-.*"'], "receiver": "oncall", "continue": True},
            {"matchers": ["severity!=ticket"], "receiver": "tickets", "group_wait": 0},
        ]
    )
    assert cfg.route is not None
    ticket = match_routes(cfg.route, {"severity": "ticket", "job": "resnet-retrain"})
    assert [(r.receiver, r.group_wait) for r in ticket] == [("tickets", 30.0)]
    page = match_routes(cfg.route, {"severity": "page", "job": "resnet-retrain"})
    assert [(r.receiver, r.group_wait) for r in page] == [("oncall", 30.0), ("tickets", 0.0)]
    other = match_routes(cfg.route, {"severity": "page", "job": "bert"})
    assert [r.receiver for r in other] == ["tickets"]
    assert page[0].key == '{}/{job=~"resnet-.*"}'
    nothing = match_routes(cfg.route, {"job": "bert", "severity": "ticket", "x": "y"})
    assert [r.receiver for r in nothing] == ["tickets"]


def test_page_inhibits_the_ticket_of_the_same_job_only(sqlite_url: str) -> None:
    loop = Loop(store(sqlite_url), routed(group_by=["job", "alertname"], group_wait=0))
    page = signal("NonFiniteLoss", severity="page")
    ticket = signal("ValidationRegressing", severity="ticket")
    other_ticket = signal("ValidationRegressing", severity="ticket", job="bert")
    sent = loop.tick(page, ticket, other_ticket)
    names = sorted((m["commonLabels"]["alertname"], m["commonLabels"]["job"]) for m in sent)
    assert names == [("NonFiniteLoss", "resnet-retrain"), ("ValidationRegressing", "bert")]
    # once the page resolves, the ticket is no longer inhibited and goes out
    sent = loop.tick(ticket, other_ticket, after=300)
    assert sorted((m["status"], m["commonLabels"]["alertname"]) for m in sent) == [
        ("firing", "ValidationRegressing"),
        ("resolved", "NonFiniteLoss"),
    ]


def test_silenced_alert_is_not_sent_but_its_resolution_is_recorded(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    loop = Loop(engine, routed(group_wait=0))
    silence_id = create_silence(
        engine, ['job=~"resnet-.*"', "severity!=ticket"], loop.clock(),
        loop.clock() + timedelta(hours=2), "alice", "known issue, INC-42",
    )  # fmt: skip
    assert loop.tick(signal()) == []
    assert loop.tick(after=60) == []
    assert alert_states(engine) == {"LossDiverging": "resolved"}
    assert [e[2] for e in events(engine)] == ["pending", "firing", "resolved"]
    # the silence ends; a new episode pages
    assert expire_silence(engine, silence_id, now=loop.clock())
    assert len(loop.tick(signal(), after=60)) == 1


def test_alert_silenced_after_it_paged_still_gets_its_resolution_sent(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    loop = Loop(engine, routed(group_wait=0))
    assert len(loop.tick(signal())) == 1
    create_silence(
        engine, ["alertname=LossDiverging"], loop.clock(), loop.clock() + timedelta(hours=2),
        "alice", "looking at it",
    )  # fmt: skip
    assert loop.tick(signal(), after=300) == []  # muted: no repeat, no resolution
    [message] = loop.tick(after=300)
    assert message["status"] == "resolved"


def test_send_resolved_false_sends_no_resolution(sqlite_url: str) -> None:
    cfg = config(
        [{"name": "oncall", "url": HOOK, "send_resolved": False}],
        {"receiver": "oncall", "group_wait": 0, "group_interval": "1m"},
    )
    loop = Loop(store(sqlite_url), cfg)
    assert len(loop.tick(signal())) == 1
    assert loop.tick(after=60) == []
    assert loop.tick(signal(), after=60) != []  # a new episode is new


def test_webhook_body_is_alertmanager_v4(sqlite_url: str) -> None:
    loop = Loop(store(sqlite_url), routed(group_wait=0))
    [message] = loop.tick(signal())
    assert list(message) == [
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    ]  # fmt: skip
    assert message["version"] == "4" and message["receiver"] == "oncall"
    assert message["externalURL"] == "https://rmswatch.example.org"
    [alert] = message["alerts"]
    assert sorted(alert) == sorted(
        ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]
    )
    assert alert["labels"] == {
        "alertname": "LossDiverging", "job": "resnet-retrain", "model": "resnet50",
        "severity": "page",
    }  # fmt: skip
    assert alert["annotations"]["run_id"] == "run-1"
    assert alert["startsAt"] == "2025-03-01T03:00:00.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"].startswith(
        "https://rmswatch.example.org/oncall?job=resnet-retrain&run=run-1&from=2025-03-01T02"
    )
    assert len(alert["fingerprint"]) == 16


def test_max_alerts_truncates_and_counts_the_rest(sqlite_url: str) -> None:
    cfg = config(
        [{"name": "oncall", "url": HOOK, "max_alerts": 2}],
        {"receiver": "oncall", "group_wait": 0},
    )
    loop = Loop(store(sqlite_url), cfg)
    [message] = loop.tick(*(signal(f"Rule{i}") for i in range(5)))
    assert len(message["alerts"]) == 2 and message["truncatedAlerts"] == 3

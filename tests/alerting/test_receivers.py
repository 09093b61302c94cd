"""Receiver bodies (webhook, Slack, PagerDuty, Alertmanager) and HMAC signing, over real HTTP.

PagerDuty and Slack cannot be reached from here: their URLs point at a real HTTP server on
127.0.0.1 that records what it is sent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from rmswatch.alerting.outbox import deliver_due
from rmswatch.alerting.receivers import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from rmswatch.alerting.routing_config import OutboxConfig
from rmswatch.alerting.scheduler import run_tick
from rmswatch.config import Config
from tests.alerting.routing_support import Clock, ReceiverServer, config, signal, store

SECRET = "s3cr3t-hmac-value-9f8e7d"
ROUTING_KEY = "R0UT1NGKEY-abcdef0123456789"
ENV = {"HOOK_SECRET": SECRET, "PD_KEY": ROUTING_KEY}
POLICY = OutboxConfig(initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def server() -> ReceiverServer:
    srv = ReceiverServer().start()
    yield srv  # type: ignore[misc]
    srv.stop()


def fire_and_resolve(sqlite_url: str, cfg: Config) -> Engine:
    engine, clock = store(sqlite_url), Clock()
    evaluate_page = lambda *_: [signal()]  # noqa: E731
    run_tick(engine, cfg, clock(), evaluate_page)
    deliver_due(engine, cfg.receivers, POLICY, clock=now, environ=ENV)
    run_tick(engine, cfg, clock.advance(60), lambda *_: [])
    deliver_due(engine, cfg.receivers, POLICY, clock=now, environ=ENV)
    return engine


def one_receiver(kind: str, url: str, **extra: object) -> Config:
    return config(
        [{"name": "r", "kind": kind, "url": url, **extra}],
        {"receiver": "r", "group_wait": 0, "group_interval": "1m"},
    )


def test_signed_webhook_verifies_and_the_secret_is_never_logged_or_stored(
    sqlite_url: str, server: ReceiverServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = one_receiver("webhook", server.url, secret_env="HOOK_SECRET")
    engine = fire_and_resolve(sqlite_url, cfg)
    assert [r.json["status"] for r in server.received] == ["firing", "resolved"]
    for request in server.received:
        timestamp, signature = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]
        assert signature.startswith("sha256=")
        assert verify_signature(SECRET, timestamp, request.body, signature)
        assert not verify_signature("wrong", timestamp, request.body, signature)
        assert not verify_signature(SECRET, timestamp, request.body + b" ", signature)
    assert caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.model_dump())
    with engine.connect() as conn:
        stored = " ".join(str(row) for row in conn.execute(text("SELECT * FROM notifications")))
    assert stored and SECRET not in stored


def test_missing_secret_is_a_retried_failure_that_names_the_variable_only(
    sqlite_url: str, server: ReceiverServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = one_receiver("webhook", server.url, secret_env="NOT_SET_ANYWHERE")
    engine, clock = store(sqlite_url), Clock()
    run_tick(engine, cfg, clock(), lambda *_: [signal()])
    report = deliver_due(engine, cfg.receivers, POLICY, clock=now, environ=ENV)
    assert (report.delivered, report.failed_attempts) == (0, 1)
    assert "NOT_SET_ANYWHERE is not set" in caplog.text
    assert server.received == []


def test_pagerduty_gets_trigger_then_resolve_with_one_dedup_key(
    sqlite_url: str, server: ReceiverServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = one_receiver("pagerduty", server.url, routing_key_env="PD_KEY")
    engine = fire_and_resolve(sqlite_url, cfg)
    trigger, resolve = server.bodies()
    assert trigger["routing_key"] == ROUTING_KEY == resolve["routing_key"]
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] and len(trigger["dedup_key"]) == 16
    payload = trigger["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "resnet-retrain"
    assert payload["summary"] == "LossDiverging on resnet-retrain: loss 12.5x its median"
    assert payload["custom_details"]["labels"]["alertname"] == "LossDiverging"
    assert [link["text"] for link in trigger["links"]] == ["rmswatch on-call view", "runbook"]
    assert ROUTING_KEY not in caplog.text
    with engine.connect() as conn:
        stored = " ".join(str(row) for row in conn.execute(text("SELECT * FROM notifications")))
    assert ROUTING_KEY not in stored


def test_slack_gets_text_and_blocks_with_links(sqlite_url: str, server: ReceiverServer) -> None:
    fire_and_resolve(sqlite_url, one_receiver("slack", server.url))
    firing, resolved = server.bodies()
    assert firing["text"] == "[FIRING:1] LossDiverging (resnet-retrain)"
    assert resolved["text"] == "[RESOLVED] LossDiverging (resnet-retrain)"
    assert firing["blocks"][0]["type"] == "header"
    section = firing["blocks"][1]["text"]["text"]
    assert "loss 12.5x its median" in section
    assert "|on-call view>" in section and "runbooks/divergence|runbook>" in section


def test_slack_url_can_come_from_the_environment(sqlite_url: str, server: ReceiverServer) -> None:
    cfg = config(
        [{"name": "r", "kind": "slack", "url_env": "SLACK_URL"}],
        {"receiver": "r", "group_wait": 0},
    )
    engine, clock = store(sqlite_url), Clock()
    run_tick(engine, cfg, clock(), lambda *_: [signal()])
    env = {"SLACK_URL": server.url}
    assert deliver_due(engine, cfg.receivers, POLICY, clock=now, environ=env).delivered == 1


def test_alertmanager_receiver_posts_api_v2_alerts(sqlite_url: str, server: ReceiverServer) -> None:
    fire_and_resolve(sqlite_url, one_receiver("alertmanager", f"http://127.0.0.1:{server.port}"))
    assert [r.path for r in server.received] == ["/api/v2/alerts", "/api/v2/alerts"]
    [firing], [resolved] = server.bodies()
    assert firing["labels"]["alertname"] == "LossDiverging"
    assert "endsAt" not in firing  # Alertmanager's resolve_timeout applies from receipt
    assert resolved["endsAt"] > resolved["startsAt"]


def test_custom_headers_are_sent(sqlite_url: str, server: ReceiverServer) -> None:
    fire_and_resolve(sqlite_url, one_receiver("webhook", server.url, headers={"X-Team": "ml"}))
    assert all(r.headers["X-Team"] == "ml" for r in server.received)

"""Two servers on one PostgreSQL store: one evaluates and sends, the other takes over if it goes."""

from __future__ import annotations

from datetime import datetime

import pytest

from rmswatch.alerting.scheduler import start_scheduler
from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from rmswatch.store.engine import open_store
from tests.alerting.routing_support import ReceiverServer, config, signal
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_two_servers_elect_one_evaluator_and_nothing_is_sent_twice(pg_url: str) -> None:
    server = ReceiverServer().start()
    cfg = config(
        [{"name": "oncall", "url": server.url}],
        {"receiver": "oncall", "group_wait": 0, "group_interval": 0.2},
        evaluation={"interval_seconds": 0.2},
        outbox={"poll_seconds": 0.1},
    )
    firing = [signal()]
    calls: dict[str, int] = {"a": 0, "b": 0}

    def evaluator(name: str):  # type: ignore[no-untyped-def]
        def evaluate(_engine: object, _config: Config, _now: datetime) -> list[Signal]:
            calls[name] += 1
            return list(firing)

        return evaluate

    engines = [open_store(pg_url), open_store(pg_url)]
    a = start_scheduler(engines[0], cfg, evaluate=evaluator("a"))
    b = start_scheduler(engines[1], cfg, evaluate=evaluator("b"))
    try:
        wait_until(lambda: calls["a"] + calls["b"] >= 10, timeout=60, what="ten ticks")
        wait_until(lambda: server.received, timeout=30, what="the page")
        assert sorted([a.is_leader, b.is_leader]) == [False, True]
        leader, follower = (a, b) if a.is_leader else (b, a)
        follower_name = "b" if leader is a else "a"
        assert calls[follower_name] == 0

        # the leader goes away: the other server takes over and resolves what the first paged
        leader.shutdown()
        firing.clear()
        wait_until(lambda: follower.is_leader, timeout=30, what="failover")
        wait_until(lambda: len(server.received) >= 2, timeout=30, what="the resolution")
        assert calls[follower_name] > 0
    finally:
        a.shutdown()
        b.shutdown()
        server.stop()
        for engine in engines:
            engine.dispose()
    assert [body["status"] for body in server.bodies()] == ["firing", "resolved"]

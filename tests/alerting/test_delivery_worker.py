"""Delivery off the tick (issue 11): a real slow HTTP receiver on 127.0.0.1 delays neither the
evaluation tick nor another receiver, and a request that timed out is retried with the same
idempotency key. Every wait is bounded; nothing here measures speed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rmswatch.alerting.receivers import IDEMPOTENCY_HEADER
from rmswatch.alerting.scheduler import start_scheduler
from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from tests.alerting.routing_support import ReceiverServer, config, signal, store
from tests.helpers import free_port, wait_until

# the longest any handler here holds a request, so a broken test ends instead of hanging
HOLD_BOUND_SECONDS = 20.0


@dataclass
class SlowReceiver:
    """Records each POST when it arrives, then holds the answer until `release` is set (or the
    first `hang_first` requests until their client gave up), then answers 200."""

    hang_first: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    arrived: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    answered: int = 0
    port: int = field(default_factory=free_port)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> SlowReceiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.arrived.append((dict(self.headers), body))
                    number = len(outer.arrived)
                if number <= outer.hang_first:
                    # a hung receiver: the request arrived, the answer never comes in time
                    outer.release.wait(HOLD_BOUND_SECONDS)
                    return
                outer.release.wait(HOLD_BOUND_SECONDS)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with outer._lock:
                    outer.answered += 1

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def slow() -> Iterator[SlowReceiver]:
    receiver = SlowReceiver().start()
    yield receiver
    receiver.stop()


def _two_receivers(slow_url: str, fast_url: str, **receiver: Any) -> Config:
    return config(
        [{"name": "slow", "url": slow_url, **receiver}, {"name": "fast", "url": fast_url}],
        {
            "receiver": "slow",
            "group_wait": 0,
            "routes": [{"receiver": "slow", "continue": True}, {"receiver": "fast"}],
        },
        # the scheduler's own ticks are far apart: the test ticks by hand
        evaluation={"interval_seconds": 3600},
        outbox={"poll_seconds": 0.05, "initial_backoff_seconds": 0.05},
    )


def test_a_slow_receiver_delays_neither_the_tick_nor_another_receiver(
    sqlite_url: str, slow: SlowReceiver
) -> None:
    fast = ReceiverServer().start()
    firing: list[Signal] = []
    cfg = _two_receivers(slow.url, fast.url, timeout_seconds=60)
    handle = start_scheduler(store(sqlite_url), cfg, evaluate=lambda *_: list(firing))
    try:
        wait_until(lambda: handle.ticks >= 1, timeout=30, what="the first scheduled tick")
        firing.append(signal())
        assert handle.tick() is not None
        wait_until(lambda: slow.arrived, timeout=30, what="the page at the slow receiver")
        # the slow receiver still holds its request, and yet:
        assert handle.tick() is not None  # the next tick ran to the end
        wait_until(lambda: fast.received, timeout=30, what="the page at the fast receiver")
        assert slow.answered == 0 and not slow.release.is_set()
        slow.release.set()
        wait_until(lambda: slow.answered == 1, timeout=30, what="the slow receiver's answer")
    finally:
        handle.shutdown()
        fast.stop()
    assert [b["status"] for b in fast.bodies()] == ["firing"]
    assert [body["status"] for _, body in slow.arrived] == ["firing"]


@pytest.mark.parametrize("kind", ["webhook", "pagerduty"])
def test_a_timed_out_request_is_retried_with_the_same_idempotency_key(
    sqlite_url: str, kind: str
) -> None:
    slow = SlowReceiver(hang_first=1).start()
    slow.release.clear()
    receiver: dict[str, Any] = {
        "name": "hook",
        "kind": kind,
        "url": slow.url,
        "timeout_seconds": 0.5,
    }
    if kind == "pagerduty":
        receiver["routing_key_env"] = "PD_KEY"
    cfg = config(
        [receiver],
        {"receiver": "hook", "group_wait": 0},
        evaluation={"interval_seconds": 3600},
        outbox={"poll_seconds": 0.05, "initial_backoff_seconds": 0.05},
    )
    firing = [signal()]

    def evaluate(_engine: object, _config: Config, _now: datetime) -> list[Signal]:
        return list(firing)

    handle = start_scheduler(store(sqlite_url), cfg, evaluate=evaluate, environ={"PD_KEY": "k"})
    try:
        wait_until(lambda: len(slow.arrived) >= 2, timeout=30, what="the retry after the timeout")
        slow.release.set()  # now answer: the retry is accepted
        wait_until(lambda: slow.answered >= 1, timeout=30, what="an accepted retry")
    finally:
        handle.shutdown()
        slow.stop()
    (first_headers, first_body), (retry_headers, retry_body) = slow.arrived[:2]
    assert first_headers[IDEMPOTENCY_HEADER] == retry_headers[IDEMPOTENCY_HEADER]
    assert first_body == retry_body  # rendered once, when decided: the retry is the same request
    if kind == "pagerduty":
        assert first_body["dedup_key"] == retry_body["dedup_key"]


def test_notifications_for_a_receiver_no_longer_configured_wait_and_are_logged_once(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import UTC

    from sqlalchemy.orm import Session

    from rmswatch.alerting.delivery import DeliveryWorker
    from rmswatch.alerting.outbox import enqueue
    from rmswatch.alerting.routing_config import OutboxConfig, ReceiverConfig

    engine = store(sqlite_url)
    gone = ReceiverConfig(name="gone", url="http://127.0.0.1:9/hook")
    with Session(engine) as session, session.begin():
        enqueue(session, receiver=gone, group_key="g", status="firing", fingerprints=[],
                requests=[{}], now=datetime.now(UTC))  # fmt: skip
    worker = DeliveryWorker(
        engine, [], OutboxConfig(), clock=lambda: datetime.now(UTC),
        transport=lambda *_: 200, environ={}, is_leader=lambda: True,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="rmswatch.alerting.delivery"):
        assert worker.warn_orphans() == ["gone"]
        assert worker.warn_orphans() == ["gone"]
    assert sum("'gone'" in r.getMessage() for r in caplog.records) == 1
    engine.dispose()

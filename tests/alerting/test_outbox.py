"""The durable outbox against a real HTTP receiver on 127.0.0.1 that goes down and comes back."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from rmswatch.alerting.outbox import backoff_seconds, deliver_due, enqueue
from rmswatch.alerting.routing_config import OutboxConfig, ReceiverConfig
from tests.alerting.routing_support import ReceiverServer, outbox, store
from tests.helpers import wait_until

# a 10-minute outage in the issue; shortened here through the policy, not the logic
FAST = OutboxConfig(initial_backoff_seconds=0.02, max_backoff_seconds=0.2, poll_seconds=0.05)


def now() -> datetime:
    return datetime.now(UTC)


def write(engine, receiver: ReceiverConfig, n: int, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session, session.begin():
        for i in range(start, start + n):
            enqueue(session, receiver=receiver, group_key=f"{{}}:{{job=\"j{i}\"}}",
                    status="firing", fingerprints=[f"{i:016x}"], requests=[{"seq": i}],
                    now=now())  # fmt: skip


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    policy = OutboxConfig(initial_backoff_seconds=1, max_backoff_seconds="5m")
    assert [backoff_seconds(n, policy) for n in (1, 2, 3, 4, 9, 10, 500)] == [
        1.0, 2.0, 4.0, 8.0, 256.0, 300.0, 300.0,
    ]  # fmt: skip


def test_receiver_that_refuses_then_comes_back_gets_everything_in_order_once(
    sqlite_url: str,
) -> None:
    engine = store(sqlite_url)
    server = ReceiverServer().start()
    receiver = ReceiverConfig(name="oncall", url=server.url)
    try:
        write(engine, receiver, 3)
        assert deliver_due(engine, [receiver], FAST, clock=now).delivered == 3

        server.status = 503  # down: answering 503
        write(engine, receiver, 3, start=3)
        report = deliver_due(engine, [receiver], FAST, clock=now)
        assert (report.delivered, report.failed_attempts, report.waiting) == (0, 1, 3)

        def retried_three_times() -> bool:
            deliver_due(engine, [receiver], FAST, clock=now)
            return server.refused >= 3

        wait_until(retried_three_times, timeout=20, what="retries while answering 503")

        server.stop()  # down harder: connection refused
        write(engine, receiver, 2, start=6)
        for _ in range(5):
            assert deliver_due(engine, [receiver], FAST, clock=now).delivered == 0
        rows = outbox(engine)
        assert all(r.delivered_at is None for r in rows[3:])
        assert rows[3].attempts >= 3 and "ConnectionError" in rows[3].last_error
        assert all(r.attempts == 0 for r in rows[4:])  # later ones wait behind the head

        server.status = 200
        server.start()  # back, on the same port
        wait_until(
            lambda: deliver_due(engine, [receiver], FAST, clock=now).waiting == 0,
            timeout=20, what="outbox drained",
        )  # fmt: skip
        assert [b["seq"] for b in server.bodies()] == list(range(8))
        assert all(r.delivered_at is not None for r in outbox(engine))
        # delivered means delivered: another pass sends nothing again
        assert deliver_due(engine, [receiver], FAST, clock=now).delivered == 0
        assert len(server.bodies()) == 8
    finally:
        server.stop()


def test_one_receiver_down_does_not_hold_up_another(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    up = ReceiverServer().start()
    down = ReceiverServer(status=503).start()
    good = ReceiverConfig(name="good", url=up.url)
    bad = ReceiverConfig(name="bad", url=down.url)
    try:
        write(engine, bad, 2)
        write(engine, good, 2, start=2)
        report = deliver_due(engine, [good, bad], FAST, clock=now)
        assert (report.delivered, report.waiting) == (2, 2)
        assert [b["seq"] for b in up.bodies()] == [2, 3]
    finally:
        up.stop()
        down.stop()


def test_partly_sent_notification_resumes_after_the_accepted_requests(sqlite_url: str) -> None:
    """PagerDuty takes one request per alert; a retry must not resend the accepted ones."""
    engine = store(sqlite_url)
    calls: list[int] = []

    def flaky(url: str, body: bytes, headers: object, timeout: float) -> int:
        calls.append(len(calls))
        return 503 if len(calls) == 2 else 202

    receiver = ReceiverConfig(name="hook", url="http://127.0.0.1:9/hook")
    with Session(engine) as session, session.begin():
        enqueue(session, receiver=receiver, group_key="g", status="firing", fingerprints=[],
                requests=[{"n": 1}, {"n": 2}, {"n": 3}], now=now())  # fmt: skip
    # the transport is a function here because the point is which request fails, not HTTP
    assert deliver_due(engine, [receiver], FAST, clock=now, transport=flaky).delivered == 0
    assert outbox(engine)[0].requests_sent == 1
    wait_until(lambda: deliver_due(engine, [receiver], FAST, clock=now, transport=flaky)
               .delivered == 1, timeout=10)  # fmt: skip
    assert len(calls) == 4  # 1 ok, 2 refused, 2 ok, 3 ok


def test_notification_for_a_receiver_removed_from_config_waits(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    write(engine, ReceiverConfig(name="gone", url="http://127.0.0.1:9/x"), 1)
    report = deliver_due(engine, [], FAST, clock=now)
    assert (report.delivered, report.waiting) == (0, 1)

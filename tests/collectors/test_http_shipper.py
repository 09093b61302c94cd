from __future__ import annotations

import json
import random
from collections.abc import Mapping

import pytest
from sqlalchemy import Engine, select

from rmswatch.collectors.http_shipper import HttpShipper
from rmswatch.store import queries
from rmswatch.store.models import Step
from rmswatch.trainer_hooks.records import RunStatus
from rmswatch.trainer_hooks.sinks import Sink
from tests.collectors.ingest_server import TOKEN, serve_ingest
from tests.factories import T0, run_info, step_record


def _steps(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(Step.step).order_by(Step.step)).scalars())


class ScriptedTransport:
    """Stands in for the network where a test needs exact failures: answers from a script,
    then 200; records every request. (The end-to-end tests use a real server instead.)"""

    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.bodies: list[dict[str, object]] = []
        self.headers: list[Mapping[str, str]] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        self.bodies.append(json.loads(body))
        self.headers.append(headers)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_flush_through_the_sink_protocol_posts_the_records_and_close_posts_the_status() -> None:
    transport = ScriptedTransport([])
    sink: Sink = HttpShipper("http://127.0.0.1:1", transport=transport, flush_interval=60.0)
    sink.open(run_info())
    sink.write([step_record(s) for s in range(5)])
    sink.flush()
    posted = [item["step"] for body in transport.bodies for item in body["items"]]  # type: ignore[attr-defined]
    assert posted == list(range(5))
    sink.close(RunStatus(T0 + 10, "succeeded"))
    assert transport.bodies[-1]["status"]["status"] == "succeeded"  # type: ignore[index]


def test_shipped_telemetry_lands_in_the_store_through_a_real_server(engine: Engine) -> None:
    with serve_ingest(engine) as url:
        shipper = HttpShipper(url, token=TOKEN, flush_interval=60.0, max_batch_records=7)
        shipper.open(run_info())
        shipper.write([step_record(s) for s in range(20)])
        shipper.flush()
        assert _steps(engine) == list(range(20))
        shipper.write([step_record(s) for s in range(20, 25)])
        shipper.close(RunStatus(T0 + 30, "succeeded"))
    run = queries.run(engine, "run-1")
    assert run is not None and (run["status"], run["last_step"]) == ("succeeded", 24)
    assert shipper.stats().sent == 25 and shipper.dropped_total == 0


def test_failed_posts_are_retried_and_the_server_keeps_one_copy(sqlite_engine: Engine) -> None:
    with serve_ingest(sqlite_engine) as url:
        real = HttpShipper(url, token=TOKEN)._transport
        answers: list[int | Exception] = [ConnectionError("refused"), 503]

        def flaky(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
            if answers:
                answer = answers.pop(0)
                if isinstance(answer, Exception):
                    raise OSError(str(answer))
                # the server got it but the answer was lost: the batch is sent again
                real(url, body, headers, timeout)
                return answer
            return real(url, body, headers, timeout)

        shipper = HttpShipper(url, token=TOKEN, transport=flaky, backoff_base=0.01)
        shipper.open(run_info())
        shipper.write([step_record(s) for s in range(4)])
        shipper.close(RunStatus(T0, "succeeded"))
    assert _steps(sqlite_engine) == [0, 1, 2, 3]
    assert shipper.stats().retries == 2 and shipper.dropped_total == 0


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([OSError("down")] * 5)
    shipper = HttpShipper(
        "http://server:8050",
        transport=transport,
        clock=clock,
        rng=random.Random(7),
        backoff_base=1.0,
        backoff_max=8.0,
        close_timeout=0.0,
    )
    shipper.open(run_info())
    shipper.write([step_record(0)])
    delays = []
    for _ in range(5):
        assert not shipper._send_all()
        delays.append(shipper._next_attempt - clock.now)
    expected_ceilings = [1.0, 2.0, 4.0, 8.0, 8.0]
    reference = random.Random(7)
    assert delays == [reference.uniform(0, c) for c in expected_ceilings]
    assert shipper._send_all()
    shipper.close(RunStatus(T0, "succeeded"))


def test_batches_carry_the_bearer_token_and_open_the_run_only_once() -> None:
    transport = ScriptedTransport([])
    shipper = HttpShipper(
        "http://server:8050/", token="t0k", transport=transport, max_batch_records=2
    )
    assert shipper.url == "http://server:8050/api/v1/ingest"
    shipper.open(run_info())
    shipper.write([step_record(s) for s in range(5)])
    shipper.close(RunStatus(T0, "failed", "oom"))
    assert [h["Authorization"] for h in transport.headers] == ["Bearer t0k"] * 3
    assert [b["open"] for b in transport.bodies] == [True, False, False]
    assert [len(b["items"]) for b in transport.bodies] == [2, 2, 1]  # type: ignore[arg-type]
    assert "status" in transport.bodies[-1] and "status" not in transport.bodies[0]


def test_a_batch_over_the_byte_limit_is_split_before_sending() -> None:
    transport = ScriptedTransport([])
    shipper = HttpShipper("http://s", transport=transport, max_batch_bytes=6_000)
    shipper.open(run_info())
    shipper.write([step_record(s) for s in range(10)])
    shipper.close(RunStatus(T0, "succeeded"))
    sent = [item["step"] for b in transport.bodies for item in b["items"]]  # type: ignore[attr-defined]
    assert sent == list(range(10))
    assert len(transport.bodies) > 1


@pytest.mark.parametrize("status", [401, 422])
def test_a_rejected_batch_is_dropped_and_counted_not_retried_forever(status: int) -> None:
    transport = ScriptedTransport([status])
    shipper = HttpShipper("http://s", transport=transport, max_batch_records=2)
    shipper.open(run_info())
    shipper.write([step_record(s) for s in range(4)])
    shipper.close(RunStatus(T0, "succeeded"))
    stats = shipper.stats()
    assert (stats.rejected, stats.dropped, stats.sent) == (2, 2, 2)
    assert f"HTTP {status}" in (stats.last_error or "")


def test_an_unreachable_server_fills_the_bounded_buffer_then_drops_the_oldest() -> None:
    transport = ScriptedTransport([OSError("down")] * 100)
    shipper = HttpShipper(
        "http://s", transport=transport, max_buffer=3, close_timeout=0.0, backoff_base=0.0
    )
    shipper.open(run_info())
    for s in range(8):
        shipper.write([step_record(s)])
        shipper._send_all()
    assert shipper.stats().buffered == 3 and shipper.dropped_total == 5
    transport.answers.clear()
    shipper.close(RunStatus(T0, "succeeded"))
    assert [i["step"] for i in transport.bodies[-1]["items"]] == [5, 6, 7]  # type: ignore[attr-defined]

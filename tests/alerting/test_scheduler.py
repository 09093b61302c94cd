"""The alerting loop: APScheduler runs it, and its state survives a restart."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rmswatch.alerting.scheduler import start_scheduler
from rmswatch.alerting.signals import Signal
from rmswatch.config import Config
from tests.alerting.routing_support import Clock, ReceiverServer, config, signal, store
from tests.helpers import wait_until


def webhook_config(url: str, **extra: Any) -> Config:
    return config(
        [{"name": "oncall", "url": url}],
        {"receiver": "oncall", "group_wait": 0, "group_interval": "1m", "repeat_interval": "4h"},
        **extra,
    )


def test_background_scheduler_evaluates_and_delivers_on_its_own(sqlite_url: str) -> None:
    server = ReceiverServer().start()
    cfg = webhook_config(
        server.url, evaluation={"interval_seconds": 0.2}, outbox={"poll_seconds": 0.1}
    )
    calls: list[datetime] = []

    def evaluate(_engine: object, _config: Config, now: datetime) -> list[Signal]:
        calls.append(now)
        return [signal()]

    handle = start_scheduler(store(sqlite_url), cfg, evaluate=evaluate)
    try:
        wait_until(lambda: len(calls) >= 3, timeout=30, what="three scheduled ticks")
        wait_until(lambda: server.received, timeout=30, what="the page")
    finally:
        handle.shutdown()
        server.stop()
    assert handle.is_leader  # SQLite: the one process is the leader
    assert [b["status"] for b in server.bodies()] == ["firing"]  # once, not once per tick
    assert not handle.scheduler.running


def test_restarted_scheduler_neither_pages_again_nor_forgets_to_resolve(sqlite_url: str) -> None:
    server = ReceiverServer().start()
    cfg = webhook_config(server.url)
    engine, clock = store(sqlite_url), Clock()
    firing: list[Signal] = [signal()]
    try:
        first = start_scheduler(engine, cfg, clock=clock, evaluate=lambda *_: firing, start=False)
        first.tick()
        first.shutdown()
        assert [b["status"] for b in server.bodies()] == ["firing"]

        second = start_scheduler(engine, cfg, clock=clock, evaluate=lambda *_: firing, start=False)
        for _ in range(5):
            clock.advance(120)
            second.tick()
        assert len(server.received) == 1  # the new process knows the page went out
        firing.clear()
        clock.advance(60)
        second.tick()
        second.shutdown()
    finally:
        server.stop()
    assert [b["status"] for b in server.bodies()] == ["firing", "resolved"]


def test_failed_evaluation_is_logged_and_the_next_tick_runs(sqlite_url: str) -> None:
    def broken(*_: object) -> list[Signal]:
        raise RuntimeError("query timed out")

    handle = start_scheduler(store(sqlite_url), Config(), evaluate=broken, start=False)
    assert handle.tick() is None
    assert handle.last_error == "RuntimeError: query timed out"
    handle.evaluate = lambda *_: []
    assert handle.tick() is not None
    handle.shutdown()


def test_evaluate_command_runs_one_tick_with_the_real_evaluator(
    sqlite_url: str, tmp_path: Any, capsys: Any
) -> None:
    from rmswatch.cli import main

    path = tmp_path / "rmswatch.yaml"
    path.write_text("receivers: [{name: oncall, url: 'http://127.0.0.1:9/hook'}]\n"
                    "route: {receiver: oncall}\n")  # fmt: skip
    assert main(["evaluate", "--db", sqlite_url, "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "state changes" in out and "notifications written" in out


def test_the_scheduler_keeps_one_incremental_evaluator_across_ticks(sqlite_url: str) -> None:
    from rmswatch.alerting.evaluate import Evaluator
    from rmswatch.alerting.scheduler import IncrementalEvaluate, start_scheduler
    from rmswatch.config import Config
    from rmswatch.store.engine import open_store

    engine = open_store(sqlite_url)
    handle = start_scheduler(engine, Config(), start=False)
    try:
        assert isinstance(handle.evaluate, IncrementalEvaluate)
        assert handle.tick() is not None
        first = handle.evaluate.evaluator
        assert isinstance(first, Evaluator)
        assert handle.tick() is not None
        assert handle.evaluate.evaluator is first  # the second tick reused the first's cache
    finally:
        handle.shutdown(wait=False)
        engine.dispose()

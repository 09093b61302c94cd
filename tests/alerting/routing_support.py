"""Helpers for the lifecycle/routing tests: a store, signals, a real HTTP receiver, a clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rmswatch.alerting.signals import Severity, Signal
from rmswatch.config import Config
from rmswatch.store.engine import open_store
from rmswatch.store.models_alerting import AlertEventRow, AlertRow, NotificationRow
from tests.helpers import free_port

T0 = datetime(2025, 3, 1, 3, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def signal(
    alertname: str = "LossDiverging",
    *,
    job: str = "resnet-retrain",
    run_id: str = "run-1",
    severity: Severity = "page",
    active: bool = True,
    for_seconds: float = 0.0,
    value: float | None = 12.5,
    **labels: str,
) -> Signal:
    return Signal(
        alertname=alertname,
        labels={"job": job, "run_id": run_id, "model": "resnet50", "cluster": "", **labels},
        severity=severity,
        active=active,
        value=value,
        for_seconds=for_seconds,
        annotations={
            "summary": f"{alertname} on {job}: loss 12.5x its median",
            "runbook_url": "https://example.org/runbooks/divergence",
        },
    )


def store(url: str) -> Engine:
    return open_store(url)


def config(receivers: list[dict[str, Any]], route: dict[str, Any], **extra: Any) -> Config:
    data: dict[str, Any] = {
        "receivers": receivers,
        "route": route,
        "server": {"external_url": "https://rmswatch.example.org"},
        **extra,
    }
    return Config.model_validate(data)


def alert_states(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {a.alertname: a.state for a in session.scalars(select(AlertRow))}


def events(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.scalars(select(AlertEventRow).order_by(AlertEventRow.id))
        return [(e.alertname, e.from_state, e.to_state) for e in rows]


def outbox(engine: Engine) -> list[NotificationRow]:
    with Session(engine) as session:
        rows = list(session.scalars(select(NotificationRow).order_by(NotificationRow.id)))
        session.expunge_all()
        return rows


@dataclass
class Received:
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ReceiverServer:
    """A real HTTP server on 127.0.0.1 that records POSTs; it can answer 503 for a while, or be
    stopped (connection refused) and started again on the same port."""

    port: int = field(default_factory=free_port)
    status: int = 200
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> ReceiverServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    status = outer.status
                    if status < 300:
                        outer.received.append(Received(self.path, dict(self.headers), body))
                    else:
                        outer.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json for r in self.received]


def serving() -> Iterator[ReceiverServer]:
    server = ReceiverServer().start()
    try:
        yield server
    finally:
        server.stop()

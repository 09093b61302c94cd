"""The demo's local webhook receiver: a real HTTP server that prints each notification it gets."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Notification:
    """One alert out of one Alertmanager-format webhook body."""

    status: str
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    group_status: str


@dataclass
class WebhookReceiver:
    """Collects Alertmanager v4 webhook bodies on 127.0.0.1; `on_notification` sees each alert."""

    log_path: Path | None = None
    on_notification: Callable[[Notification], None] | None = None
    notifications: list[Notification] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._accept(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the demo prints notifications itself, not access logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://{host}:{self._server.server_address[1]}/hook"

    def _accept(self, body: dict[str, Any]) -> None:
        items = [
            Notification(
                status=str(alert.get("status", "")),
                alertname=str(alert.get("labels", {}).get("alertname", "")),
                labels={str(k): str(v) for k, v in alert.get("labels", {}).items()},
                annotations={str(k): str(v) for k, v in alert.get("annotations", {}).items()},
                group_status=str(body.get("status", "")),
            )
            for alert in body.get("alerts", [])
        ]
        with self._lock:
            self.bodies.append(body)
            self.notifications.extend(items)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(body) + "\n")
        if self.on_notification is not None:
            for item in items:
                self.on_notification(item)

    def received(self, predicate: Callable[[Notification], bool]) -> list[Notification]:
        with self._lock:
            return [n for n in self.notifications if predicate(n)]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

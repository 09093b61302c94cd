"""`rmswatch.wsgi`: the server as a WSGI app, served here by a real WSGI server on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from rmswatch.wsgi import create_wsgi_app


def _schedulers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "APScheduler"]


def _get_healthz(app: Any) -> tuple[int, str]:
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        answer = requests.get(f"http://127.0.0.1:{http.server_port}/healthz", timeout=30)
        return answer.status_code, answer.text
    finally:
        http.shutdown()
        http.server_close()


def test_the_wsgi_app_serves_and_never_schedules_on_sqlite(sqlite_url: str) -> None:
    before = len(_schedulers())
    app = create_wsgi_app({"RMSWATCH_DB": sqlite_url})
    assert _get_healthz(app) == (200, "ok\n")
    assert len(_schedulers()) == before  # SQLite has no leader election


@pytest.mark.integration
def test_on_postgresql_each_worker_runs_an_elected_scheduler(pg_url: str) -> None:
    before = len(_schedulers())
    app = create_wsgi_app({"RMSWATCH_DB": pg_url})
    try:
        assert _get_healthz(app) == (200, "ok\n")
        assert len(_schedulers()) == before + 1
        off = create_wsgi_app({"RMSWATCH_DB": pg_url, "RMSWATCH_SCHEDULER": "0"})
        assert _get_healthz(off) == (200, "ok\n")
        assert len(_schedulers()) == before + 1
    finally:
        app.extensions["rmswatch"].shutdown()
    assert len(_schedulers()) == before

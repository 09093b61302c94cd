"""The server as a WSGI application, for a WSGI server with several worker processes:

    RMSWATCH_DB=postgresql+psycopg://rmswatch@db/rmswatch RMSWATCH_CONFIG=/etc/rmswatch.yml \\
        gunicorn --workers 4 --bind 127.0.0.1:8050 'rmswatch.wsgi:app'

Every worker serves the pages and the ingest API. On PostgreSQL every worker also runs the alert
scheduler and one is elected to evaluate (`pg_try_advisory_lock`; another takes over when it
stops). On SQLite there is no election, so workers never start a scheduler here: run
`rmswatch serve` (one process) instead. `RMSWATCH_SCHEDULER=0` turns the scheduler off anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def create_wsgi_app(environ: Mapping[str, str] | None = None) -> Any:
    """The Flask (WSGI) application of a server configured from the environment.

    `app.extensions["rmswatch"]` is the `rmswatch.server.Server`: its `shutdown()` stops the
    scheduler (a WSGI server's worker-exit hook can call it)."""
    from rmswatch.config import load_config
    from rmswatch.server import _open_engine, build_server

    env = os.environ if environ is None else environ
    config = load_config(env.get("RMSWATCH_CONFIG") or None)
    url = env.get("RMSWATCH_DB") or config.store.url or "sqlite:///rmswatch.db"
    engine = _open_engine(url)
    elected = engine.dialect.name == "postgresql"
    scheduler = elected and env.get("RMSWATCH_SCHEDULER", "1") != "0"
    server = build_server(config, engine, start_scheduler=scheduler, environ=env)
    server.flask.extensions["rmswatch"] = server
    return server.flask


def __getattr__(name: str) -> Any:
    # `rmswatch.wsgi:app` builds the app on first access, so importing the module opens nothing
    if name == "app":
        app = create_wsgi_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'rmswatch.wsgi' has no attribute {name!r}")

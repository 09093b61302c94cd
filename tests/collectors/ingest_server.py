"""A bare Flask app with the ingest blueprint, served for real on 127.0.0.1 in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from flask import Flask
from sqlalchemy import Engine
from werkzeug.serving import make_server

from rmswatch.collectors.ingest import create_blueprint
from tests.helpers import free_port

TOKEN = "s3cret-token"


@contextlib.contextmanager
def serve_ingest(
    engine: Engine, *, token: str | None = TOKEN, max_batch_bytes: int = 1024 * 1024
) -> Iterator[str]:
    app = Flask("ingest-test")
    app.register_blueprint(create_blueprint(engine, token=token, max_batch_bytes=max_batch_bytes))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)

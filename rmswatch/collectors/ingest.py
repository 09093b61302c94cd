"""`POST /api/v1/ingest`: the server side of `HttpShipper`, as a Flask blueprint.

Bearer-token auth (401), a size limit (413), whole-batch validation before any write (422 naming
the field), then one transaction through the same write path as `StoreWriter`, so a retried batch
creates no duplicate rows. Production SLI samples (`kind: "sli"`) land in `sli_samples`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rmswatch.collectors.wire import WireError, decode_batch
from rmswatch.config import IngestConfig
from rmswatch.store.engine import write_transaction
from rmswatch.store.writes import (
    WriteCounts,
    close_run,
    upsert_run,
    write_sli_samples,
    write_telemetry,
)

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"


def _error(status: int, error: str, **extra: Any) -> Response:
    response = jsonify({"error": error, **extra})
    response.status_code = status
    return response


def create_blueprint(engine: Engine, *, token: str | None, max_batch_bytes: int) -> Blueprint:
    """The ingest blueprint writing into `engine`'s store (schema already at head).

    `token=None` (no token configured on the server) refuses every batch with 401, naming what
    to configure, rather than accepting telemetry from anyone.
    """
    if max_batch_bytes <= 0:
        raise ValueError(f"max_batch_bytes={max_batch_bytes!r}: must be > 0")
    blueprint = Blueprint("rmswatch_ingest", __name__)
    expected = f"Bearer {token}".encode() if token else None

    # without this the Dash catch-all route answers a GET here with the dashboard shell
    @blueprint.route(INGEST_PATH, methods=["GET", "PUT", "PATCH", "DELETE"])
    def wrong_method() -> Response:
        response = _error(405, "method not allowed", detail="the ingest API accepts POST only")
        response.headers["Allow"] = "POST"
        return response

    @blueprint.post(INGEST_PATH)
    def ingest() -> Response:
        if expected is None:
            return _unauthorized("ingest is disabled: no token configured on the server")
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _unauthorized("missing or wrong bearer token")
        if request.content_length is not None and request.content_length > max_batch_bytes:
            return _too_large(max_batch_bytes)
        raw = request.stream.read(max_batch_bytes + 1)
        if len(raw) > max_batch_bytes:
            return _too_large(max_batch_bytes)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, "body is not valid JSON", detail=str(exc))
        try:
            batch = decode_batch(body)
        except WireError as exc:
            return _error(422, "invalid batch", field=exc.field, detail=exc.message)
        counts = WriteCounts()
        try:
            with write_transaction(engine) as conn:
                if batch.run is not None:
                    run_pk = upsert_run(conn, batch.run, reopen=batch.open_run)
                    counts.add(write_telemetry(conn, run_pk, batch.telemetry))
                    if batch.status is not None:
                        close_run(conn, run_pk, batch.status, rank=batch.run.rank)
                counts.sli_samples = write_sli_samples(conn, batch.sli_samples)
        except SQLAlchemyError as exc:
            log.exception("ingest: store write failed")
            # 503: the shipper keeps the batch and retries it later
            return _error(503, "store unavailable", detail=type(exc).__name__)
        return jsonify(
            {
                "accepted": counts.as_dict(),
                "run_id": batch.run.run_id if batch.run is not None else None,
            }
        )

    return blueprint


def create_blueprint_from_config(engine: Engine, config: IngestConfig) -> Blueprint:
    """The blueprint with the token read from `$<config.token_env>`."""
    return create_blueprint(
        engine,
        token=os.environ.get(config.token_env) or None,
        max_batch_bytes=config.max_batch_bytes,
    )


def _unauthorized(detail: str) -> Response:
    response = _error(401, "unauthorized", detail=detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="rmswatch ingest"'
    return response


def _too_large(limit: int) -> Response:
    return _error(413, "batch too large", max_batch_bytes=limit)

"""`POST /api/v1/ingest`: the server side of `HttpShipper`, as a Flask blueprint.

Bearer-token auth (401), a size limit (413), POST only (405). A bad envelope (run, status) is
refused whole (422 naming the field); a bad record is refused alone (422 listing each refused
record by field) while the valid records of the same batch are stored, through the same write
path as `StoreWriter`, so a retried batch creates no duplicate rows. Production SLI samples
(`kind: "sli"`) land in `sli_samples`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rmswatch._validation import ArgumentError
from rmswatch.collectors.store_writer import Quarantined, write_isolating
from rmswatch.collectors.wire import Batch, WireError, decode_batch
from rmswatch.store.engine import write_transaction
from rmswatch.store.writes import WriteCounts, close_run, upsert_run, write_sli_samples
from rmswatch.trainer_hooks.screen import describe

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"


def _error(status: int, error: str, **extra: Any) -> Response:
    response = jsonify({"error": error, **extra})
    response.status_code = status
    return response


@dataclass
class IngestHealth:
    """What ingest refused since the server started; `/healthz` shows it."""

    rejected: int = 0
    quarantined: int = 0
    last_problem: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, rejected: int = 0, quarantined: int = 0, problem: str = "") -> None:
        with self._lock:
            self.rejected += rejected
            self.quarantined += quarantined
            if problem:
                self.last_problem = problem[:300]

    def summary(self) -> str:
        """One line per counter, for `/healthz`; empty while nothing was refused."""
        if not (self.rejected or self.quarantined):
            return ""
        return (
            f"ingest rejected {self.rejected} records (outside the store's limits), "
            f"quarantined {self.quarantined} (refused by the store); last: {self.last_problem}\n"
        )


def create_blueprint(
    engine: Engine,
    *,
    token: str | None,
    max_batch_bytes: int,
    health: IngestHealth | None = None,
) -> Blueprint:
    """The ingest blueprint writing into `engine`'s store (schema already at head).

    `token=None` (no token configured on the server) refuses every batch with 401, naming what
    to configure, rather than accepting telemetry from anyone. `health` collects what was
    rejected or quarantined (the server shows it on `/healthz`).
    """
    if max_batch_bytes <= 0:
        raise ArgumentError(f"max_batch_bytes={max_batch_bytes!r}: must be > 0")
    blueprint = Blueprint("rmswatch_ingest", __name__)
    expected = f"Bearer {token}".encode() if token else None
    counters = health if health is not None else IngestHealth()

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
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
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
            return _error(400, "body is not valid JSON", field="(body)", detail=str(exc))
        except RecursionError:
            return _error(422, "invalid batch", field="(body)", detail="JSON nested too deep")
        try:
            batch = decode_batch(body)
        except WireError as exc:
            counters.count(problem=str(exc))
            return _error(422, "invalid batch", field=exc.field, detail=exc.message)
        rejected = [r.as_dict() for r in batch.rejected]
        try:
            counts = _write(engine, batch, rejected)
        except SQLAlchemyError as exc:
            log.exception("ingest: store write failed")
            # 503: the shipper keeps the batch and retries it later
            return _error(503, "store unavailable", detail=type(exc).__name__)
        refused = [r for r in rejected if not r["stored"]]
        counters.count(
            rejected=sum(r["field"] != "(store)" for r in refused),
            quarantined=sum(r["field"] == "(store)" for r in refused),
            problem=f"{rejected[0]['field']}: {rejected[0]['detail']}" if rejected else "",
        )
        answer: dict[str, Any] = {
            "accepted": counts.as_dict(),
            "run_id": batch.run.run_id if batch.run is not None else None,
        }
        if not rejected:
            return jsonify(answer)
        # 422 naming each refused record; everything valid in the batch is stored (`accepted`),
        # so the client must not send it again
        first = rejected[0]
        return _error(
            422, "invalid records", field=first["field"], detail=first["detail"],
            rejected=rejected, **answer,
        )  # fmt: skip

    return blueprint


def _write(engine: Engine, batch: Batch, rejected: list[dict[str, Any]]) -> WriteCounts:
    """The batch through the shared write path; a record the store refuses is quarantined
    (reported in `rejected` with field "(store)") and the rest is written."""
    counts = WriteCounts()
    if batch.run is not None:
        with write_transaction(engine) as conn:
            run_pk = upsert_run(conn, batch.run, reopen=batch.open_run)
        positions = {id(item): i for i, item in enumerate(batch.telemetry)}

        def quarantine(entry: Quarantined) -> None:
            log.error("ingest: the store refused %s: %s", describe(entry.record), entry.reason)
            index = positions.get(id(entry.record), -1)
            rejected.append(
                {
                    "index": index,
                    "field": "(store)",
                    "detail": entry.reason,
                    "stored": False,
                    "status": 422,
                }  # fmt: skip
            )

        counts.add(write_isolating(engine, run_pk, list(batch.telemetry), quarantine))
        if batch.status is not None:
            with write_transaction(engine) as conn:
                close_run(conn, run_pk, batch.status, rank=batch.run.rank)
    if batch.sli_samples:
        with write_transaction(engine) as conn:
            counts.sli_samples = write_sli_samples(conn, batch.sli_samples)
    return counts


def _unauthorized(detail: str) -> Response:
    response = _error(401, "unauthorized", detail=detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="rmswatch ingest"'
    return response


def _too_large(limit: int) -> Response:
    return _error(413, "batch too large", max_batch_bytes=limit)

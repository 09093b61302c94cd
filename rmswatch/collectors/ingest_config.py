"""`server.ingest` in the server config: the token and size limit of `POST /api/v1/ingest`.

The server passes these to `rmswatch.collectors.ingest.create_blueprint`; a module of its own so
that reading a config file (`rmswatch rules`) never imports Flask or SQLAlchemy.
"""

from __future__ import annotations

from pydantic import Field

from rmswatch._validation import StrictModel


class IngestConfig(StrictModel):
    # bearer token for POST /api/v1/ingest, read from this environment variable
    token_env: str = "RMSWATCH_TOKEN"
    max_batch_bytes: int = Field(default=8 * 1024 * 1024, gt=0)

"""Fixtures shared by every test package: stores (SQLite file, real PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import unavailable

PG_ADMIN_URL = os.environ.get(
    "RMSWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.fspath(tmp_path)}/rmswatch.db"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL at 127.0.0.1:5432, dropped afterwards."""
    try:
        from sqlalchemy import create_engine, text
    except ImportError:  # pragma: no cover
        unavailable("sqlalchemy missing")
    name = f"rmswatch_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

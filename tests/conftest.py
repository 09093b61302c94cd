"""Fixtures shared by every test package: stores on a SQLite file and on the real PostgreSQL.

`store_url` is parametrized over both backends (the PostgreSQL case is marked `integration`),
`engine` is a migrated engine on it, `sqlite_engine` a migrated engine for tests whose
behaviour does not depend on the backend.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from rmswatch.store.engine import make_engine, upgrade
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def _migrated(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    yield from _migrated(store_url)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    yield from _migrated(sqlite_url)

"""Collector fixtures: store engines on both backends (shared with tests/store), and a SQLite-only
engine for tests whose behaviour doesn't depend on the backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from rmswatch.store.engine import make_engine, upgrade
from tests.store.conftest import engine, store_url

__all__ = ["engine", "sqlite_engine", "store_url"]


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()

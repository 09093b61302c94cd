"""App fixtures: what the server answers does not depend on the backend, so `engine` here is
the migrated SQLite engine (the store tests cover PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine


@pytest.fixture
def engine(sqlite_engine: Engine) -> Engine:
    return sqlite_engine

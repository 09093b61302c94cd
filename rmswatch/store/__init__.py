"""The run store: SQLAlchemy models, engine setup, migrations, retention and the query package.

Each name is imported on first use, so that reading a config (`store.retention_config`) never
pays for SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmswatch._validation import StoreError
    from rmswatch.store.engine import make_engine, open_store, upgrade, write_transaction
    from rmswatch.store.retention import apply_retention
    from rmswatch.store.retention_config import RetentionConfig

_WHERE = {
    "RetentionConfig": "rmswatch.store.retention_config",
    "StoreError": "rmswatch._validation",
    "apply_retention": "rmswatch.store.retention",
    "make_engine": "rmswatch.store.engine",
    "open_store": "rmswatch.store.engine",
    "upgrade": "rmswatch.store.engine",
    "write_transaction": "rmswatch.store.engine",
}

__all__ = [
    "RetentionConfig",
    "StoreError",
    "apply_retention",
    "make_engine",
    "open_store",
    "upgrade",
    "write_transaction",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rmswatch.store' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

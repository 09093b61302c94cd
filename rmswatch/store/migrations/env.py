"""Alembic environment: runs revisions on the connection `rmswatch.store.engine` hands over.

Every model module that shares `Base` is imported so autogenerate and the model/migration
consistency test see the whole schema (alerting adds `models_alerting`).
"""

from __future__ import annotations

import importlib
import importlib.util

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from rmswatch.store.models import Base

for _module in ("rmswatch.store.models_alerting",):
    if importlib.util.find_spec(_module) is not None:
        importlib.import_module(_module)

target_metadata = Base.metadata
config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite can't ALTER most things; batch mode rebuilds tables instead
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    connectable = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

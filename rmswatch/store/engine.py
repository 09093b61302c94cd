"""Engines for the run store (SQLite file or PostgreSQL) and schema upgrades through Alembic.

`make_engine(url)` sets each backend up for many concurrent writers; `upgrade(engine)` brings a
store of any earlier revision to head and is safe when several processes run it at once;
`open_store(url)` is both. A URL that can't be used raises `StoreError`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from rmswatch._validation import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_lock key: a fixed number derived from a name, shared by every rmswatch process
_PG_MIGRATION_LOCK = zlib.crc32(b"rmswatch.store.migrate")
_WRITE_OPTION = "rmswatch_write"


STORE_URL_HELP = "e.g. sqlite:///rmswatch.db or postgresql://user@host/dbname"


def normalize_url(url: str | URL) -> URL:
    """`postgresql://` and `postgres://` mean psycopg 3 (the PostgreSQL driver we ship).

    Raises StoreError for a string that is not a SQLAlchemy URL.
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise StoreError(
            f"store URL {_shown(url)}: not a database URL (accepted: {STORE_URL_HELP})"
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _shown(url: str | URL) -> str:
    """The URL as it may be printed: the password hidden (or everything after `scheme://`)."""
    if isinstance(url, URL):
        return repr(url.render_as_string(hide_password=True))
    scheme, sep, rest = url.partition("://")
    return repr(f"{scheme}://…" if sep and "@" in rest else url)


def open_store(url: str | URL) -> Engine:
    """An engine on a store upgraded to the newest schema; StoreError when it can't be opened."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    except sa_exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig) if exc.orig is not None else type(exc).__name__
        raise StoreError(f"store URL {_shown(engine.url)}: cannot open it: {reason}") from exc
    return engine


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for `url`, configured for the store's write pattern.

    SQLite: WAL (readers never block the writer), a 30 s busy timeout, foreign keys on,
    `synchronous=NORMAL` (durable at each checkpoint, safe against process crashes, which is what
    the loss window promises). Write transactions (`write_transaction`) start with
    `BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of failing on a lock upgrade.
    PostgreSQL: psycopg 3 with pre-ping, so a restarted server costs one failed flush, not a
    pool of dead connections.
    """
    parsed = normalize_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, **kwargs)
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **kwargs)
    except sa_exc.NoSuchModuleError as exc:
        raise StoreError(
            f"store URL {_shown(parsed)}: unknown database backend {parsed.drivername!r} "
            f"(accepted: sqlite, postgresql; {STORE_URL_HELP})"
        ) from exc


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    # the writer thread and the flusher thread share the engine, never a connection at once
    connect_args.setdefault("check_same_thread", False)
    if url.database in (None, "", ":memory:"):
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours (and DDL is transactional).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
            # No memory-mapped reads of the database file, whatever the build's default: a
            # mapped page whose file goes bad (truncated, read-only mount, I/O error) kills the
            # process with SIGBUS instead of raising, and that process may be the trainer. The
            # WAL index (-shm) stays mapped, as WAL needs; see docs/operations.md.
            cursor.execute("PRAGMA mmap_size = 0")
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
            except Exception:  # noqa: BLE001 - a read-only file can still be read
                pass
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that takes the write lock up front (SQLite) and commits."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """An ORM session inside `write_transaction`: flushed and committed on success.

    A plain `Session.begin()` on SQLite starts a deferred transaction that reads first and must
    upgrade its lock to write; under a concurrent writer that upgrade fails at once with
    "database is locked" instead of waiting on the busy timeout. Every ORM write goes here.
    """
    with write_transaction(engine) as conn, Session(bind=conn) as session:
        yield session
        session.flush()


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this rmswatch knows (e.g. "0001")."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StoreError(f"no Alembic revisions under {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The store's revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Create or upgrade the schema to `revision`; returns the revision the store is at.

    Safe when several processes do it at the same moment: PostgreSQL serialises on an advisory
    lock, SQLite on a lock file beside the database (plus retries on a busy database). A store
    already at the target is left alone without taking any lock.
    """
    target = head_revision() if revision == "head" else revision
    if current_revision(engine) == target:
        return target
    if engine.dialect.name == "postgresql":
        _upgrade_postgresql(engine, revision)
    else:
        _upgrade_sqlite(engine, revision)
    return current_revision(engine)


def _run_alembic_upgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(conn), revision)


def _upgrade_postgresql(engine: Engine, revision: str) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        conn.commit()
        try:
            _run_alembic_upgrade(conn, revision)
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
            conn.commit()


def _upgrade_sqlite(engine: Engine, revision: str, attempts: int = 5) -> None:
    with _sqlite_file_lock(engine):
        for attempt in range(attempts):
            try:
                with engine.connect() as conn:
                    _run_alembic_upgrade(conn, revision)
                    conn.commit()
                return
            except sa_exc.OperationalError as exc:  # noqa: PERF203 - a retry loop, not a hot path
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:" or sys.platform == "win32":
        yield
        return
    import fcntl

    lock_path = f"{database}.migrate-lock"
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        # a read-only directory: nobody can create the schema there anyway
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

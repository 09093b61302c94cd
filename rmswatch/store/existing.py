"""Opening a store that must already exist, for the commands that only read it (`report`,
`silence list`): a missing SQLite file or a malformed URL is one line naming the argument, and
nothing is ever created on disk."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rmswatch._validation import StoreError

URL_EXAMPLES = "e.g. sqlite:///path/to/rmswatch.db or postgresql+psycopg://user@host/db"


class StoreNotFoundError(StoreError, ValueError):
    """The store named by a command-line argument can't be read; the message says why."""


def open_existing_store(url: str, *, argument: str = "--db") -> Engine:
    """An engine on the rmswatch store at `url`, which must exist and hold the schema."""
    from rmswatch.store.engine import make_engine

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreNotFoundError(
            f"{argument} {url!r} is not a database URL ({URL_EXAMPLES})"
        ) from None
    url = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise StoreNotFoundError(
                f"{argument} {url!r}: an in-memory SQLite store is always empty; "
                f"name the file ({URL_EXAMPLES})"
            )
        path = Path(database)
        if not path.is_file():
            raise StoreNotFoundError(
                f"{argument} {url!r}: no such file {path.resolve()} "
                f"(the store is created by training with rmswatch.watch(..., store=URL) "
                f"or `rmswatch migrate`; {URL_EXAMPLES})"
            )
    try:
        engine = make_engine(parsed)
    except (ArgumentError, ImportError) as exc:
        raise StoreNotFoundError(f"{argument} {url!r}: {exc} ({URL_EXAMPLES})") from None
    try:
        has_runs = inspect(engine).has_table("runs")
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreNotFoundError(f"{argument} {url!r}: cannot connect: {reason}") from None
    if not has_runs:
        engine.dispose()
        raise StoreNotFoundError(
            f"{argument} {url!r} holds no rmswatch store (no runs table); "
            f"`rmswatch migrate --db URL` creates one"
        )
    return engine

"""`rmswatch migrate --db URL`: create or upgrade the store schema, print the revision."""

from __future__ import annotations

from rmswatch.store.engine import current_revision, make_engine, normalize_url, upgrade


def migrate_command(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        before = current_revision(engine)
        after = upgrade(engine)
    finally:
        engine.dispose()
    shown = normalize_url(db_url).render_as_string(hide_password=True)
    if before == after:
        print(f"{shown}: already at revision {after}")
    else:
        print(f"{shown}: upgraded {before or '(empty)'} -> {after}")
    return 0

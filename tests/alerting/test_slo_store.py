"""The SLO tests' store is opened the way the server opens one, not with bare SQLite defaults."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from rmswatch.store.models import Run, Step
from tests.alerting.slo_store import T0, add_run, add_steps, new_store


def test_the_slo_test_store_has_wal_a_busy_timeout_and_enforced_foreign_keys(
    sqlite_url: str,
) -> None:
    engine = new_store(sqlite_url)
    run_pk = add_run(engine, "r1")
    add_steps(engine, run_pk, [{"step": s, "time": T0 + s} for s in range(3)])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0
    with engine.begin() as conn:  # foreign keys on: a deleted run takes its steps with it
        conn.execute(delete(Run).where(Run.id == run_pk))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Step)).scalar() == 0
    engine.dispose()

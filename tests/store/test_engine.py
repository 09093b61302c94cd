from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from rmswatch.commands.migrate import migrate_command
from rmswatch.store.engine import (
    current_revision,
    head_revision,
    make_engine,
    upgrade,
    write_transaction,
)
from rmswatch.store.models import Base, HistogramRow, LayerStep, Run, Step
from rmswatch.store.writes import upsert_run, write_telemetry
from tests.factories import run_info, step_record
from tests.helpers import subprocess_env
from tests.store.test_migration_0003 import write_as_of_old_revision


def test_sqlite_store_uses_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        # no memory-mapped database reads: a bad file must raise, not SIGBUS the trainer
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
    engine.dispose()


def test_plain_postgresql_url_gets_the_psycopg_driver() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/x")
    assert engine.dialect.driver == "psycopg"


def test_upgrade_creates_every_table_at_head_and_is_idempotent(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert upgrade(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"runs", "steps", "layer_steps", "histograms", "sli_samples"} <= tables


def test_migrations_create_exactly_the_schema_the_models_describe(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_store_created_at_revision_0001_upgrades_in_place_keeping_its_data(
    store_url: str,
) -> None:
    engine = make_engine(store_url)
    assert upgrade(engine, "0001") == "0001"
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info("old-run"), reopen=True)
        write_as_of_old_revision(conn, run_pk, [step_record(s) for s in range(3)])
    assert upgrade(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(Run.run_id)).scalars().all() == ["old-run"]
        assert conn.execute(select(Step.step).order_by(Step.step)).scalars().all() == [0, 1, 2]
        # existing rows are rank 0's
        for table in (Step, LayerStep, HistogramRow):
            assert set(conn.execute(select(table.rank)).scalars()) == {0}
    # and another rank's rows for the same steps now land beside them
    with write_transaction(engine) as conn:
        write_telemetry(conn, run_pk, [replace(step_record(s), rank=1) for s in range(3)])
    with engine.connect() as conn:
        ranks = conn.execute(select(Step.rank, Step.step).order_by(Step.rank, Step.step)).all()
    assert [tuple(r) for r in ranks] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    engine.dispose()


@pytest.mark.slow
def test_processes_creating_the_schema_at_the_same_moment_all_succeed(store_url: str) -> None:
    start_at = time.time() + 3.0  # every child is imported and waiting by then
    child = (
        "import sys, time\n"
        "from rmswatch.store.engine import make_engine, upgrade\n"
        "engine = make_engine(sys.argv[1])\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(upgrade(engine))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, store_url, str(start_at)],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == head_revision()
    engine = make_engine(store_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrate_command_reports_the_upgrade_then_that_nothing_was_left(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate_command(db_url=sqlite_url) == 0
    assert f"(empty) -> {head_revision()}" in capsys.readouterr().out
    assert migrate_command(db_url=sqlite_url) == 0
    assert f"already at revision {head_revision()}" in capsys.readouterr().out


def test_write_transaction_on_sqlite_takes_the_write_lock_up_front(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with write_transaction(engine) as conn:
        # a second connection that wants to write must wait: the lock is already held
        other = make_engine(sqlite_url, connect_args={"timeout": 0.1})
        with other.connect() as second:
            second.exec_driver_sql("PRAGMA busy_timeout = 100")
            with pytest.raises(Exception, match="locked"):
                second.execute(
                    text(
                        "INSERT INTO sli_samples (job, name, time, value, labels)"
                        " VALUES ('j', 'n', '2025-01-01', 1.0, '{}')"
                    )
                )
        other.dispose()
        conn.execute(text("SELECT 1"))
    engine.dispose()

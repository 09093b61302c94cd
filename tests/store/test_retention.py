from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from rmswatch.store.engine import write_transaction
from rmswatch.store.models import HistogramRow, Run, Step
from rmswatch.store.retention import apply_retention
from rmswatch.store.retention_config import RetentionConfig
from rmswatch.store.writes import SliSampleRecord, upsert_run, write_sli_samples, write_telemetry
from tests.factories import T0, run_info, step_record

HOUR = 3600.0


def _histogram_steps(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        stmt = select(HistogramRow.step).where(HistogramRow.layer == "layer0.weight")
        return sorted(conn.execute(stmt.order_by(HistogramRow.step)).scalars())


def test_histograms_older_than_full_resolution_keep_only_every_nth_step(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info(), reopen=True)
        # steps 0..29 two hours old, steps 30..39 fresh
        write_telemetry(conn, run_pk, [step_record(s) for s in range(30)])
        write_telemetry(conn, run_pk, [step_record(s, t0=T0 + 2 * HOUR) for s in range(30, 40)])
    report = apply_retention(
        engine,
        RetentionConfig(full_resolution_hours=1, downsample_every=10, keep_days=None),
        now=T0 + 2 * HOUR + 60,
    )
    assert _histogram_steps(engine) == [0, 10, 20, *range(30, 40)]
    assert report.downsampled == 27 * 2  # two layers
    with engine.connect() as conn:  # the step rows themselves are untouched
        assert len(conn.execute(select(Step.step)).all()) == 40


def test_downsampling_counts_telemetry_steps_not_optimizer_steps(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info(), reopen=True)
        conn.execute(Run.__table__.update().where(Run.id == run_pk).values(every=5))
        write_telemetry(conn, run_pk, [step_record(s) for s in range(1, 100, 5)])
    apply_retention(
        engine, RetentionConfig(downsample_every=10, keep_days=None), now=T0 + 10 * HOUR
    )
    assert _histogram_steps(engine) == [1, 51]


def test_telemetry_older_than_keep_days_is_deleted_but_the_run_is_kept(engine: Engine) -> None:
    day = 24 * HOUR
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info(), reopen=True)
        write_telemetry(conn, run_pk, [step_record(0), step_record(1, t0=T0 + 10 * day)])
        write_sli_samples(conn, [SliSampleRecord("j", "model_drift", 1.0, T0)])
    report = apply_retention(
        engine, RetentionConfig(keep_days=5, downsample_every=1), now=T0 + 10 * day
    )
    assert report.expired["steps"] == 1 and report.expired["sli_samples"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(Step.step)).scalars().all() == [1]
        assert conn.execute(select(Run.run_id)).scalars().all() == ["run-1"]


def test_the_alert_scheduler_runs_retention_on_the_configured_policy(engine: Engine) -> None:
    from rmswatch.alerting.scheduler import RETENTION_INTERVAL_SECONDS, start_scheduler
    from rmswatch.config import Config, StoreConfig

    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info(), reopen=True)
        write_telemetry(conn, run_pk, [step_record(s) for s in range(30)])
    config = Config(
        store=StoreConfig(retention=RetentionConfig(full_resolution_hours=1, downsample_every=10))
    )
    handle = start_scheduler(
        engine, config, start=False, clock=lambda: datetime.fromtimestamp(T0 + 3 * HOUR, UTC)
    )
    try:
        job = handle.scheduler.get_job("rmswatch-retention")
        assert job.trigger.interval.total_seconds() == RETENTION_INTERVAL_SECONDS
        report = handle.retain()
    finally:
        handle.shutdown(wait=False)
    assert report is not None and report.downsampled == 27 * 2
    assert _histogram_steps(engine) == [0, 10, 20]

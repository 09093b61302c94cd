from __future__ import annotations

from sqlalchemy import Engine, select

from rmswatch.config import RetentionConfig
from rmswatch.store.engine import write_transaction
from rmswatch.store.models import HistogramRow, Run, Step
from rmswatch.store.retention import apply_retention
from rmswatch.store.writes import SliSampleRecord, upsert_run, write_sli_samples, write_telemetry
from tests.store.records_factory import T0, run_info, step_record

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

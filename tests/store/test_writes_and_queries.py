from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from rmswatch.store import queries
from rmswatch.store.engine import write_transaction
from rmswatch.store.models import HistogramRow, LayerStep, Step, SystemSampleRow
from rmswatch.store.writes import (
    SliSampleRecord,
    close_run,
    upsert_run,
    write_sli_samples,
    write_telemetry,
)
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    CheckpointRecord,
    RunStatus,
    SystemSample,
    ValidationRecord,
)
from tests.factories import T0, run_info, step_record


def _write(engine: Engine, items: list, run_id: str = "run-1") -> int:  # type: ignore[type-arg]
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info(run_id), reopen=True)
        write_telemetry(conn, run_pk, items)
    return run_pk


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_writing_the_same_batch_twice_creates_no_duplicate_rows(engine: Engine) -> None:
    batch = [step_record(s, layers=3) for s in range(5)]
    batch += [SystemSample(T0 + 1, 10.0, 1000, 50.0, 2**30, 1)]
    _write(engine, batch)
    _write(engine, batch)
    assert _count(engine, Step) == 5
    assert _count(engine, LayerStep) == 15
    assert _count(engine, HistogramRow) == 15
    assert _count(engine, SystemSampleRow) == 1


def test_heartbeat_only_moves_forward(engine: Engine) -> None:
    _write(engine, [step_record(s) for s in range(10)])
    _write(engine, [step_record(3)])  # a late, replayed record
    row = queries.runs(engine, now=T0 + 20).iloc[0]
    assert row["last_step"] == 9
    assert row["last_step_at"] == pd.Timestamp(T0 + 9, unit="s", tz="UTC")
    assert row["heartbeat_age_s"] == pytest.approx(11.0)


def test_gpu_seconds_integrate_gpu_count_over_time_and_a_retry_adds_nothing(
    engine: Engine,
) -> None:
    samples = [SystemSample(T0 + 10 * i, 5.0, 100, 90.0, 10, 2) for i in range(4)]
    _write(engine, samples[:2])
    _write(engine, samples[2:])
    _write(engine, samples[2:])  # retried batch
    frame = queries.gpu_hours(engine, gpu_hour_usd=3.0)
    # three 10 s intervals with 2 GPUs each
    assert frame.loc[0, "gpu_seconds"] == pytest.approx(60.0)
    assert frame.loc[0, "cost_usd"] == pytest.approx(60.0 / 3600 * 3.0)


def test_non_finite_loss_and_norms_are_stored_without_error(engine: Engine) -> None:
    run_pk = _write(engine, [step_record(0, loss=math.nan), step_record(1, loss=math.inf)])
    frame = queries.steps(engine, run_pk)
    assert frame["step"].tolist() == [0, 1]
    # SQLite stores NaN as NULL; PostgreSQL keeps it. Either way it is not a finite loss.
    assert not math.isfinite(frame["loss"].fillna(math.nan).iloc[0])


def test_closing_a_run_records_status_and_end_time(engine: Engine) -> None:
    run_pk = _write(engine, [step_record(0)])
    with write_transaction(engine) as conn:
        close_run(conn, run_pk, RunStatus(T0 + 50, "failed", "loss diverged"))
    run = queries.run(engine, "run-1")
    assert run is not None
    assert (run["status"], run["status_detail"]) == ("failed", "loss diverged")
    assert run["ended_at"] == pd.Timestamp(T0 + 50, unit="s", tz="UTC")


def test_steps_query_filters_by_step_and_time_and_thins_to_max_points(engine: Engine) -> None:
    run_pk = _write(engine, [step_record(s) for s in range(100)])
    assert queries.steps(engine, run_pk, start_step=10, end_step=19)["step"].tolist() == list(
        range(10, 20)
    )
    since = datetime.fromtimestamp(T0 + 95, tz=UTC)
    assert queries.steps(engine, run_pk, since=since)["step"].tolist() == [95, 96, 97, 98, 99]
    thinned = queries.steps(engine, run_pk, max_points=10)["step"].tolist()
    assert thinned == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]


def test_layer_stats_are_long_form_and_filter_by_layer(engine: Engine) -> None:
    run_pk = _write(engine, [step_record(s, layers=3) for s in range(4)])
    frame = queries.layer_stats(engine, run_pk, layers=["layer1.weight"])
    assert frame["layer"].unique().tolist() == ["layer1.weight"]
    assert frame["step"].tolist() == [0, 1, 2, 3]
    thinned = queries.layer_stats(engine, run_pk, max_points=2)
    assert sorted(set(thinned["step"])) == [0, 2, 3]
    assert len(thinned) == 9


def test_histogram_matrix_has_one_row_per_step_and_one_column_per_bucket(engine: Engine) -> None:
    run_pk = _write(engine, [step_record(s) for s in range(5)])
    matrix = queries.histogram_matrix(engine, run_pk, "layer0.weight")
    assert matrix.index.tolist() == [0, 1, 2, 3, 4]
    assert matrix.shape[1] == len(RMS_EDGES) - 1
    assert list(matrix.columns) == pytest.approx(list(RMS_EDGES[:-1]))
    assert matrix.loc[3].tolist()[3] == 16
    assert matrix.sum(axis=1).tolist() == [16] * 5
    long = queries.histograms(engine, run_pk, "layer0.weight")
    assert len(long) == 5 and list(long.loc[0, "counts"])[0] == 16


def test_validations_checkpoints_and_system_samples_come_back_in_order(engine: Engine) -> None:
    run_pk = _write(
        engine,
        [
            ValidationRecord(10, T0 + 10, 0.5),
            ValidationRecord(5, T0 + 5, 0.7),
            CheckpointRecord(10, T0 + 11, "save", seconds=1.5, size_bytes=2048, path="/ck/10"),
            CheckpointRecord(12, T0 + 12, "load", ok=False, detail="shape mismatch"),
            SystemSample(T0 + 3, 50.0, 123, None, None, 0),
        ],
    )
    assert queries.validations(engine, [run_pk])["value"].tolist() == [0.7, 0.5]
    ckpt = queries.checkpoints(engine, run_pk)
    assert ckpt["action"].tolist() == ["save", "load"]
    assert ckpt["ok"].tolist() == [True, False]
    assert queries.system_samples(engine, run_pk)["rss_bytes"].tolist() == [123]


def test_sli_samples_are_stored_once_and_filtered_by_job_and_name(engine: Engine) -> None:
    samples = [
        SliSampleRecord("ranker", "model_drift", 0.1 * i, T0 + i, {"region": "eu"})
        for i in range(3)
    ] + [SliSampleRecord("other", "model_drift", 9.0, T0)]
    with write_transaction(engine) as conn:
        write_sli_samples(conn, samples)
        write_sli_samples(conn, samples)
    frame = queries.sli_samples(engine, job="ranker", name="model_drift")
    assert frame["value"].tolist() == pytest.approx([0.0, 0.1, 0.2])
    assert frame["time"].dt.tz is not None


def test_runs_query_filters_by_job_and_status(engine: Engine) -> None:
    _write(engine, [step_record(0)], run_id="a")
    with write_transaction(engine) as conn:
        upsert_run(conn, run_info("b", job="other"), reopen=True)
    assert queries.runs(engine, job="other")["run_id"].tolist() == ["b"]
    assert sorted(queries.runs(engine, status="running")["run_id"]) == ["a", "b"]
    assert queries.runs(engine, status=["failed"]).empty


def test_queries_on_an_unknown_run_return_empty_frames_with_columns(engine: Engine) -> None:
    frame = queries.steps(engine, run_pk=404)
    assert frame.empty and "loss" in frame.columns
    assert queries.run(engine, "nope") is None
    assert queries.histogram_matrix(engine, 404, "x").empty

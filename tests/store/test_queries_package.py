"""The query package is one vocabulary: one face, one time convention."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine

from rmswatch.store import queries
from rmswatch.store.engine import write_transaction
from rmswatch.store.writes import upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import CheckpointRecord, ValidationRecord
from tests.factories import T0, run_info, step_record


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert queries.__all__ == sorted(queries.__all__)
    for name in queries.__all__:
        assert getattr(queries, name) is not None


def test_epoch_seconds_are_exactly_what_datetime_timestamp_gives() -> None:
    moments = [
        datetime(2026, 12, 3, 15, 4, 5, 123457, tzinfo=UTC),
        datetime(2031, 1, 1, 0, 0, 0, 999999, tzinfo=UTC),
    ]
    seconds = queries.epoch_seconds(pd.Series([*moments, None]))
    assert seconds.tolist()[:2] == [m.timestamp() for m in moments]
    assert math.isnan(seconds.iloc[2])


def test_every_time_argument_form_means_the_same_moment() -> None:
    aware = datetime.fromtimestamp(T0, tz=UTC)
    forms = [aware, aware.replace(tzinfo=None), pd.Timestamp(aware), float(T0)]
    assert {queries.as_datetime(form) for form in forms} == {aware}


def test_time_columns_are_tz_aware_utc_in_every_per_run_query(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        run_pk = upsert_run(conn, run_info("run-1"), reopen=True)
        write_telemetry(
            conn,
            run_pk,
            [
                step_record(0, layers=2),
                step_record(1, layers=2),
                ValidationRecord(1, T0 + 1, 0.5),
                CheckpointRecord(1, T0 + 1, "save", ok=False),
            ],
        )
    frames = {
        "steps": queries.steps(engine, run_pk)["time"],
        "step_series": queries.step_series(engine, run_pk, ["time"])["time"],
        "layer_stats": queries.layer_stats(engine, run_pk)["time"],
        "layer_series": queries.layer_series(engine, run_pk, "layer0.weight", ["time"])["time"],
        "validations": queries.validations(engine, [run_pk])["time"],
        "checkpoints": queries.checkpoints(engine, run_pk)["time"],
        "step_tails": queries.step_tails(engine, [run_pk], 10)["time"],
        "checkpoint_failures": queries.checkpoint_failures(engine, [run_pk], T0)["last_failure_at"],
        "runs": queries.runs(engine)["last_step_at"],
    }
    for name, times in frames.items():
        assert str(times.dt.tz) == "UTC", name
        assert times.min() >= pd.Timestamp(T0, unit="s", tz="UTC"), name
        assert times.max() <= pd.Timestamp(T0, unit="s", tz="UTC") + timedelta(seconds=1), name


def test_a_run_id_where_a_run_pk_belongs_is_an_error_not_an_empty_frame(engine: Engine) -> None:
    with pytest.raises(TypeError, match="run_pk='run-1'.*not its run_id"):
        queries.steps(engine, "run-1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run_pk='run-1'"):
        queries.validations(engine, ["run-1"])  # type: ignore[list-item]

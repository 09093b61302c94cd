"""What alert evaluation reads from the store, with its times as float UTC epoch seconds.

`rmswatch.store.queries` returns tz-aware Timestamps; burn-rate buckets, heartbeats and step
windows are arithmetic on seconds, so the times become floats once, here, and nowhere else.
The count queries have no time columns and pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Engine

from rmswatch.store import queries
from rmswatch.store.queries import (
    checkpoint_save_counts,
    run_outcome_counts,
    sample_counter_increases,
    step_counts,
    validation_outcome_counts,
)

__all__ = [
    "checkpoint_failures",
    "checkpoint_save_counts",
    "losses",
    "previous_runs",
    "empty_tails",
    "latest_checkpoint_loads",
    "latest_rank_checks",
    "run_outcome_counts",
    "runs",
    "sample_counter_increases",
    "step_counts",
    "step_tails",
    "steps_since",
    "validation_outcome_counts",
    "validations",
]


def _seconds(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = queries.epoch_seconds(frame[column])
    return frame


def runs(engine: Engine, active_since: float) -> pd.DataFrame:
    """Runs running now or ended since `active_since`, in store order."""
    frame = queries.runs(engine, active_since).sort_values("run_pk", ignore_index=True)
    return _seconds(frame, "started_at", "ended_at", "last_step_at")


def empty_tails() -> pd.DataFrame:
    return _seconds(queries.empty_tails(), "time")


def step_tails(engine: Engine, run_pks: Sequence[int], span_steps: int) -> pd.DataFrame:
    return _seconds(queries.step_tails(engine, run_pks, span_steps), "time")


def steps_since(engine: Engine, run_pks: Sequence[int], since: float) -> pd.DataFrame:
    return _seconds(queries.steps_since(engine, run_pks, since), "time")


def validations(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    """Validation losses (`val_loss`) of these runs, in step order."""
    return _seconds(queries.validations(engine, run_pks, name="val_loss"), "time")


def checkpoint_failures(engine: Engine, run_pks: Sequence[int], since: float) -> pd.DataFrame:
    return _seconds(queries.checkpoint_failures(engine, run_pks, since), "last_failure_at")


def previous_runs(engine: Engine, job: str, before: float, limit: int) -> pd.DataFrame:
    """The job's newest `limit` runs that started before `before` (epoch seconds), any status,
    newest first, with their times in seconds."""
    frame = queries.runs(engine, job=job, active_to=before - 1e-6).head(limit)
    return _seconds(frame, "started_at", "ended_at", "last_step_at")


def losses(engine: Engine, run_pk: int) -> pd.DataFrame:
    """(step, loss) of one run, in step order."""
    return queries.step_series(engine, run_pk, ["loss"])


def latest_checkpoint_loads(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    return _seconds(queries.latest_checkpoint_loads(engine, run_pks), "time")


def latest_rank_checks(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    return _seconds(queries.latest_rank_checks(engine, run_pks), "time")

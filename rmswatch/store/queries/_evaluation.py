"""Inputs of alert evaluation: SLI event counts per time bucket and health-rule step tails.

Every count is pre-aggregated in SQL per (run, time bucket), so one evaluation tick reads a few
rows per run however many steps the runs logged. A bucket is floor(epoch seconds / bucket).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, case, cast, func, or_, select
from sqlalchemy import Integer as SqlInteger
from sqlalchemy.sql.elements import ColumnElement

from rmswatch.store.models import Checkpoint, Run, SliSample, Step, Validation
from rmswatch.store.queries._common import (
    TimeLike,
    _frame,
    _pks,
    as_datetime,
    epoch_seconds,
)
from rmswatch.store.queries._runs import had_incident

_NONFINITE_COLUMNS = {
    "loss": Step.nonfinite_loss,
    "grad": Step.nonfinite_grad,
    "param": Step.nonfinite_param,
    "state": Step.nonfinite_state,
}
COUNT_COLUMNS = ("run_pk", "bucket", "good", "total")
_COUNT_TYPES = {"run_pk": "int64", "bucket": "int64", "good": "float64", "total": "float64"}


def _bucket(engine: Engine, column: Any, bucket_seconds: int) -> ColumnElement[Any]:
    """floor(epoch(column) / bucket_seconds), in the store's SQL dialect."""
    if engine.dialect.name == "sqlite":
        return cast(func.strftime("%s", column), SqlInteger) / bucket_seconds
    return cast(func.floor(func.extract("epoch", column) / bucket_seconds), SqlInteger)


def _counts(engine: Engine, statement: Any) -> pd.DataFrame:
    frame = _frame(engine, statement)
    frame.columns = pd.Index(COUNT_COLUMNS)
    return frame.astype(_COUNT_TYPES)


def _active_step_runs(since: TimeLike) -> ColumnElement[bool]:
    # only runs that could have logged a step since `since`, so the (run_pk, time) index is used
    start = as_datetime(since)
    return and_(
        Step.run_pk == Run.id,
        or_(Run.ended_at.is_(None), Run.ended_at >= start),
        Step.time >= start,
    )


def step_counts(
    engine: Engine,
    since: TimeLike,
    bucket_seconds: int,
    *,
    nonfinite_kinds: Sequence[str] = (),
    threshold_seconds: float | None = None,
) -> pd.DataFrame:
    """Per (run, bucket): steps (total) and good steps.

    Good is "no non-finite count in `nonfinite_kinds`", or "step_seconds <= threshold" (then
    only steps with a measured duration count).
    """
    bucket = _bucket(engine, Step.time, bucket_seconds)
    total: Any = func.count()
    where = _active_step_runs(since)
    if threshold_seconds is not None:
        good: Any = func.sum(case((Step.step_seconds <= threshold_seconds, 1), else_=0))
        where = and_(where, Step.step_seconds.is_not(None))
    else:
        bad = or_(*(_NONFINITE_COLUMNS[k] > 0 for k in nonfinite_kinds))
        good = func.sum(case((bad, 0), else_=1))
    statement = (
        select(Step.run_pk, bucket.label("bucket"), good, total)
        .select_from(Step)
        .join(Run, Run.id == Step.run_pk)
        .where(where)
        .group_by(Step.run_pk, bucket)
    )
    return _counts(engine, statement)


def run_outcome_counts(
    engine: Engine,
    since: TimeLike,
    bucket_seconds: int,
    good_statuses: Sequence[str],
    bad_statuses: Sequence[str],
    *,
    incident_is_bad: bool = False,
) -> pd.DataFrame:
    """Per (run, bucket of its end): 1 finished run, good if it succeeded (and, with
    `incident_is_bad`, no page fired about it: "succeeded with incident" is bad).

    Runs still marked running are not events at all: a finished job is not a crashed job.
    """
    bucket = _bucket(engine, Run.ended_at, bucket_seconds)
    good: ColumnElement[bool] = Run.status.in_(list(good_statuses))
    if incident_is_bad:
        good = and_(good, ~had_incident())
    statement = select(
        Run.id,
        bucket.label("bucket"),
        case((good, 1), else_=0),
        1,
    ).where(
        Run.ended_at.is_not(None),
        Run.ended_at >= as_datetime(since),
        Run.status.in_([*good_statuses, *bad_statuses]),
    )
    return _counts(engine, statement)


def checkpoint_save_counts(engine: Engine, since: TimeLike, bucket_seconds: int) -> pd.DataFrame:
    """Per (run, bucket): checkpoint saves and successful ones."""
    bucket = _bucket(engine, Checkpoint.time, bucket_seconds)
    statement = (
        select(
            Checkpoint.run_pk,
            bucket.label("bucket"),
            func.sum(case((Checkpoint.ok, 1), else_=0)),
            func.count(),
        )
        .where(Checkpoint.action == "save", Checkpoint.time >= as_datetime(since))
        .group_by(Checkpoint.run_pk, bucket)
    )
    return _counts(engine, statement)


def validation_outcome_counts(
    engine: Engine, since: TimeLike, bucket_seconds: int, good_statuses: Sequence[str]
) -> pd.DataFrame:
    """Per (run, bucket of its end): 1 finished run with 2+ validations, good if its final
    validation loss is not worse than its best earlier one."""
    statement = (
        select(Validation.run_pk, Run.ended_at, Validation.step, Validation.value)
        .join(Run, Run.id == Validation.run_pk)
        .where(
            Run.ended_at.is_not(None),
            Run.ended_at >= as_datetime(since),
            Run.status.in_(list(good_statuses)),
            Validation.name == "val_loss",
            Validation.value.is_not(None),
        )
        .order_by(Validation.run_pk, Validation.step)
    )
    frame = _frame(engine, statement)
    if frame.empty:
        return pd.DataFrame(columns=list(COUNT_COLUMNS)).astype(_COUNT_TYPES)
    frame["ended_at"] = epoch_seconds(frame["ended_at"])
    grouped = frame.groupby("run_pk", sort=False)
    final = grouped["value"].last()
    best_earlier = grouped["value"].apply(lambda v: v.iloc[:-1].min())
    count = grouped["value"].size()
    out = pd.DataFrame(
        {
            "run_pk": final.index.astype("int64"),
            "bucket": (grouped["ended_at"].first() // bucket_seconds).astype("int64").to_numpy(),
            "good": (final <= best_earlier).astype("float64").to_numpy(),
            "total": 1.0,
        }
    )
    return out[(count >= 2).to_numpy()].reset_index(drop=True)


def sample_counter_increases(
    engine: Engine, since: TimeLike, bucket_seconds: int, names: Sequence[str]
) -> pd.DataFrame:
    """Per (job, name, bucket): increase of a cumulative SLI-sample counter (resets allowed).

    The last sample before `since` is read too, so the first increase in range is exact.
    """
    start = as_datetime(since)
    cutoff = float(since) if isinstance(since, int | float) else start.timestamp()
    before = (
        select(SliSample.job, SliSample.name, func.max(SliSample.time).label("time"))
        .where(SliSample.name.in_(list(names)), SliSample.time < start)
        .group_by(SliSample.job, SliSample.name)
        .subquery()
    )
    sample = (SliSample.job, SliSample.name, SliSample.time, SliSample.value)
    previous = select(*sample).join(
        before,
        and_(
            SliSample.job == before.c.job,
            SliSample.name == before.c.name,
            SliSample.time == before.c.time,
        ),
    )
    recent = select(*sample).where(SliSample.name.in_(list(names)), SliSample.time >= start)
    frame = pd.concat([_frame(engine, previous), _frame(engine, recent)], ignore_index=True)
    if frame.empty:
        return pd.DataFrame(columns=["job", "name", "bucket", "increase"])
    frame["time"] = epoch_seconds(frame["time"])
    frame = frame.sort_values(["job", "name", "time"])
    delta = frame.groupby(["job", "name"])["value"].diff()
    # a counter that went down was reset: its new value is the increase since the reset
    frame["increase"] = delta.where(delta >= 0, frame["value"])
    frame = frame[frame["time"] >= cutoff].dropna(subset=["increase"])
    frame["bucket"] = (frame["time"] // bucket_seconds).astype("int64")
    summed: pd.DataFrame = frame.groupby(["job", "name", "bucket"], as_index=False)[
        ["increase"]
    ].sum()
    return summed


# ------------------------------------------------------------------------- health-rule inputs

_STEP_TAIL_SELECT = (
    Step.run_pk, Step.step, Step.time, Step.loss, Step.grad_norm, Step.eff_lr_mean,
    Step.step_seconds, Step.nonfinite_loss, Step.nonfinite_grad, Step.nonfinite_param,
    Step.nonfinite_state, Step.skipped, Step.loss_scale, Step.lr,
)  # fmt: skip
STEP_TAIL_COLUMNS = tuple(str(column.key) for column in _STEP_TAIL_SELECT)
_TAIL_FLOATS = (
    "loss", "grad_norm", "eff_lr_mean", "step_seconds", "loss_scale", "skipped", "lr",
)  # fmt: skip


def empty_tails() -> pd.DataFrame:
    """A `step_tails` frame with no rows."""
    frame = pd.DataFrame(columns=list(STEP_TAIL_COLUMNS))
    frame = frame.astype({c: "float64" for c in STEP_TAIL_COLUMNS} | {"run_pk": "int64"})
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def _tail_frame(engine: Engine, statement: Any) -> pd.DataFrame:
    frame = _frame(engine, statement, ("time",))
    return frame.astype({c: "float64" for c in _TAIL_FLOATS})


def step_tails(engine: Engine, run_pks: Sequence[int], span_steps: int) -> pd.DataFrame:
    """The steps of each run within `span_steps` optimizer steps of its last step."""
    if not run_pks:
        return empty_tails()
    statement = (
        select(*_STEP_TAIL_SELECT)
        .join(Run, Run.id == Step.run_pk)
        .where(Run.id.in_(_pks(run_pks)), Step.step > Run.last_step - span_steps * Run.every)
        .order_by(Step.run_pk, Step.step)
    )
    return _tail_frame(engine, statement)


def steps_since(engine: Engine, run_pks: Sequence[int], since: TimeLike) -> pd.DataFrame:
    """Steps of these runs logged at or after `since` (the incremental part of the tails)."""
    if not run_pks:
        return empty_tails()
    statement = (
        select(*_STEP_TAIL_SELECT)
        .where(Step.run_pk.in_(_pks(run_pks)), Step.time >= as_datetime(since))
        .order_by(Step.run_pk, Step.step)
    )
    return _tail_frame(engine, statement)


def checkpoint_failures(engine: Engine, run_pks: Sequence[int], since: TimeLike) -> pd.DataFrame:
    """Per run: failed checkpoint saves since `since` (failures), and when the last one
    happened (last_failure_at)."""
    statement = (
        select(
            Checkpoint.run_pk,
            func.count().label("failures"),
            func.max(Checkpoint.time).label("last_failure_at"),
        )
        .where(
            Checkpoint.run_pk.in_(_pks(run_pks)),
            Checkpoint.action == "save",
            Checkpoint.ok.is_(False),
            Checkpoint.time >= as_datetime(since),
        )
        .group_by(Checkpoint.run_pk)
    )
    return _frame(engine, statement, ("last_failure_at",))

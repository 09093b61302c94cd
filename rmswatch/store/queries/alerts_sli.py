"""SLI event counts and health-rule inputs for alert evaluation: SQL in, pandas out.

Every count is pre-aggregated in SQL per (run, time bucket), so one evaluation tick reads a few
rows per run however many steps the runs logged; `time`s are UTC epoch seconds (floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, case, cast, func, or_, select
from sqlalchemy import Integer as SqlInteger
from sqlalchemy.sql.elements import ColumnElement

from rmswatch.store.models import Checkpoint, Run, SliSample, Step, Validation

_NONFINITE_COLUMNS = {
    "loss": Step.nonfinite_loss,
    "grad": Step.nonfinite_grad,
    "param": Step.nonfinite_param,
    "state": Step.nonfinite_state,
}
COUNT_COLUMNS = ["run_pk", "bucket", "good", "total"]


def to_datetime(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)


def _epoch(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return float("nan")
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite hands back naive UTC
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    number: float = float(value)
    return number


def _epoch_column(frame: pd.DataFrame, column: str) -> None:
    frame[column] = [_epoch(v) for v in frame[column]] if len(frame) else pd.Series(dtype=float)


def _bucket(engine: Engine, column: Any, bucket_seconds: int) -> ColumnElement[Any]:
    """floor(epoch(column) / bucket_seconds), in the store's SQL dialect."""
    if engine.dialect.name == "sqlite":
        return cast(func.strftime("%s", column), SqlInteger) / bucket_seconds
    return cast(func.floor(func.extract("epoch", column) / bucket_seconds), SqlInteger)


def _frame(engine: Engine, statement: Any, columns: list[str]) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def _counts(engine: Engine, statement: Any) -> pd.DataFrame:
    frame = _frame(engine, statement, COUNT_COLUMNS)
    return frame.astype(
        {"run_pk": "int64", "bucket": "int64", "good": "float64", "total": "float64"}
    )


def runs(engine: Engine, active_since: float) -> pd.DataFrame:
    """Runs running now or ended since `active_since`, with their heartbeat and labels."""
    columns = [
        "run_pk", "run_id", "job", "labels", "status", "started_at", "ended_at",
        "last_step", "last_step_at", "every",
    ]  # fmt: skip
    statement = select(
        Run.id, Run.run_id, Run.job, Run.labels, Run.status, Run.started_at, Run.ended_at,
        Run.last_step, Run.last_step_at, Run.every,
    ).where(
        or_(
            Run.status == "running",
            Run.ended_at.is_(None),
            Run.ended_at >= to_datetime(active_since),
        )
    )  # fmt: skip
    frame = _frame(engine, statement, columns)
    for column in ("started_at", "ended_at", "last_step_at"):
        _epoch_column(frame, column)
    return frame


def _active_step_runs(since: float) -> ColumnElement[bool]:
    # only runs that could have logged a step since `since`, so the (run_pk, time) index is used
    return and_(
        Step.run_pk == Run.id,
        or_(Run.ended_at.is_(None), Run.ended_at >= to_datetime(since)),
        Step.time >= to_datetime(since),
    )


def step_counts(
    engine: Engine,
    since: float,
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
    since: float,
    bucket_seconds: int,
    good_statuses: Sequence[str],
    bad_statuses: Sequence[str],
) -> pd.DataFrame:
    """Per (run, bucket of its end): 1 finished run, good if it succeeded.

    Runs still marked running are not events at all: a finished job is not a crashed job.
    """
    bucket = _bucket(engine, Run.ended_at, bucket_seconds)
    statement = select(
        Run.id,
        bucket.label("bucket"),
        case((Run.status.in_(list(good_statuses)), 1), else_=0),
        1,
    ).where(
        Run.ended_at.is_not(None),
        Run.ended_at >= to_datetime(since),
        Run.status.in_([*good_statuses, *bad_statuses]),
    )
    return _counts(engine, statement)


def checkpoint_save_counts(engine: Engine, since: float, bucket_seconds: int) -> pd.DataFrame:
    """Per (run, bucket): checkpoint saves and successful ones."""
    bucket = _bucket(engine, Checkpoint.time, bucket_seconds)
    statement = (
        select(
            Checkpoint.run_pk,
            bucket.label("bucket"),
            func.sum(case((Checkpoint.ok, 1), else_=0)),
            func.count(),
        )
        .where(Checkpoint.action == "save", Checkpoint.time >= to_datetime(since))
        .group_by(Checkpoint.run_pk, bucket)
    )
    return _counts(engine, statement)


def validation_outcome_counts(
    engine: Engine, since: float, bucket_seconds: int, good_statuses: Sequence[str]
) -> pd.DataFrame:
    """Per (run, bucket of its end): 1 finished run with 2+ validations, good if its final
    validation loss is not worse than its best earlier one."""
    statement = (
        select(Validation.run_pk, Run.ended_at, Validation.step, Validation.value)
        .join(Run, Run.id == Validation.run_pk)
        .where(
            Run.ended_at.is_not(None),
            Run.ended_at >= to_datetime(since),
            Run.status.in_(list(good_statuses)),
            Validation.name == "val_loss",
            Validation.value.is_not(None),
        )
        .order_by(Validation.run_pk, Validation.step)
    )
    frame = _frame(engine, statement, ["run_pk", "ended_at", "step", "value"])
    if frame.empty:
        return (
            pd.DataFrame(columns=COUNT_COLUMNS)
            .astype("float64")
            .astype({"run_pk": "int64", "bucket": "int64"})
        )
    _epoch_column(frame, "ended_at")
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
    engine: Engine, since: float, bucket_seconds: int, names: Sequence[str]
) -> pd.DataFrame:
    """Per (job, name, bucket): increase of a cumulative SLI-sample counter (resets allowed).

    The last sample before `since` is read too, so the first increase in range is exact.
    """
    start = to_datetime(since)
    before = (
        select(SliSample.job, SliSample.name, func.max(SliSample.time).label("time"))
        .where(SliSample.name.in_(list(names)), SliSample.time < start)
        .group_by(SliSample.job, SliSample.name)
        .subquery()
    )
    previous = select(SliSample.job, SliSample.name, SliSample.time, SliSample.value).join(
        before,
        and_(
            SliSample.job == before.c.job,
            SliSample.name == before.c.name,
            SliSample.time == before.c.time,
        ),
    )
    recent = select(SliSample.job, SliSample.name, SliSample.time, SliSample.value).where(
        SliSample.name.in_(list(names)), SliSample.time >= start
    )
    columns = ["job", "name", "time", "value"]
    frame = pd.concat(
        [_frame(engine, previous, columns), _frame(engine, recent, columns)], ignore_index=True
    )
    if frame.empty:
        return pd.DataFrame(columns=["job", "name", "bucket", "increase"])
    _epoch_column(frame, "time")
    frame = frame.sort_values(["job", "name", "time"])
    delta = frame.groupby(["job", "name"])["value"].diff()
    # a counter that went down was reset: its new value is the increase since the reset
    frame["increase"] = delta.where(delta >= 0, frame["value"])
    frame = frame[frame["time"] >= since].dropna(subset=["increase"])
    frame["bucket"] = (frame["time"] // bucket_seconds).astype("int64")
    summed: pd.DataFrame = frame.groupby(["job", "name", "bucket"], as_index=False)[
        ["increase"]
    ].sum()
    return summed


# ------------------------------------------------------------------------- health-rule inputs

STEP_TAIL_COLUMNS = [
    "run_pk", "step", "time", "loss", "grad_norm", "eff_lr_mean", "step_seconds",
    "nonfinite_loss", "nonfinite_grad", "nonfinite_param", "nonfinite_state",
]  # fmt: skip


def step_tails(engine: Engine, run_pks: Sequence[int], span_steps: int) -> pd.DataFrame:
    """The steps of each run within `span_steps` optimizer steps of its last step."""
    if not run_pks:
        return pd.DataFrame(columns=STEP_TAIL_COLUMNS)
    statement = (
        select(
            Step.run_pk, Step.step, Step.time, Step.loss, Step.grad_norm, Step.eff_lr_mean,
            Step.step_seconds, Step.nonfinite_loss, Step.nonfinite_grad, Step.nonfinite_param,
            Step.nonfinite_state,
        )
        .join(Run, Run.id == Step.run_pk)
        .where(Run.id.in_(list(run_pks)), Step.step > Run.last_step - span_steps * Run.every)
        .order_by(Step.run_pk, Step.step)
    )  # fmt: skip
    return _tail_frame(engine, statement)


def steps_since(engine: Engine, run_pks: Sequence[int], since: float) -> pd.DataFrame:
    """Steps of these runs logged at or after `since` (the incremental part of the tails)."""
    if not run_pks:
        return pd.DataFrame(columns=STEP_TAIL_COLUMNS)
    statement = (
        select(
            Step.run_pk, Step.step, Step.time, Step.loss, Step.grad_norm, Step.eff_lr_mean,
            Step.step_seconds, Step.nonfinite_loss, Step.nonfinite_grad, Step.nonfinite_param,
            Step.nonfinite_state,
        )
        .where(Step.run_pk.in_(list(run_pks)), Step.time >= to_datetime(since))
        .order_by(Step.run_pk, Step.step)
    )  # fmt: skip
    return _tail_frame(engine, statement)


def _tail_frame(engine: Engine, statement: Any) -> pd.DataFrame:
    frame = _frame(engine, statement, STEP_TAIL_COLUMNS)
    _epoch_column(frame, "time")
    floats = ["loss", "grad_norm", "eff_lr_mean", "step_seconds"]
    return frame.astype({c: "float64" for c in floats})


def validations(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    """Validation losses (`val_loss`) of these runs, in step order."""
    columns = ["run_pk", "step", "time", "value"]
    if not run_pks:
        return pd.DataFrame(columns=columns)
    statement = (
        select(Validation.run_pk, Validation.step, Validation.time, Validation.value)
        .where(Validation.run_pk.in_(list(run_pks)), Validation.name == "val_loss")
        .order_by(Validation.run_pk, Validation.step)
    )
    frame = _frame(engine, statement, columns)
    _epoch_column(frame, "time")
    return frame


def checkpoint_failures(engine: Engine, run_pks: Sequence[int], since: float) -> pd.DataFrame:
    """Per run: failed checkpoint saves since `since`, and when the last one happened."""
    columns = ["run_pk", "failures", "last_failure_at"]
    if not run_pks:
        return pd.DataFrame(columns=columns)
    statement = (
        select(Checkpoint.run_pk, func.count(), func.max(Checkpoint.time))
        .where(
            Checkpoint.run_pk.in_(list(run_pks)),
            Checkpoint.action == "save",
            Checkpoint.ok.is_(False),
            Checkpoint.time >= to_datetime(since),
        )
        .group_by(Checkpoint.run_pk)
    )
    frame = _frame(engine, statement, columns)
    _epoch_column(frame, "last_failure_at")
    return frame

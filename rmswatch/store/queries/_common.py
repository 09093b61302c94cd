"""What every query module shares: the time convention, `_frame`, and step/time filters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from rmswatch._validation import ArgumentError

TimeLike = datetime | float | pd.Timestamp


def as_datetime(value: TimeLike) -> datetime:
    """A time argument as an aware UTC datetime: naive datetimes are UTC, numbers epoch seconds."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def epoch_seconds(times: pd.Series) -> pd.Series:
    """A time column as float UTC epoch seconds (NaN for a missing time), exactly what
    `datetime.timestamp()` gives: for callers that do arithmetic on seconds."""
    stamps = pd.to_datetime(times, utc=True).dt.tz_localize(None)
    # whole microseconds first: nanoseconds since 1970 do not fit a float exactly
    micros = stamps.to_numpy().astype("datetime64[us]").astype("int64")
    seconds = np.where(stamps.isna().to_numpy(), np.nan, micros / 1e6)
    return pd.Series(seconds, index=times.index, dtype="float64")


def _pk(run_pk: object) -> int:
    """`run_pk` as an int; a run_id string here is a mistake that would read as "no rows"."""
    if isinstance(run_pk, bool) or not isinstance(run_pk, int | np.integer):
        raise TypeError(
            f"run_pk={run_pk!r}: per-run queries take the run's integer run_pk (the run_pk "
            "column of runs() and run(engine, run_id)), not its run_id"
        )
    return int(run_pk)


def _pks(run_pks: Sequence[object]) -> list[int]:
    return [_pk(run_pk) for run_pk in run_pks]


def _utc(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    # SQLite hands back naive datetimes for timezone-aware columns; the write path stores UTC.
    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _frame(engine: Engine, statement: Any, times: Sequence[str] = ()) -> pd.DataFrame:
    """Run `statement`; columns named by its labels, `times` as tz-aware UTC Timestamps."""
    with engine.connect() as conn:
        result = conn.execute(statement)
        # plain tuples: pandas probing Row objects attribute by attribute costs seconds per 1M
        rows = [tuple(row) for row in result]
        columns = list(result.keys())
    return _utc(pd.DataFrame.from_records(rows, columns=columns), *times)


def _scalar(engine: Engine, statement: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(statement).scalar()


def _step_range(
    column: Any, start_step: int | None, end_step: int | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start_step is not None:
        conditions.append(column >= start_step)
    if end_step is not None:
        conditions.append(column <= end_step)
    return conditions


def _time_range(
    column: Any, since: TimeLike | None, until: TimeLike | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= as_datetime(since))
    if until is not None:
        conditions.append(column <= as_datetime(until))
    return conditions


def _thin(
    stmt: Select[*tuple[Any, ...]], order_by: Any, max_points: int | None
) -> Select[*tuple[Any, ...]]:
    """Every k-th row of `stmt` (k chosen so about `max_points` remain) plus the last one."""
    if max_points is None:
        return stmt.order_by(order_by)
    if max_points < 1:
        raise ArgumentError(f"max_points={max_points!r}: must be >= 1")
    numbered = stmt.add_columns(
        func.row_number().over(order_by=order_by).label("_rn"),
        func.count().over().label("_n"),
    ).subquery()
    stride = (numbered.c._n + (max_points - 1)) // max_points
    keep = [c for c in numbered.c if c.key not in ("_rn", "_n")]
    return (
        select(*keep)
        .where(or_((numbered.c._rn - 1) % stride == 0, numbered.c._rn == numbered.c._n))
        .order_by(numbered.c._rn)
    )


def _stride(first: int, last: int, max_steps: int) -> int:
    """The step stride that leaves at most `max_steps` distinct steps of [first, last]."""
    return max(1, -(-(last - first + 1) // max(1, max_steps)))


def _one_rank(table: Any, run_pk: int, rank: int | None) -> ColumnElement[bool]:
    """One rank's rows of a distributed run: `rank`, or with None the lowest rank the run has
    rows of in `table` (rank 0 when it wrote; a single-process run's only rank)."""
    if rank is not None:
        return table.rank == rank  # type: ignore[no-any-return]
    lowest = select(func.min(table.rank)).where(table.run_pk == run_pk).scalar_subquery()
    return table.rank == lowest  # type: ignore[no-any-return]


def _step_bounds(
    engine: Engine,
    table: Any,
    run_pk: int,
    start_step: int | None,
    end_step: int | None,
    rank: int | None = None,
) -> tuple[int, int]:
    """(first, last) step of one run's (one rank's) rows in `table` within the range; zeros
    when none."""
    with engine.connect() as conn:
        row = conn.execute(
            select(func.min(table.step), func.max(table.step)).where(
                table.run_pk == run_pk,
                _one_rank(table, run_pk, rank),
                *_step_range(table.step, start_step, end_step),
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


def _data_columns(model: Any) -> list[Any]:
    """A per-run table's columns without its keys (`id`, `run_pk`), in table order."""
    return [column for column in model.__table__.c if column.key not in ("id", "run_pk")]

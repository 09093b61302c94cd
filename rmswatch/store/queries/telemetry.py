"""Read queries over runs and their telemetry, returning pandas DataFrames.

Every time column comes back as a tz-aware UTC `Timestamp` on both backends (SQLite hands back
naive datetimes, which are UTC by construction of the write path). `max_points` thins a series
to about that many evenly spaced rows in SQL, always keeping the newest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import Engine, Select, func, or_, select

from rmswatch.store.models import (
    Checkpoint,
    HistogramRow,
    LayerStep,
    Run,
    SliSample,
    Step,
    SystemSampleRow,
    Validation,
)

if TYPE_CHECKING:
    from typing import Unpack

TimeLike = datetime | float | pd.Timestamp


def _as_datetime(value: TimeLike) -> datetime:
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def _frame(
    engine: Engine, stmt: Select[Unpack[tuple[Any, ...]]], time_columns: Sequence[str] = ()
) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(stmt)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    for column in time_columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _thin(
    stmt: Select[Unpack[tuple[Any, ...]]], order_by: Any, max_points: int | None
) -> Select[Unpack[tuple[Any, ...]]]:
    """Every k-th row of `stmt` (k chosen so about `max_points` remain) plus the last one."""
    if max_points is None:
        return stmt.order_by(order_by)
    if max_points < 1:
        raise ValueError(f"max_points={max_points!r}: must be >= 1")
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


def _run_pk(run_id: str) -> Any:
    return select(Run.id).where(Run.run_id == run_id).scalar_subquery()


# -- runs -------------------------------------------------------------------------------------

RUN_COLUMNS = (
    Run.run_id,
    Run.job,
    Run.status,
    Run.status_detail,
    Run.labels,
    Run.started_at,
    Run.ended_at,
    Run.last_step,
    Run.last_step_at,
    Run.host,
    Run.pid,
    Run.rank,
    Run.world_size,
    Run.optimizer,
    Run.hyperparameters,
    Run.every,
    Run.resumed_from_step,
    Run.gpu_seconds,
)


def runs(
    engine: Engine,
    *,
    job: str | None = None,
    status: str | Sequence[str] | None = None,
    since: TimeLike | None = None,
    now: TimeLike | None = None,
) -> pd.DataFrame:
    """One row per run, newest first, with `heartbeat_age_s` (seconds since the last step
    reached the store, measured at `now`; NaN before the first step) and `gpu_hours`."""
    stmt = select(*RUN_COLUMNS)
    if job is not None:
        stmt = stmt.where(Run.job == job)
    if status is not None:
        stmt = stmt.where(Run.status.in_([status] if isinstance(status, str) else list(status)))
    if since is not None:
        stmt = stmt.where(Run.started_at >= _as_datetime(since))
    frame = _frame(
        engine, stmt.order_by(Run.started_at.desc()), ("started_at", "ended_at", "last_step_at")
    )
    at = pd.Timestamp(_as_datetime(now if now is not None else datetime.now(timezone.utc)))
    frame["heartbeat_age_s"] = (at - frame["last_step_at"]).dt.total_seconds()
    frame["gpu_hours"] = frame["gpu_seconds"] / 3600.0
    return frame


def run(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """The run's row as a dict, or None when the store has no such run."""
    frame = _frame(
        engine,
        select(*RUN_COLUMNS, Run.layers, Run.hist_edges).where(Run.run_id == run_id),
        ("started_at", "ended_at", "last_step_at"),
    )
    return None if frame.empty else dict(frame.iloc[0])


# -- per-step telemetry -----------------------------------------------------------------------


def _ranges(
    stmt: Select[Unpack[tuple[Any, ...]]],
    step_column: Any,
    time_column: Any,
    start_step: int | None,
    end_step: int | None,
    since: TimeLike | None,
    until: TimeLike | None,
) -> Select[Unpack[tuple[Any, ...]]]:
    if start_step is not None:
        stmt = stmt.where(step_column >= start_step)
    if end_step is not None:
        stmt = stmt.where(step_column <= end_step)
    if since is not None:
        stmt = stmt.where(time_column >= _as_datetime(since))
    if until is not None:
        stmt = stmt.where(time_column <= _as_datetime(until))
    return stmt


def steps(
    engine: Engine,
    run_id: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    max_points: int | None = None,
) -> pd.DataFrame:
    """Global statistics per step (loss, norms, lr, effective-LR quantiles, non-finite counts)."""
    columns = [c for c in Step.__table__.c if c.key not in ("id", "run_pk")]
    stmt = select(*columns).where(Step.run_pk == _run_pk(run_id))
    stmt = _ranges(stmt, Step.step, Step.time, start_step, end_step, since, until)
    return _frame(engine, _thin(stmt, Step.step, max_points), ("time",))


def layer_stats(
    engine: Engine,
    run_id: str,
    *,
    layers: Sequence[str] | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    max_points: int | None = None,
) -> pd.DataFrame:
    """Per-layer statistics, long form (one row per step and layer), ordered by step, layer.

    `max_points` thins steps, keeping every layer of each kept step.
    """
    columns = [c for c in LayerStep.__table__.c if c.key not in ("id", "run_pk")]
    stmt = select(*columns).where(LayerStep.run_pk == _run_pk(run_id))
    if layers is not None:
        stmt = stmt.where(LayerStep.layer.in_(list(layers)))
    stmt = _ranges(stmt, LayerStep.step, LayerStep.time, start_step, end_step, since, until)
    if max_points is not None:
        kept = steps(
            engine,
            run_id,
            start_step=start_step,
            end_step=end_step,
            since=since,
            until=until,
            max_points=max_points,
        )["step"].tolist()
        stmt = stmt.where(LayerStep.step.in_(kept))
    return _frame(engine, stmt.order_by(LayerStep.step, LayerStep.layer), ("time",))


def histograms(
    engine: Engine,
    run_id: str,
    *,
    layer: str | None = None,
    kind: str = "rms",
    start_step: int | None = None,
    end_step: int | None = None,
) -> pd.DataFrame:
    """Histogram rows, long form: step, time, layer, counts (list), zeros, nonfinite, exact."""
    stmt = select(
        HistogramRow.step,
        HistogramRow.time,
        HistogramRow.layer,
        HistogramRow.counts,
        HistogramRow.zeros,
        HistogramRow.nonfinite,
        HistogramRow.exact,
    ).where(HistogramRow.run_pk == _run_pk(run_id), HistogramRow.kind == kind)
    if layer is not None:
        stmt = stmt.where(HistogramRow.layer == layer)
    stmt = _ranges(stmt, HistogramRow.step, HistogramRow.time, start_step, end_step, None, None)
    return _frame(engine, stmt.order_by(HistogramRow.step, HistogramRow.layer), ("time",))


def histogram_matrix(
    engine: Engine,
    run_id: str,
    layer: str,
    *,
    kind: str = "rms",
    start_step: int | None = None,
    end_step: int | None = None,
    max_points: int | None = None,
) -> pd.DataFrame:
    """One layer's histograms as a heatmap matrix: index `step`, one column per bucket named by
    its lower edge (the run's `hist_edges`), values = counts. `attrs["edges"]` has all edges,
    `attrs["zeros"]`/`attrs["nonfinite"]` the per-step extra buckets as Series."""
    stmt = select(
        HistogramRow.step, HistogramRow.counts, HistogramRow.zeros, HistogramRow.nonfinite
    ).where(
        HistogramRow.run_pk == _run_pk(run_id),
        HistogramRow.layer == layer,
        HistogramRow.kind == kind,
    )
    stmt = _ranges(stmt, HistogramRow.step, HistogramRow.time, start_step, end_step, None, None)
    rows = _frame(engine, _thin(stmt, HistogramRow.step, max_points))
    info = run(engine, run_id)
    edges = [float(e) for e in (info or {}).get("hist_edges") or []]
    width = max((len(c) for c in rows["counts"]), default=max(len(edges) - 1, 0))
    labels = edges[:width] if len(edges) >= width + 1 else list(range(width))
    matrix = pd.DataFrame(
        [list(c) + [0] * (width - len(c)) for c in rows["counts"]],
        index=pd.Index(rows["step"].astype("int64"), name="step"),
        columns=labels,
        dtype="int64",
    )
    matrix.attrs["edges"] = edges
    matrix.attrs["zeros"] = pd.Series(rows["zeros"].to_numpy(), index=matrix.index)
    matrix.attrs["nonfinite"] = pd.Series(rows["nonfinite"].to_numpy(), index=matrix.index)
    return matrix


def validations(engine: Engine, run_id: str, *, name: str | None = None) -> pd.DataFrame:
    stmt = select(Validation.step, Validation.time, Validation.name, Validation.value).where(
        Validation.run_pk == _run_pk(run_id)
    )
    if name is not None:
        stmt = stmt.where(Validation.name == name)
    return _frame(engine, stmt.order_by(Validation.step, Validation.name), ("time",))


def checkpoints(engine: Engine, run_id: str) -> pd.DataFrame:
    columns = [c for c in Checkpoint.__table__.c if c.key not in ("id", "run_pk")]
    stmt = select(*columns).where(Checkpoint.run_pk == _run_pk(run_id))
    return _frame(engine, stmt.order_by(Checkpoint.time), ("time",))


def system_samples(
    engine: Engine,
    run_id: str,
    *,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
) -> pd.DataFrame:
    columns = [c for c in SystemSampleRow.__table__.c if c.key not in ("id", "run_pk")]
    stmt = select(*columns).where(SystemSampleRow.run_pk == _run_pk(run_id))
    stmt = _ranges(stmt, SystemSampleRow.time, SystemSampleRow.time, None, None, since, until)
    return _frame(engine, stmt.order_by(SystemSampleRow.time), ("time",))


def gpu_hours(
    engine: Engine,
    *,
    job: str | None = None,
    since: TimeLike | None = None,
    gpu_hour_usd: float | None = None,
) -> pd.DataFrame:
    """GPU-hours per run (integrated from system samples), with `cost_usd` when a price is
    given; one row per run that started at or after `since`."""
    stmt = select(Run.run_id, Run.job, Run.status, Run.started_at, Run.ended_at, Run.gpu_seconds)
    if job is not None:
        stmt = stmt.where(Run.job == job)
    if since is not None:
        stmt = stmt.where(Run.started_at >= _as_datetime(since))
    frame = _frame(engine, stmt.order_by(Run.started_at), ("started_at", "ended_at"))
    frame["gpu_hours"] = frame["gpu_seconds"] / 3600.0
    if gpu_hour_usd is not None:
        frame["cost_usd"] = frame["gpu_hours"] * gpu_hour_usd
    return frame


def sli_samples(
    engine: Engine,
    *,
    job: str | None = None,
    name: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
) -> pd.DataFrame:
    """Production SLI samples posted through ingest (e.g. `model_drift`), oldest first."""
    stmt = select(SliSample.job, SliSample.name, SliSample.time, SliSample.value, SliSample.labels)
    if job is not None:
        stmt = stmt.where(SliSample.job == job)
    if name is not None:
        stmt = stmt.where(SliSample.name == name)
    stmt = _ranges(stmt, SliSample.time, SliSample.time, None, None, since, until)
    return _frame(engine, stmt.order_by(SliSample.time), ("time",))

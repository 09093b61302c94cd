"""Queries the Dash views need and nothing else reads: pandas out, SQL only here.

Series that can be a million steps long are read column by column (only what a figure plots) and
heatmaps are read at a step stride, so a page never materialises a whole run's rows in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from rmswatch.store.models import (
    Checkpoint,
    HistogramRow,
    LayerStep,
    Run,
    SliSample,
    Step,
    Validation,
)

RUN_COLUMNS = (
    "run_pk",
    "run_id",
    "job",
    "labels",
    "status",
    "status_detail",
    "started_at",
    "ended_at",
    "last_step",
    "last_step_at",
    "optimizer",
    "hyperparameters",
    "layers",
    "gpu_seconds",
)

# what `runs` and `run` select, in RUN_COLUMNS order
_RUN_SELECT = (
    Run.id,
    Run.run_id,
    Run.job,
    Run.labels,
    Run.status,
    Run.status_detail,
    Run.started_at,
    Run.ended_at,
    Run.last_step,
    Run.last_step_at,
    Run.optimizer,
    Run.hyperparameters,
    Run.layers,
    Run.gpu_seconds,
)
STEP_FIELDS = frozenset(c.name for c in Step.__table__.columns) - {"id", "run_pk"}
LAYER_FIELDS = frozenset(c.name for c in LayerStep.__table__.columns) - {"id", "run_pk"}


def _utc(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    # SQLite hands back naive datetimes for timezone-aware columns; everything here is UTC.
    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _frame(engine: Engine, statement: Any, columns: Sequence[str]) -> pd.DataFrame:
    with engine.connect() as conn:
        # plain tuples: pandas probing Row objects attribute by attribute costs seconds per 1M
        rows = [tuple(row) for row in conn.execute(statement)]
    return pd.DataFrame.from_records(rows, columns=list(columns))


def runs(
    engine: Engine,
    *,
    job: str | None = None,
    active_from: datetime | None = None,
    active_to: datetime | None = None,
) -> pd.DataFrame:
    """Every run (newest first), optionally one job's, and those that were active at some time
    in [active_from, active_to]: started by its end and not ended before its start (a run still
    going started hours before an alert's window and belongs in it)."""
    statement = select(*_RUN_SELECT).order_by(Run.started_at.desc(), Run.id.desc())
    if job:
        statement = statement.where(Run.job == job)
    if active_from is not None:
        statement = statement.where(or_(Run.ended_at.is_(None), Run.ended_at >= active_from))
    if active_to is not None:
        statement = statement.where(Run.started_at <= active_to)
    return _utc(_frame(engine, statement, RUN_COLUMNS), "started_at", "ended_at", "last_step_at")


def run(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """One run as a dict (columns of `runs`), or None when the store has no such run."""
    frame = _utc(
        _frame(
            engine,
            select(*_RUN_SELECT).where(Run.run_id == run_id),
            RUN_COLUMNS,
        ),
        "started_at",
        "ended_at",
        "last_step_at",
    )
    if frame.empty:
        return None
    record: dict[str, Any] = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
    record["hist_edges"] = _scalar(engine, select(Run.hist_edges).where(Run.run_id == run_id))
    record["resumed_from_step"] = _scalar(
        engine, select(Run.resumed_from_step).where(Run.run_id == run_id)
    )
    return record


def _scalar(engine: Engine, statement: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(statement).scalar()


def _step_range(column: Any, step_from: int | None, step_to: int | None) -> list[Any]:
    conditions: list[ColumnElement[bool]] = []
    if step_from is not None:
        conditions.append(column >= step_from)
    if step_to is not None:
        conditions.append(column <= step_to)
    return conditions


def step_series(
    engine: Engine,
    run_pk: int,
    columns: Sequence[str],
    *,
    step_from: int | None = None,
    step_to: int | None = None,
) -> pd.DataFrame:
    """`step` plus the named `steps` columns of one run, in step order."""
    unknown = set(columns) - STEP_FIELDS
    if unknown:
        raise ValueError(f"unknown step columns {sorted(unknown)}; known: {sorted(STEP_FIELDS)}")
    selected = [Step.step, *(Step.__table__.c[name] for name in columns if name != "step")]
    statement = (
        select(*selected)
        .where(Step.run_pk == run_pk, *_step_range(Step.step, step_from, step_to))
        .order_by(Step.step)
    )
    names = ["step", *(name for name in columns if name != "step")]
    frame = _frame(engine, statement, names)
    return _utc(frame, "time")


def layer_series(
    engine: Engine,
    run_pk: int,
    layer: str,
    columns: Sequence[str],
    *,
    step_from: int | None = None,
    step_to: int | None = None,
) -> pd.DataFrame:
    """`step` plus the named `layer_steps` columns of one layer of one run, in step order."""
    unknown = set(columns) - LAYER_FIELDS
    if unknown:
        raise ValueError(f"unknown layer columns {sorted(unknown)}; known: {sorted(LAYER_FIELDS)}")
    selected = [LayerStep.step, *(LayerStep.__table__.c[name] for name in columns)]
    statement = (
        select(*selected)
        .where(
            LayerStep.run_pk == run_pk,
            LayerStep.layer == layer,
            *_step_range(LayerStep.step, step_from, step_to),
        )
        .order_by(LayerStep.step)
    )
    return _frame(engine, statement, ["step", *columns])


def step_bounds(engine: Engine, run_pk: int) -> tuple[int, int, int]:
    """(first step, last step, number of telemetry steps) of a run; zeros when it has none."""
    with engine.connect() as conn:
        row = conn.execute(
            select(func.min(Step.step), func.max(Step.step), func.count()).where(
                Step.run_pk == run_pk
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)


def _stride(first: int, last: int, max_steps: int) -> int:
    return max(1, -(-(last - first + 1) // max(1, max_steps)))


def layer_matrix(
    engine: Engine,
    run_pk: int,
    column: str,
    *,
    max_steps: int = 400,
    step_from: int | None = None,
    step_to: int | None = None,
) -> pd.DataFrame:
    """Long frame (step, layer, value) of one per-layer column at a stride of at most
    `max_steps` distinct steps, for heatmaps."""
    if column not in LAYER_FIELDS:
        raise ValueError(f"unknown layer column {column!r}; known: {sorted(LAYER_FIELDS)}")
    first, last = _layer_bounds(engine, LayerStep, run_pk, step_from, step_to)
    stride = _stride(first, last, max_steps)
    statement = select(LayerStep.step, LayerStep.layer, LayerStep.__table__.c[column]).where(
        LayerStep.run_pk == run_pk, *_step_range(LayerStep.step, step_from, step_to)
    )
    if stride > 1:
        statement = statement.where((LayerStep.step - first) % stride == 0)
    return _frame(engine, statement.order_by(LayerStep.step), ["step", "layer", "value"])


def _layer_bounds(
    engine: Engine, table: Any, run_pk: int, step_from: int | None, step_to: int | None
) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            select(func.min(table.step), func.max(table.step)).where(
                table.run_pk == run_pk, *_step_range(table.step, step_from, step_to)
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


def layer_names(engine: Engine, run_pk: int) -> list[str]:
    """Layer names of a run: from the run row when the writer recorded them, else the data."""
    recorded = _scalar(engine, select(Run.layers).where(Run.id == run_pk)) or []
    names = [item["name"] if isinstance(item, dict) else str(item) for item in recorded]
    if names:
        return names
    with engine.connect() as conn:
        rows = conn.execute(
            select(LayerStep.layer).where(LayerStep.run_pk == run_pk).distinct()
        ).all()
    return sorted(row[0] for row in rows)


def histograms(
    engine: Engine,
    run_pk: int,
    layer: str,
    *,
    max_steps: int = 300,
    kind: str = "rms",
) -> pd.DataFrame:
    """(step, counts, zeros, nonfinite, exact) of one layer's histograms at a stride."""
    first, last = _layer_bounds(engine, HistogramRow, run_pk, None, None)
    stride = _stride(first, last, max_steps)
    statement = select(
        HistogramRow.step,
        HistogramRow.counts,
        HistogramRow.zeros,
        HistogramRow.nonfinite,
        HistogramRow.exact,
    ).where(HistogramRow.run_pk == run_pk, HistogramRow.layer == layer, HistogramRow.kind == kind)
    if stride > 1:
        statement = statement.where((HistogramRow.step - first) % stride == 0)
    return _frame(
        engine,
        statement.order_by(HistogramRow.step),
        ["step", "counts", "zeros", "nonfinite", "exact"],
    )


def validations(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    """Validation points (run_pk, step, time, name, value) of the given runs."""
    if not run_pks:
        return pd.DataFrame(columns=["run_pk", "step", "time", "name", "value"])
    statement = (
        select(
            Validation.run_pk, Validation.step, Validation.time, Validation.name, Validation.value
        )
        .where(Validation.run_pk.in_(list(run_pks)))
        .order_by(Validation.run_pk, Validation.step)
    )
    return _utc(_frame(engine, statement, ["run_pk", "step", "time", "name", "value"]), "time")


def checkpoints(engine: Engine, run_pk: int) -> pd.DataFrame:
    """Checkpoint events of one run in time order."""
    names = ["step", "time", "action", "ok", "seconds", "size_bytes", "path", "detail"]
    statement = (
        select(*(Checkpoint.__table__.c[name] for name in names))
        .where(Checkpoint.run_pk == run_pk)
        .order_by(Checkpoint.time)
    )
    return _utc(_frame(engine, statement, names), "time")


def first_nonfinite(engine: Engine, run_pk: int) -> dict[str, Any] | None:
    """The first step with any NaN/Inf (grad, param, state or loss) and the layers hit then."""
    with engine.connect() as conn:
        step = conn.execute(
            select(func.min(Step.step)).where(
                Step.run_pk == run_pk,
                or_(
                    Step.nonfinite_grad > 0,
                    Step.nonfinite_param > 0,
                    Step.nonfinite_state > 0,
                    Step.nonfinite_loss > 0,
                ),
            )
        ).scalar()
        if step is None:
            return None
        counts = conn.execute(
            select(
                Step.nonfinite_grad, Step.nonfinite_param, Step.nonfinite_state, Step.nonfinite_loss
            ).where(Step.run_pk == run_pk, Step.step == step)
        ).one()
        layers = conn.execute(
            select(
                LayerStep.layer,
                LayerStep.nonfinite_grad + LayerStep.nonfinite_param + LayerStep.nonfinite_state,
            )
            .where(
                LayerStep.run_pk == run_pk,
                LayerStep.step == step,
                or_(
                    LayerStep.nonfinite_grad > 0,
                    LayerStep.nonfinite_param > 0,
                    LayerStep.nonfinite_state > 0,
                ),
            )
            .order_by(LayerStep.id)
        ).all()
    return {
        "step": int(step),
        "grad": int(counts[0] or 0),
        "param": int(counts[1] or 0),
        "state": int(counts[2] or 0),
        "loss": int(counts[3] or 0),
        "layers": [(name, int(total or 0)) for name, total in layers],
    }


def nonfinite_totals(engine: Engine, run_pk: int) -> dict[str, int]:
    """Total NaN/Inf counts of one run by kind (grad, param, state, loss)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(
                func.coalesce(func.sum(Step.nonfinite_grad), 0),
                func.coalesce(func.sum(Step.nonfinite_param), 0),
                func.coalesce(func.sum(Step.nonfinite_state), 0),
                func.coalesce(func.sum(Step.nonfinite_loss), 0),
            ).where(Step.run_pk == run_pk)
        ).one()
    return dict(zip(("grad", "param", "state", "loss"), (int(v) for v in row), strict=True))


def last_good_run(engine: Engine, job: str, before: datetime, exclude_run_id: str) -> str | None:
    """run_id of the newest succeeded run of `job` that started before `before`."""
    return _scalar(  # type: ignore[no-any-return]
        engine,
        select(Run.run_id)
        .where(
            and_(
                Run.job == job,
                Run.status == "succeeded",
                Run.started_at <= before,
                Run.run_id != exclude_run_id,
            )
        )
        .order_by(Run.started_at.desc())
        .limit(1),
    )


def sli_samples(engine: Engine, *, name: str | None = None) -> pd.DataFrame:
    """Production SLI samples (job, name, time, value, labels) posted through ingest."""
    statement = select(
        SliSample.job, SliSample.name, SliSample.time, SliSample.value, SliSample.labels
    ).order_by(SliSample.time)
    if name is not None:
        statement = statement.where(SliSample.name == name)
    return _utc(_frame(engine, statement, ["job", "name", "time", "value", "labels"]), "time")


def latest_layer_stats(engine: Engine, run_pk: int) -> pd.DataFrame:
    """Every layer's statistics at the run's last step with per-layer statistics."""
    names = ["layer", *sorted(LAYER_FIELDS - {"layer", "step"})]
    last = select(func.max(LayerStep.step)).where(LayerStep.run_pk == run_pk).scalar_subquery()
    statement = (
        select(*(LayerStep.__table__.c[name] for name in names))
        .where(LayerStep.run_pk == run_pk, LayerStep.step == last)
        .order_by(LayerStep.id)
    )
    return _frame(engine, statement, names)


def steps_at(engine: Engine, run_pk: int, moments: Sequence[datetime]) -> list[int | None]:
    """For each moment, the last telemetry step recorded at or before it (None before the first)."""
    found: list[int | None] = []
    with engine.connect() as conn:
        for moment in moments:
            value = conn.execute(
                select(func.max(Step.step)).where(Step.run_pk == run_pk, Step.time <= moment)
            ).scalar()
            found.append(None if value is None else int(value))
    return found


def latest_histogram_exact(engine: Engine, run_pk: int, kind: str = "rms") -> dict[str, bool]:
    """Per layer, whether its histogram (and the statistics drawn from the same selection) at
    the run's last histogram step was exact rather than estimated from a sample."""
    last = (
        select(func.max(HistogramRow.step))
        .where(HistogramRow.run_pk == run_pk, HistogramRow.kind == kind)
        .scalar_subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(HistogramRow.layer, HistogramRow.exact).where(
                HistogramRow.run_pk == run_pk, HistogramRow.kind == kind, HistogramRow.step == last
            )
        ).all()
    return {str(layer): bool(exact) for layer, exact in rows}

"""Per-step telemetry: global statistics per step and per-layer statistics per step.

Series that can be a million steps long are read column by column (only what a figure plots)
and heatmaps at a step stride, so a page never materialises a whole run's rows in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from rmswatch._validation import ArgumentError
from rmswatch.store.models import LayerStep, Run, Step
from rmswatch.store.queries._common import (
    TimeLike,
    _data_columns,
    _frame,
    _one_rank,
    _pk,
    _scalar,
    _step_bounds,
    _step_range,
    _stride,
    _thin,
    _time_range,
    as_datetime,
)

STEP_FIELDS = frozenset(c.key for c in _data_columns(Step))
LAYER_FIELDS = frozenset(c.key for c in _data_columns(LayerStep))
_NONFINITE_KINDS = ("grad", "param", "state", "loss")


def _known(kind: str, names: Sequence[str] | set[str], fields: frozenset[str]) -> None:
    unknown = set(names) - fields
    if unknown:
        raise ArgumentError(f"unknown {kind} columns {sorted(unknown)}; known: {sorted(fields)}")


def steps(
    engine: Engine,
    run_pk: int,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    max_points: int | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """Every global statistic per step (loss, norms, lr, effective-LR quantiles, non-finite
    counts) in step order; `max_points` thins in SQL, always keeping the newest step. `rank`:
    whose rows in a distributed run (every per-step, per-layer and histogram read takes it);
    None reads the lowest rank the run has, rank 0 when it wrote."""
    run_pk = _pk(run_pk)
    statement = select(*_data_columns(Step)).where(
        Step.run_pk == run_pk,
        _one_rank(Step, run_pk, rank),
        *_step_range(Step.step, start_step, end_step),
        *_time_range(Step.time, since, until),
    )
    return _frame(engine, _thin(statement, Step.step, max_points), ("time",))


def _series(
    engine: Engine,
    model: Any,
    columns: Sequence[str],
    where: Sequence[ColumnElement[bool]],
    start_step: int | None,
    end_step: int | None,
) -> pd.DataFrame:
    fields, kind = (STEP_FIELDS, "step") if model is Step else (LAYER_FIELDS, "layer")
    _known(kind, columns, fields)
    names = ["step", *(name for name in columns if name != "step")]
    statement = (
        select(*(model.__table__.c[name] for name in names))
        .where(*where, *_step_range(model.step, start_step, end_step))
        .order_by(model.step)
    )
    return _frame(engine, statement, ("time",))


def step_series(
    engine: Engine,
    run_pk: int,
    columns: Sequence[str],
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """`step` plus the named `steps` columns of one run, in step order."""
    run_pk = _pk(run_pk)
    where = [Step.run_pk == run_pk, _one_rank(Step, run_pk, rank)]
    return _series(engine, Step, columns, where, start_step, end_step)


def step_bounds(engine: Engine, run_pk: int, *, rank: int | None = None) -> tuple[int, int, int]:
    """(first step, last step, number of telemetry steps) of a run; zeros when it has none."""
    run_pk = _pk(run_pk)
    with engine.connect() as conn:
        row = conn.execute(
            select(func.min(Step.step), func.max(Step.step), func.count()).where(
                Step.run_pk == run_pk, _one_rank(Step, run_pk, rank)
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)


def steps_at(
    engine: Engine, run_pk: int, moments: Sequence[TimeLike], *, rank: int | None = None
) -> list[int | None]:
    """For each moment, the last telemetry step recorded at or before it (None before the first,
    and for a missing moment: an alert that went pending and never fired has no start)."""
    run_pk = _pk(run_pk)
    found: list[int | None] = []
    with engine.connect() as conn:
        for moment in moments:
            if moment is None or bool(pd.isna(moment)):
                found.append(None)
                continue
            value = conn.execute(
                select(func.max(Step.step)).where(
                    Step.run_pk == run_pk,
                    _one_rank(Step, run_pk, rank),
                    Step.time <= as_datetime(moment),
                )
            ).scalar()
            found.append(None if value is None else int(value))
    return found


def first_nonfinite(engine: Engine, run_pk: int) -> dict[str, Any] | None:
    """The first step with any NaN/Inf (grad, param, state or loss) and the layers hit then."""
    run_pk = _pk(run_pk)
    counts = [getattr(Step, f"nonfinite_{kind}") for kind in _NONFINITE_KINDS]
    per_layer = [LayerStep.nonfinite_grad, LayerStep.nonfinite_param, LayerStep.nonfinite_state]
    with engine.connect() as conn:
        step = conn.execute(
            select(func.min(Step.step)).where(
                Step.run_pk == run_pk, or_(*(count > 0 for count in counts))
            )
        ).scalar()
        if step is None:
            return None
        row = conn.execute(select(*counts).where(Step.run_pk == run_pk, Step.step == step)).one()
        layers = conn.execute(
            select(LayerStep.layer, per_layer[0] + per_layer[1] + per_layer[2])
            .where(
                LayerStep.run_pk == run_pk,
                LayerStep.step == step,
                or_(*(count > 0 for count in per_layer)),
            )
            .order_by(LayerStep.id)
        ).all()
    found: dict[str, Any] = {"step": int(step)}
    found |= {kind: int(value or 0) for kind, value in zip(_NONFINITE_KINDS, row, strict=True)}
    found["layers"] = [(name, int(total or 0)) for name, total in layers]
    return found


def nonfinite_totals(engine: Engine, run_pk: int) -> dict[str, int]:
    """Total NaN/Inf counts of one run by kind (grad, param, state, loss)."""
    run_pk = _pk(run_pk)
    sums = [
        func.coalesce(func.sum(getattr(Step, f"nonfinite_{kind}")), 0) for kind in _NONFINITE_KINDS
    ]
    with engine.connect() as conn:
        row = conn.execute(select(*sums).where(Step.run_pk == run_pk)).one()
    return dict(zip(_NONFINITE_KINDS, (int(v) for v in row), strict=True))


# -- per-layer statistics ----------------------------------------------------------------------


def layer_stats(
    engine: Engine,
    run_pk: int,
    *,
    layers: Sequence[str] | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    max_points: int | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """Per-layer statistics, long form (one row per step and layer), ordered by step, layer.

    `max_points` thins steps as `steps` does, keeping every layer of each kept step.
    """
    run_pk = _pk(run_pk)
    statement = select(*_data_columns(LayerStep)).where(
        LayerStep.run_pk == run_pk,
        _one_rank(LayerStep, run_pk, rank),
        *_step_range(LayerStep.step, start_step, end_step),
        *_time_range(LayerStep.time, since, until),
    )
    if layers is not None:
        statement = statement.where(LayerStep.layer.in_(list(layers)))
    if max_points is not None:
        kept = steps(
            engine,
            run_pk,
            start_step=start_step,
            end_step=end_step,
            since=since,
            until=until,
            max_points=max_points,
            rank=rank,
        )["step"].tolist()
        statement = statement.where(LayerStep.step.in_(kept))
    return _frame(engine, statement.order_by(LayerStep.step, LayerStep.layer), ("time",))


def layer_series(
    engine: Engine,
    run_pk: int,
    layer: str,
    columns: Sequence[str],
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """`step` plus the named `layer_stats` columns of one layer of one run, in step order."""
    run_pk = _pk(run_pk)
    where = [
        LayerStep.run_pk == run_pk,
        _one_rank(LayerStep, run_pk, rank),
        LayerStep.layer == layer,
    ]
    return _series(engine, LayerStep, columns, where, start_step, end_step)


def layer_matrix(
    engine: Engine,
    run_pk: int,
    column: str,
    *,
    max_steps: int = 400,
    start_step: int | None = None,
    end_step: int | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """Long frame (step, layer, value) of one per-layer column at a stride of at most
    `max_steps` distinct steps, for heatmaps."""
    run_pk = _pk(run_pk)
    _known("layer", [column], LAYER_FIELDS)
    first, last = _step_bounds(engine, LayerStep, run_pk, start_step, end_step, rank)
    stride = _stride(first, last, max_steps)
    statement = select(
        LayerStep.step, LayerStep.layer, LayerStep.__table__.c[column].label("value")
    ).where(
        LayerStep.run_pk == run_pk,
        _one_rank(LayerStep, run_pk, rank),
        *_step_range(LayerStep.step, start_step, end_step),
    )
    if stride > 1:
        statement = statement.where((LayerStep.step - first) % stride == 0)
    return _frame(engine, statement.order_by(LayerStep.step))


def layer_names(engine: Engine, run_pk: int) -> list[str]:
    """Layer names of a run: from the run row when the writer recorded them, else the data."""
    run_pk = _pk(run_pk)
    recorded = _scalar(engine, select(Run.layers).where(Run.id == run_pk)) or []
    names = [item["name"] if isinstance(item, dict) else str(item) for item in recorded]
    if names:
        return names
    with engine.connect() as conn:
        rows = conn.execute(
            select(LayerStep.layer).where(LayerStep.run_pk == run_pk).distinct()
        ).all()
    return sorted(row[0] for row in rows)


def latest_layer_stats(engine: Engine, run_pk: int, *, rank: int | None = None) -> pd.DataFrame:
    """Every layer's statistics at the run's last step with per-layer statistics."""
    run_pk = _pk(run_pk)
    names = ["layer", *sorted(LAYER_FIELDS - {"layer", "step", "rank"})]
    mine = (LayerStep.run_pk == run_pk, _one_rank(LayerStep, run_pk, rank))
    last = select(func.max(LayerStep.step)).where(*mine).scalar_subquery()
    statement = (
        select(*(LayerStep.__table__.c[name] for name in names))
        .where(*mine, LayerStep.step == last)
        .order_by(LayerStep.id)
    )
    return _frame(engine, statement, ("time",))

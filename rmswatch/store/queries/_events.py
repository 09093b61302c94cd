"""What a run logs besides per-step statistics: histograms, validations, checkpoints, system
samples, and the production SLI samples posted through ingest."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Engine, func, select

from rmswatch.store.models import (
    Checkpoint,
    HistogramRow,
    Run,
    SliSample,
    SystemSampleRow,
    Validation,
)
from rmswatch.store.queries._common import (
    TimeLike,
    _data_columns,
    _frame,
    _one_rank,
    _pk,
    _pks,
    _scalar,
    _step_bounds,
    _step_range,
    _stride,
    _thin,
    _time_range,
)


def histograms(
    engine: Engine,
    run_pk: int,
    layer: str,
    *,
    kind: str = "rms",
    max_steps: int = 300,
    rank: int | None = None,
) -> pd.DataFrame:
    """(step, counts, zeros, nonfinite, exact) of one layer's histograms in step order, at a
    stride of at most `max_steps` distinct steps."""
    run_pk = _pk(run_pk)
    first, last = _step_bounds(engine, HistogramRow, run_pk, None, None, rank)
    stride = _stride(first, last, max_steps)
    statement = select(
        HistogramRow.step,
        HistogramRow.counts,
        HistogramRow.zeros,
        HistogramRow.nonfinite,
        HistogramRow.exact,
    ).where(
        HistogramRow.run_pk == run_pk,
        _one_rank(HistogramRow, run_pk, rank),
        HistogramRow.layer == layer,
        HistogramRow.kind == kind,
    )
    if stride > 1:
        statement = statement.where((HistogramRow.step - first) % stride == 0)
    return _frame(engine, statement.order_by(HistogramRow.step))


def latest_histogram_exact(
    engine: Engine, run_pk: int, *, kind: str = "rms", rank: int | None = None
) -> dict[str, bool]:
    """Per layer, whether its histogram at the run's last histogram step was exact rather than
    estimated from a sample (the layer's statistics at that step come from the same selection)."""
    last = (
        select(func.max(HistogramRow.step))
        .where(
            HistogramRow.run_pk == run_pk,
            _one_rank(HistogramRow, run_pk, rank),
            HistogramRow.kind == kind,
        )
        .scalar_subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(HistogramRow.layer, HistogramRow.exact).where(
                HistogramRow.run_pk == run_pk,
                _one_rank(HistogramRow, run_pk, rank),
                HistogramRow.kind == kind,
                HistogramRow.step == last,
            )
        ).all()
    return {str(layer): bool(exact) for layer, exact in rows}


def histogram_matrix(
    engine: Engine,
    run_pk: int,
    layer: str,
    *,
    kind: str = "rms",
    start_step: int | None = None,
    end_step: int | None = None,
    max_points: int | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """One layer's histograms as a heatmap matrix: index `step`, one column per bucket named by
    its lower edge (the run's `hist_edges`), values = counts. `attrs["edges"]` has all edges,
    `attrs["zeros"]`/`attrs["nonfinite"]` the per-step extra buckets as Series."""
    run_pk = _pk(run_pk)
    statement = select(
        HistogramRow.step, HistogramRow.counts, HistogramRow.zeros, HistogramRow.nonfinite
    ).where(
        HistogramRow.run_pk == run_pk,
        _one_rank(HistogramRow, run_pk, rank),
        HistogramRow.layer == layer,
        HistogramRow.kind == kind,
        *_step_range(HistogramRow.step, start_step, end_step),
    )
    rows = _frame(engine, _thin(statement, HistogramRow.step, max_points))
    recorded = _scalar(engine, select(Run.hist_edges).where(Run.id == run_pk)) or []
    edges = [float(e) for e in recorded]
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


def validations(engine: Engine, run_pks: Sequence[int], *, name: str | None = None) -> pd.DataFrame:
    """Validation points (run_pk, step, time, name, value) of these runs, in step order."""
    statement = (
        select(
            Validation.run_pk, Validation.step, Validation.time, Validation.name, Validation.value
        )
        .where(Validation.run_pk.in_(_pks(run_pks)))
        .order_by(Validation.run_pk, Validation.step, Validation.name)
    )
    if name is not None:
        statement = statement.where(Validation.name == name)
    return _frame(engine, statement, ("time",))


def checkpoints(engine: Engine, run_pk: int) -> pd.DataFrame:
    """Checkpoint events of one run (step, time, action, ok, seconds, ...) in time order."""
    run_pk = _pk(run_pk)
    statement = (
        select(*_data_columns(Checkpoint))
        .where(Checkpoint.run_pk == run_pk)
        .order_by(Checkpoint.time)
    )
    return _frame(engine, statement, ("time",))


def system_samples(
    engine: Engine, run_pk: int, *, since: TimeLike | None = None, until: TimeLike | None = None
) -> pd.DataFrame:
    """CPU, memory and GPU samples of one run in time order."""
    run_pk = _pk(run_pk)
    statement = (
        select(*_data_columns(SystemSampleRow))
        .where(SystemSampleRow.run_pk == run_pk, *_time_range(SystemSampleRow.time, since, until))
        .order_by(SystemSampleRow.time)
    )
    return _frame(engine, statement, ("time",))


def sli_samples(
    engine: Engine,
    *,
    job: str | None = None,
    name: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
) -> pd.DataFrame:
    """Production SLI samples (job, name, time, value, labels) posted through ingest (e.g.
    `model_drift`), oldest first."""
    statement = (
        select(SliSample.job, SliSample.name, SliSample.time, SliSample.value, SliSample.labels)
        .where(*_time_range(SliSample.time, since, until))
        .order_by(SliSample.time)
    )
    if job is not None:
        statement = statement.where(SliSample.job == job)
    if name is not None:
        statement = statement.where(SliSample.name == name)
    return _frame(engine, statement, ("time",))

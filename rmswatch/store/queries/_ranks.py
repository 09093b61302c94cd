"""Distributed runs: per-layer statistics across ranks, rank progress (stragglers), the ranks'
desync checks and the newest checkpoint load of each run (resume fidelity). SQL in, pandas out.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Engine, func, select

from rmswatch.store.models import Checkpoint, LayerStep, RankCheck, Step
from rmswatch.store.queries._common import _frame, _pk, _pks

RANK_LAYER_FIELDS = (
    "grad_norm",
    "param_norm",
    "update_norm",
    "update_ratio",
    "eff_lr_mean",
    "eff_lr_min",
    "eff_lr_p50",
    "eff_lr_p95",
    "eff_lr_max",
)


def ranks(engine: Engine, run_pk: int) -> list[int]:
    """The ranks that wrote steps into the run, ascending (the rank picker's choices)."""
    statement = select(Step.rank).where(Step.run_pk == _pk(run_pk)).distinct()
    with engine.connect() as conn:
        return sorted(int(r) for r in conn.execute(statement).scalars())


def layer_across_ranks(
    engine: Engine,
    run_pk: int,
    field: str,
    *,
    layers: Sequence[str] | None = None,
    rank: int | None = None,
) -> pd.DataFrame:
    """Per (step, layer): min, median and max of `field` over the ranks, and how many reported.

    With `rank`, that rank's value only (min = median = max). Columns: step, layer, min, median,
    max, ranks.
    """
    if field not in RANK_LAYER_FIELDS:
        raise ValueError(f"field={field!r}: expected one of {', '.join(RANK_LAYER_FIELDS)}")
    column = getattr(LayerStep, field)
    statement = select(
        LayerStep.step, LayerStep.layer, LayerStep.rank, column.label("value")
    ).where(LayerStep.run_pk == _pk(run_pk))
    if layers is not None:
        statement = statement.where(LayerStep.layer.in_(list(layers)))
    if rank is not None:
        statement = statement.where(LayerStep.rank == rank)
    frame = _frame(engine, statement)
    columns = ["step", "layer", "min", "median", "max", "ranks"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["value"] = pd.to_numeric(frame["value"])
    grouped = frame.groupby(["step", "layer"], sort=True)["value"]
    out = grouped.agg(["min", "median", "max", "count"]).reset_index()
    return out.rename(columns={"count": "ranks"})[columns]


def rank_progress(engine: Engine, run_pk: int) -> pd.DataFrame:
    """Per rank: last step, when, and the median step time: what a straggler flag reads.

    Columns: rank, last_step, last_time (UTC Timestamp), median_step_seconds, steps_behind
    (the leading rank's last step minus this rank's).
    """
    statement = select(Step.rank, Step.step, Step.time, Step.step_seconds).where(
        Step.run_pk == _pk(run_pk)
    )
    frame = _frame(engine, statement, ("time",))
    columns = ["rank", "last_step", "last_time", "median_step_seconds", "steps_behind"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["step_seconds"] = pd.to_numeric(frame["step_seconds"])
    out = frame.groupby("rank").agg(
        last_step=("step", "max"),
        last_time=("time", "max"),
        median_step_seconds=("step_seconds", "median"),
    )
    out["steps_behind"] = out["last_step"].max() - out["last_step"]
    return out.reset_index()[columns]


def stragglers(
    progress: pd.DataFrame, *, slower: float = 1.5, behind_steps: int = 10
) -> pd.DataFrame:
    """The ranks of `rank_progress` far behind the others: median step time above `slower` x
    the ranks' median, or `behind_steps` or more behind the leading rank. Adds a `why` column."""
    if progress.empty or len(progress) < 2:
        return progress.assign(why=pd.Series(dtype=str)).iloc[0:0]
    typical = float(progress["median_step_seconds"].median())
    slow = progress["median_step_seconds"] > slower * typical
    behind = progress["steps_behind"] >= behind_steps
    flagged = progress[slow | behind].copy()
    reasons = []
    for seconds, gap in zip(
        flagged["median_step_seconds"].astype(float),
        flagged["steps_behind"].astype(int),
        strict=True,
    ):
        parts = []
        if seconds > slower * typical:
            parts.append(f"step time {seconds:.3g}s vs median {typical:.3g}s")
        if gap >= behind_steps:
            parts.append(f"{gap} steps behind")
        reasons.append("; ".join(parts))
    flagged["why"] = reasons
    return flagged.reset_index(drop=True)


def latest_rank_checks(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    """Per run: its newest compared (not skipped) desync check. Columns: run_pk, step, time
    (UTC Timestamp), status, ranks, layers, detail."""
    columns = ["run_pk", "step", "time", "status", "ranks", "layers", "detail"]
    if not run_pks:
        return pd.DataFrame(columns=columns)
    newest = (
        select(RankCheck.run_pk, func.max(RankCheck.step).label("step"))
        .where(RankCheck.run_pk.in_(_pks(run_pks)), RankCheck.status != "skipped")
        .group_by(RankCheck.run_pk)
        .subquery()
    )
    statement = select(
        RankCheck.run_pk,
        RankCheck.step,
        RankCheck.time,
        RankCheck.status,
        RankCheck.ranks,
        RankCheck.layers,
        RankCheck.detail,
    ).join(newest, (newest.c.run_pk == RankCheck.run_pk) & (newest.c.step == RankCheck.step))
    frame = _frame(engine, statement, ("time",))
    return frame if not frame.empty else pd.DataFrame(columns=columns)


def latest_checkpoint_loads(engine: Engine, run_pks: Sequence[int]) -> pd.DataFrame:
    """Per run: its newest checkpoint load. Columns: run_pk, step, time, ok, path, detail."""
    columns = ["run_pk", "step", "time", "ok", "path", "detail"]
    if not run_pks:
        return pd.DataFrame(columns=columns)
    statement = select(
        Checkpoint.run_pk,
        Checkpoint.step,
        Checkpoint.time,
        Checkpoint.ok,
        Checkpoint.path,
        Checkpoint.detail,
        Checkpoint.id,
    ).where(Checkpoint.run_pk.in_(_pks(run_pks)), Checkpoint.action == "load")
    frame = _frame(engine, statement, ("time",))
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.sort_values(["run_pk", "time", "id"]).groupby("run_pk").tail(1)
    return frame[columns].reset_index(drop=True)

"""Runs: the run table, one row per training run (its identity, status, heartbeat and cost)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, exists, or_, select

from rmswatch.store.models import Run
from rmswatch.store.models_alerting import AlertFiringRow
from rmswatch.store.queries._common import TimeLike, _frame, _scalar, as_datetime

# what `runs` and `run` select; `run_pk` is the key every per-run query takes
_RUN_SELECT = (
    Run.id.label("run_pk"),
    Run.run_id,
    Run.job,
    Run.labels,
    Run.status,
    Run.status_detail,
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
RUN_COLUMNS = tuple(str(column.key) for column in _RUN_SELECT)
_RUN_TIMES = ("started_at", "ended_at", "last_step_at")
SUCCEEDED_WITH_INCIDENT = "succeeded with incident"


def had_incident() -> Any:
    """SQL: a page-severity alert fired about this run (an `alert_firings` row with its id)."""
    return exists().where(AlertFiringRow.run_id == Run.run_id, AlertFiringRow.severity == "page")


def _verdict(frame: pd.DataFrame) -> pd.DataFrame:
    """`verdict`: the status, except that a run its script closed `succeeded` while a page
    fired about it is "succeeded with incident" (the retrain-success SLO counts it bad)."""
    incident = frame.pop("_incident").astype(bool)
    frame["verdict"] = frame["status"].where(
        ~(incident & (frame["status"] == "succeeded")), SUCCEEDED_WITH_INCIDENT
    )
    return frame


def runs(
    engine: Engine,
    active_from: TimeLike | None = None,
    *,
    active_to: TimeLike | None = None,
    job: str | None = None,
    status: str | Sequence[str] | None = None,
    now: TimeLike | None = None,
) -> pd.DataFrame:
    """One row per run (`RUN_COLUMNS`), newest first, plus `heartbeat_age_s` (seconds since the
    last step reached the store, at `now`; NaN before the first step), `gpu_hours` and
    `verdict` (the status, or "succeeded with incident").

    With `active_from`/`active_to`, only runs active at some time in that range: started by
    its end, and still running or not ended before its start (a run still going started hours
    before an alert's window and belongs in it).
    """
    statement = select(*_RUN_SELECT, had_incident().label("_incident")).order_by(
        Run.started_at.desc(), Run.id.desc()
    )
    if job:
        statement = statement.where(Run.job == job)
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        statement = statement.where(Run.status.in_(wanted))
    if active_from is not None:
        statement = statement.where(
            or_(
                Run.status == "running",
                Run.ended_at.is_(None),
                Run.ended_at >= as_datetime(active_from),
            )
        )
    if active_to is not None:
        statement = statement.where(Run.started_at <= as_datetime(active_to))
    frame = _frame(engine, statement, _RUN_TIMES)
    at = pd.Timestamp(as_datetime(now if now is not None else datetime.now(UTC)))
    frame["heartbeat_age_s"] = (at - frame["last_step_at"]).dt.total_seconds()
    frame["gpu_hours"] = frame["gpu_seconds"] / 3600.0
    return _verdict(frame)


def run(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """One run as a dict (`RUN_COLUMNS`, `layers`, `hist_edges` and `verdict`), or None when
    the store has no such run."""
    statement = select(
        *_RUN_SELECT, Run.layers, Run.hist_edges, had_incident().label("_incident")
    ).where(Run.run_id == run_id)
    frame = _frame(engine, statement, _RUN_TIMES)
    if frame.empty:
        return None
    frame = _verdict(frame)
    return {str(key): value for key, value in frame.iloc[0].to_dict().items()}


def last_good_run(engine: Engine, job: str, before: TimeLike, exclude_run_id: str) -> str | None:
    """run_id of the newest succeeded run of `job` that started before `before`."""
    return _scalar(  # type: ignore[no-any-return]
        engine,
        select(Run.run_id)
        .where(
            Run.job == job,
            Run.status == "succeeded",
            Run.started_at <= as_datetime(before),
            Run.run_id != exclude_run_id,
        )
        .order_by(Run.started_at.desc())
        .limit(1),
    )


def gpu_hours(
    engine: Engine,
    *,
    job: str | None = None,
    since: TimeLike | None = None,
    gpu_hour_usd: float | None = None,
) -> pd.DataFrame:
    """GPU-hours per run (integrated from system samples) that started at or after `since`,
    oldest first, with `cost_usd` when a price is given."""
    statement = select(
        Run.run_id, Run.job, Run.status, Run.started_at, Run.ended_at, Run.gpu_seconds
    ).order_by(Run.started_at)
    if job is not None:
        statement = statement.where(Run.job == job)
    if since is not None:
        statement = statement.where(Run.started_at >= as_datetime(since))
    frame = _frame(engine, statement, ("started_at", "ended_at"))
    frame["gpu_hours"] = frame["gpu_seconds"] / 3600.0
    if gpu_hour_usd is not None:
        frame["cost_usd"] = frame["gpu_hours"] * gpu_hour_usd
    return frame

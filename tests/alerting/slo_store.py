"""Test-store builders for the SLO/health tests: runs and their telemetry as inserted rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert

from rmswatch.store.engine import make_engine, upgrade
from rmswatch.store.models import Checkpoint, Run, SliSample, Step, Validation

T0 = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def new_store(url: str) -> Engine:
    """A migrated store opened as the server opens it (SQLite: WAL, busy timeout, foreign keys)."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


def add_run(
    engine: Engine,
    run_id: str,
    *,
    job: str = "retrain",
    status: str = "running",
    started: float = T0,
    ended: float | None = None,
    last_step: int | None = None,
    last_step_at: float | None = None,
    labels: Mapping[str, str] | None = None,
    every: int = 1,
) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            insert(Run).values(
                run_id=run_id, job=job, status=status, started_at=at(started),
                ended_at=None if ended is None else at(ended), last_step=last_step,
                last_step_at=None if last_step_at is None else at(last_step_at),
                labels=dict(labels or {"model": "resnet50", "cluster": "eu-1"}), every=every,
            )
        )  # fmt: skip
        return int(result.inserted_primary_key[0])


def add_steps(engine: Engine, run_pk: int, rows: Iterable[Mapping[str, Any]]) -> None:
    """rows: step, time (epoch seconds) and any Step columns; updates the run's heartbeat."""
    values = [{**row, "run_pk": run_pk, "time": at(row["time"])} for row in rows]
    if not values:
        return
    # one executemany needs the same keys in every row
    keys = {k for v in values for k in v}
    defaults = {k: 0 if k.startswith("nonfinite_") else None for k in keys}
    values = [{**defaults, **v} for v in values]
    last = max(values, key=lambda v: v["step"])
    with engine.begin() as conn:
        conn.execute(insert(Step), values)
        conn.execute(
            Run.__table__.update()
            .where(Run.id == run_pk)
            .values(last_step=last["step"], last_step_at=last["time"])
        )


def add_validations(
    engine: Engine, run_pk: int, values: Iterable[tuple[int, float, float]]
) -> None:
    rows = [{"run_pk": run_pk, "step": s, "time": at(t), "value": v} for s, t, v in values]
    with engine.begin() as conn:
        conn.execute(insert(Validation), rows)


def add_checkpoint(engine: Engine, run_pk: int, step: int, time: float, ok: bool) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Checkpoint).values(run_pk=run_pk, step=step, time=at(time), action="save", ok=ok)
        )


def add_samples(engine: Engine, job: str, name: str, values: Iterable[tuple[float, float]]) -> None:
    rows = [{"job": job, "name": name, "time": at(t), "value": v} for t, v in values]
    with engine.begin() as conn:
        conn.execute(insert(SliSample), rows)

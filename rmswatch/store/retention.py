"""Retention: keep the store from growing without bound.

Histogram rows (the bulk of the store: one per layer per step) are thinned by age, every step
for `full_resolution_hours`, every `downsample_every`-th telemetry step after that; all telemetry
older than `keep_days` is deleted. Run rows (the SLO and cost history) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, delete, select

from rmswatch.store.engine import write_transaction
from rmswatch.store.models import (
    Base,
    Checkpoint,
    HistogramRow,
    LayerStep,
    Run,
    SliSample,
    Step,
    SystemSampleRow,
    Validation,
)
from rmswatch.store.retention_config import RetentionConfig

_AGED_TABLES: tuple[type[Base], ...] = (
    HistogramRow,
    LayerStep,
    Step,
    Validation,
    Checkpoint,
    SystemSampleRow,
    SliSample,
)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """Rows deleted: `downsampled` histogram rows thinned, `expired` per table past keep_days."""

    downsampled: int
    expired: dict[str, int]


def apply_retention(
    engine: Engine, config: RetentionConfig, now: datetime | float | None = None
) -> RetentionReport:
    """Thin old histograms and delete expired telemetry as of `now` (default: the clock)."""
    if now is None:
        at = datetime.now(UTC)
    elif isinstance(now, datetime):
        at = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    else:
        at = datetime.fromtimestamp(now, tz=UTC)
    expired: dict[str, int] = {}
    with write_transaction(engine) as conn:
        downsampled = 0
        if config.downsample_every > 1:
            full_resolution_cutoff = at - timedelta(hours=config.full_resolution_hours)
            every = select(Run.every).where(Run.id == HistogramRow.run_pk).scalar_subquery()
            # step // every numbers telemetry steps 0, 1, 2, ... whatever the run's cadence
            result = conn.execute(
                delete(HistogramRow).where(
                    HistogramRow.time < full_resolution_cutoff,
                    (HistogramRow.step // every) % config.downsample_every != 0,
                )
            )
            downsampled = int(result.rowcount or 0)
        if config.keep_days is not None:
            cutoff = at - timedelta(days=config.keep_days)
            for model in _AGED_TABLES:
                table = cast(Table, model.__table__)
                result = conn.execute(delete(table).where(table.c.time < cutoff))
                expired[str(table.name)] = int(result.rowcount or 0)
    return RetentionReport(downsampled=downsampled, expired=expired)

"""Which job, run and time range a page shows, from its URL query (?job=&run=&from=&to=)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from rmswatch.store.queries import views as queries


@dataclass(frozen=True)
class Selection:
    job: str | None
    run: str | None
    start: datetime | None
    end: datetime | None


def parse_time(text: str | None) -> datetime | None:
    """ISO 8601 (`2024-05-01`, `2024-05-01T03:00:00Z`); None when absent or unparseable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def from_query(query: dict[str, Any]) -> Selection:
    return Selection(
        job=query.get("job") or None,
        run=query.get("run") or None,
        start=parse_time(query.get("from")),
        end=parse_time(query.get("to")),
    )


def pick_run(runs: pd.DataFrame, run_id: str | None, job: str | None) -> dict[str, Any] | None:
    """The asked-for run, else the newest run of the job, else the newest run."""
    if runs.empty:
        return None
    if run_id and (runs["run_id"] == run_id).any():
        return dict(runs[runs["run_id"] == run_id].iloc[0])
    if job and (runs["job"] == job).any():
        return dict(runs[runs["job"] == job].iloc[0])
    return dict(runs.iloc[0])


def runs_for(engine: Engine, selection: Selection) -> pd.DataFrame:
    return queries.runs(engine, started_from=selection.start, started_to=selection.end)

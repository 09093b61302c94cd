"""Which job, run and time range a page shows, from its URL query (?job=&run=&from=&to=).

`from`/`to` accept ISO 8601 (what alert dashboard links carry: `2026-05-01T03:00:00Z`), Unix
epoch seconds or milliseconds (Grafana's `from=1714532400000`), and `now` / `now-6h` / `now-30m`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from rmswatch.store import queries


@dataclass(frozen=True)
class Selection:
    job: str | None
    run: str | None
    start: datetime | None
    end: datetime | None


_RELATIVE = re.compile(r"^now(?:-(\d+)([smhd]))?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# epoch values above this are milliseconds (seconds would be past the year 33658)
_EPOCH_MS_ABOVE = 1e12


def parse_time(text: str | None, now: datetime | None = None) -> datetime | None:
    """A UTC datetime from ISO 8601, epoch s/ms or `now[-Nu]`; None when absent or unparseable."""
    if not text:
        return None
    value = str(text).strip()
    relative = _RELATIVE.match(value)
    if relative:
        moment = now or datetime.now(UTC)
        if relative.group(1):
            moment -= timedelta(seconds=int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)])
        return moment
    if re.fullmatch(r"\d+(\.\d+)?", value):
        epoch = float(value)
        return datetime.fromtimestamp(epoch / 1000 if epoch > _EPOCH_MS_ABOVE else epoch, UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def from_query(query: dict[str, Any], now: datetime | None = None) -> Selection:
    return Selection(
        job=query.get("job") or None,
        run=query.get("run") or None,
        start=parse_time(query.get("from"), now),
        end=parse_time(query.get("to"), now),
    )


def describe(selection: Selection) -> str:
    """`runs active 2026-05-01 02:00 – 03:15 UTC` for a page header; empty without a range."""
    if selection.start is None and selection.end is None:
        return ""
    start = selection.start.strftime("%Y-%m-%d %H:%M") if selection.start else "the start"
    end = selection.end.strftime("%Y-%m-%d %H:%M") if selection.end else "now"
    return f"runs active {start} – {end} UTC"


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
    return queries.runs(engine, active_from=selection.start, active_to=selection.end)

"""The app's window onto alert state: active alerts, a run's alerts, silences, acknowledgements.

Alert state belongs to `rmswatch.alerting` and its queries in `rmswatch.store.queries`;
this module adapts them to the columns the views use (ALERT_COLUMNS).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from rmswatch.alerting import lifecycle, silences
from rmswatch.store import queries as alert_queries

ALERT_COLUMNS = [
    "fingerprint",
    "alertname",
    "job",
    "run_id",
    "severity",
    "state",
    "starts_at",
    "ends_at",
    "summary",
    "runbook_url",
    "silenced",
    "acknowledged_by",
]


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ALERT_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["starts_at"] = pd.to_datetime(frame["starts_at"], utc=True)
    frame["ends_at"] = pd.to_datetime(frame["ends_at"], utc=True)
    # health alerts name their run in an annotation (run_id is not part of the fingerprint)
    if "annotations" in frame:
        annotated = frame["annotations"].map(
            lambda a: a.get("run_id") if isinstance(a, dict) else None
        )
        frame["run_id"] = frame["run_id"].where(frame["run_id"].notna(), annotated)
    return frame


def available() -> bool:
    """Alert state always lives in the store now; kept so pages can word empty states."""
    return True


def active_alerts(engine: Engine) -> pd.DataFrame:
    """Firing and pending alerts, pages first."""
    return _conform(alert_queries.active_alerts(engine))


def resolved_alerts(engine: Engine, since: datetime) -> pd.DataFrame:
    """Alerts resolved since `since`, pages first, newest first within a severity."""
    return _conform(alert_queries.resolved_alerts(engine, since))


def run_alerts(engine: Engine, run_id: str) -> pd.DataFrame:
    """Every alert (any state) raised for one run."""
    return _conform(alert_queries.alerts_for_run(engine, run_id))


FIRING_COLUMNS = ["time", "fingerprint", "alertname", "severity", "to_state", "value", "detail"]


def run_firings(engine: Engine, run: Mapping[str, Any], raised: pd.DataFrame) -> pd.DataFrame:
    """Every state change (fired, resolved, acknowledged) of the alerts raised for `run`, oldest
    first, from the alert history, restricted to the run's lifetime (an SLO alert of the job
    keeps firing across runs)."""
    if raised.empty:
        return pd.DataFrame(columns=FIRING_COLUMNS)
    history = alert_queries.alert_history(
        engine, job=str(run["job"]), since=pd.Timestamp(run["started_at"]).to_pydatetime()
    )
    if history.empty:
        return pd.DataFrame(columns=FIRING_COLUMNS)
    mine = history[history["fingerprint"].isin(set(raised["fingerprint"]))]
    ended = run.get("ended_at")
    if ended is not None and not pd.isna(ended):
        # resolutions after the end still belong to the run's story; new firings do not
        late = (pd.to_datetime(mine["time"], utc=True) > pd.Timestamp(ended)) & (
            mine["to_state"] == "firing"
        )
        mine = mine[~late]
    return pd.DataFrame(mine[FIRING_COLUMNS]).reset_index(drop=True)


def create_silence(
    engine: Engine,
    matchers: Mapping[str, str],
    starts_at: datetime,
    ends_at: datetime,
    author: str,
    comment: str,
) -> Any:
    return silences.create_silence(engine, dict(matchers), starts_at, ends_at, author, comment)


def acknowledge(engine: Engine, fingerprint: str, by: str) -> bool:
    return lifecycle.acknowledge_alert(engine, fingerprint, by)

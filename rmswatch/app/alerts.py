"""The app's window onto alert state: active alerts, a run's alerts, silences, acknowledgements.

Alert state belongs to `rmswatch.alerting` and its queries in `rmswatch.store.queries.alerts`;
this module adapts them to the columns the views use (ALERT_COLUMNS).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine

ALERT_COLUMNS = [
    "fingerprint",
    "alertname",
    "job",
    "run_id",
    "severity",
    "state",
    "starts_at",
    "summary",
    "runbook_url",
    "silenced",
    "acknowledged_by",
]


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=ALERT_COLUMNS)


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ALERT_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["starts_at"] = pd.to_datetime(frame["starts_at"], utc=True)
    return frame


def available() -> bool:
    """True once the alerting package provides alert state in the store."""
    try:
        import rmswatch.store.queries.alerts  # noqa: F401
    except ImportError:
        return False
    return True


def active_alerts(engine: Engine) -> pd.DataFrame:
    """Firing and pending alerts, pages first."""
    if not available():
        return _empty()
    from rmswatch.store.queries import alerts as queries

    return _conform(queries.active_alerts(engine))


def run_alerts(engine: Engine, run_id: str) -> pd.DataFrame:
    """Every alert (any state) raised for one run."""
    if not available():
        return _empty()
    from rmswatch.store.queries import alerts as queries

    return _conform(queries.alert_history(engine, run_id=run_id))


def create_silence(
    engine: Engine,
    matchers: Mapping[str, str],
    starts_at: datetime,
    ends_at: datetime,
    author: str,
    comment: str,
) -> Any:
    from rmswatch.alerting.silences import create_silence as create

    return create(engine, dict(matchers), starts_at, ends_at, author, comment)


def acknowledge(engine: Engine, fingerprint: str, by: str) -> Any:
    from rmswatch.alerting.lifecycle import acknowledge_alert

    return acknowledge_alert(engine, fingerprint, by)

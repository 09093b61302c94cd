"""The URL query every page reads: alert dashboard links, epoch and relative times."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import create_engine

from rmswatch.alerting.evaluate import (
    DASHBOARD_AFTER_SECONDS,
    DASHBOARD_BEFORE_SECONDS,
    Evaluator,
)
from rmswatch.app.selection import describe, from_query, parse_time
from rmswatch.config import Config

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def test_an_alerts_dashboard_link_opens_the_window_around_the_alert() -> None:
    config = Config.model_validate({"server": {"external_url": "https://rmswatch.example.com"}})
    link = Evaluator(create_engine("sqlite://"), config).dashboard_url(
        "resnet retrain", "run-7", NOW.timestamp()
    )
    parts = urlsplit(link)
    assert parts.path == "/oncall"
    selection = from_query(dict(parse_qsl(parts.query, keep_blank_values=True)))
    assert (selection.job, selection.run) == ("resnet retrain", "run-7")
    assert selection.start is not None and selection.end is not None
    assert selection.start.timestamp() == NOW.timestamp() - DASHBOARD_BEFORE_SECONDS
    assert selection.end.timestamp() == NOW.timestamp() + DASHBOARD_AFTER_SECONDS
    assert describe(selection) == "runs active 2026-05-01 02:00 – 2026-05-01 03:15 UTC"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T03:00:00Z", NOW),
        ("2026-05-01T05:00:00+02:00", NOW),
        ("2026-05-01T03:00:00", NOW),
        ("1777604400", NOW),
        ("1777604400000", NOW),
        ("now", NOW),
        ("now-90m", datetime(2026, 5, 1, 1, 30, tzinfo=UTC)),
        ("now-1d", datetime(2026, 4, 30, 3, 0, tzinfo=UTC)),
    ],
)
def test_from_and_to_accept_iso_epoch_and_relative_times(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", None, "yesterday", "now-5x", "2026-13-01"])
def test_an_unreadable_time_means_no_bound_rather_than_an_error(text: str | None) -> None:
    assert parse_time(text, now=NOW) is None

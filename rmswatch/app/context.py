"""What a page needs from the server (engine, config, clock), attached to the Flask app.

Page modules are imported by Dash, so they cannot take arguments; their callbacks look the
collaborators up on the Flask app serving the request instead of in module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import flask
from sqlalchemy import Engine

from rmswatch.app.slo_source import SloSnapshot, SloSource
from rmswatch.config import Config

CONFIG_KEY = "RMSWATCH_CONTEXT"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AppContext:
    engine: Engine
    config: Config = field(default_factory=Config)
    clock: Callable[[], datetime] = utc_now
    slo_source: SloSource = field(default_factory=SloSource, compare=False, repr=False)

    def slo_snapshot(self) -> SloSnapshot:
        """Every SLO's numbers now, as the alerting engine computes them for this config."""
        return self.slo_source.snapshot(self.engine, self.config, self.clock())


def attach(server: flask.Flask, context: AppContext) -> None:
    server.config[CONFIG_KEY] = context


def current() -> AppContext:
    context: Any = flask.current_app.config[CONFIG_KEY]
    assert isinstance(context, AppContext)
    return context

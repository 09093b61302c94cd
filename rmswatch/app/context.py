"""What a page needs from the server (engine, config, clock), attached to the Flask app.

Page modules are imported by Dash, so they cannot take arguments; their callbacks look the
collaborators up on the Flask app serving the request instead of in module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import flask
from sqlalchemy import Engine

from rmswatch.config import Config

CONFIG_KEY = "RMSWATCH_CONTEXT"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class AppContext:
    engine: Engine
    config: Config = field(default_factory=Config)
    clock: Callable[[], datetime] = utc_now

    def slo_objective(self, name: str, default: float = 0.95) -> float:
        """The configured objective of an SLO as a fraction (config may say 95 or 0.95)."""
        for spec in self.config.slos:
            if spec.name == name:
                objective = float(spec.objective)
                return objective / 100.0 if objective > 1 else objective
        return default


def attach(server: flask.Flask, context: AppContext) -> None:
    server.config[CONFIG_KEY] = context


def current() -> AppContext:
    context: Any = flask.current_app.config[CONFIG_KEY]
    assert isinstance(context, AppContext)
    return context

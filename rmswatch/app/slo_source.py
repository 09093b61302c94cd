"""The SLO numbers the pages show, from the alerting engine itself (never recomputed here).

One incremental `rmswatch.alerting.evaluate.Evaluator` per server, over the config the server
was started with, ticked when a page asks: the first read covers the SLO period, later ones only
what the store gained. It only reads the store; alert state stays the scheduler's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine

from rmswatch.alerting.evaluate import Evaluator
from rmswatch.alerting.slo import SloWindows
from rmswatch.alerting.spec import SloSpec
from rmswatch.config import Config


@dataclass(frozen=True)
class SloSnapshot:
    """`table`: `Evaluator.slo_table` (one row per SLO and series); `counts`:
    `Evaluator.period_counts()`; `specs` and `windows` by SLO name."""

    at: datetime
    table: pd.DataFrame
    counts: pd.DataFrame
    specs: dict[str, SloSpec]
    windows: dict[str, SloWindows]


class SloSource:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._evaluator: Evaluator | None = None

    def snapshot(self, engine: Engine, config: Config, now: datetime) -> SloSnapshot:
        with self._lock:  # the Evaluator's state is not shared between concurrent ticks
            if self._evaluator is None:
                self._evaluator = Evaluator(engine, config)
            evaluator = self._evaluator
            evaluator.tick(now)
            specs = {spec.name: spec for spec in evaluator.slos}
            return SloSnapshot(
                at=now,
                table=evaluator.slo_table.copy(),
                counts=evaluator.period_counts(),
                specs=specs,
                windows={name: SloWindows.for_spec(spec) for name, spec in specs.items()},
            )

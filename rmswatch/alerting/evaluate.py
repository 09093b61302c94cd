"""One evaluation tick: SLO burn rates and training-health rules -> `Signal`s for the lifecycle.

`Evaluator` keeps per-SLO bucket histories (`slo_eval`) and each running run's recent steps
(`health_eval.TailCache`) between ticks, so a tick reads only what the store gained since the
last one (plus `lookback_seconds` for late telemetry). Findings of SLOs, step windows
(`step_windows`) and health rules become signals here, with labels, runbook and dashboard links.
`evaluate()` is the one-shot form (cold: it reads the whole SLO period).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from urllib.parse import quote_plus, urlencode

import pandas as pd
from sqlalchemy import Engine

from rmswatch.alerting import health_eval, slo_eval, step_windows
from rmswatch.alerting import store_inputs as q
from rmswatch.alerting.signals import Finding, Signal
from rmswatch.alerting.slo import COARSE_FACTOR
from rmswatch.alerting.spec import effective_slos
from rmswatch.alerting.texts import SLO_ALERTNAME as SLO_ALERTNAME
from rmswatch.alerting.texts import SLO_STEPS_ALERTNAME as SLO_STEPS_ALERTNAME
from rmswatch.config import Config, runbook_url

# the on-call link covers this much before the alert and a little after
DASHBOARD_BEFORE_SECONDS = 3600.0
DASHBOARD_AFTER_SECONDS = 900.0


def _epoch(now: datetime | float) -> float:
    if isinstance(now, datetime):
        return (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
    return float(now)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Evaluator:
    """Holds the incremental state of evaluation for one store and one config."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        evaluation = config.evaluation
        self.slos = effective_slos(config.slos, defaults=evaluation.default_slos)
        self._states = {
            spec.name: slo_eval.SloState.new(spec, evaluation.lookback_seconds)
            for spec in self.slos
        }
        self._last_now: float | None = None
        self._health = health_eval.HealthState(engine, config)
        self.slo_table = pd.DataFrame()
        self._url_time: tuple[float, str] = (math.nan, "")
        self._url_ids: dict[tuple[str, str], str] = {}

    def tick(self, now: datetime | float) -> list[Signal]:
        """Evaluate everything at `now`; returns one signal per (rule, series), active or not."""
        now_s = _epoch(now)
        lookback = self.config.evaluation.lookback_seconds
        longest_period = max((s.spec.period for s in self._states.values()), default=0.0)
        since_runs = now_s - max(longest_period, lookback)
        if self._last_now is not None:
            since_runs = min(since_runs, self._last_now - lookback)
        runs = q.runs(self.engine, since_runs)
        found: list[Finding] = []
        tables = []
        for state in self._states.values():
            table = slo_eval.update(state, self.engine, self.config, runs, now_s, self._last_now)
            tables.append(table)
            found += slo_eval.findings(state, table, runs)
        self.slo_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        running = runs[runs["status"] == "running"]
        found += self._health.findings(runs, now_s, self._last_now)
        found += step_windows.findings(
            self.slos, running, self._health.running_tails, self.config.health.nonfinite.kinds
        )
        self._last_now = now_s
        return [self.signal(f, now_s) for f in found]

    def period_counts(self) -> pd.DataFrame:
        """Good/total events per (SLO, series, coarse bucket) of the period as of the last tick:
        what the budget-burn chart accumulates. `start`/`end` are the bucket's epoch bounds."""
        parts = []
        for state in self._states.values():
            if state.history.end is None:
                continue
            counts = state.history.coarse_counts()
            seconds = state.windows.bucket_seconds * COARSE_FACTOR
            parts.append(
                counts.assign(
                    slo=state.spec.name,
                    start=counts["bucket"] * float(seconds),
                    end=(counts["bucket"] + 1) * float(seconds),
                )
            )
        columns = ["slo", "key", "start", "end", "good", "total"]
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat(parts, ignore_index=True)[columns]

    def signal(self, finding: Finding, now: float) -> Signal:
        """A finding with the run's model/cluster labels, the runbook and the on-call link."""
        run_labels = finding.run.get("labels") if finding.run is not None else None
        run_labels = run_labels if isinstance(run_labels, dict) else {}
        labels = {
            "alertname": finding.alertname,
            "job": finding.job,
            "run_id": finding.run_id,
            "model": str(run_labels.get("model", "")),
            "cluster": str(run_labels.get("cluster", "")),
            "severity": finding.severity,
            **finding.labels,
        }
        value = finding.value
        if value is not None and not math.isfinite(value):
            value = None if math.isnan(value) else value
        annotations = {
            "summary": finding.summary,
            "description": finding.description,
            "runbook_url": self.runbook_url(finding.runbook),
            "dashboard_url": self.dashboard_url(finding.job, finding.run_id, now),
        }
        return Signal(finding.alertname, labels, finding.severity, finding.active, value,
                      finding.for_seconds, annotations)  # fmt: skip

    def runbook_url(self, name: str) -> str:
        return runbook_url(self.config, name)

    def dashboard_url(self, job: str, run_id: str, at: float) -> str:
        base = self.config.server.base_url()
        if self._url_time[0] != at:  # the time range is the same for every alert of a tick
            window = {"from": _iso(at - DASHBOARD_BEFORE_SECONDS),
                      "to": _iso(at + DASHBOARD_AFTER_SECONDS)}  # fmt: skip
            self._url_time = (at, urlencode(window))
        ids = self._url_ids.get((job, run_id))
        if ids is None:
            ids = self._url_ids[(job, run_id)] = f"job={quote_plus(job)}&run={quote_plus(run_id)}"
        return f"{base}/oncall?{ids}&{self._url_time[1]}"


def evaluate(
    engine: Engine, config: Config, now: datetime | float, *, evaluator: Evaluator | None = None
) -> list[Signal]:
    """Signals at `now`. Pass the same `evaluator` every tick to evaluate incrementally."""
    return (evaluator or Evaluator(engine, config)).tick(now)


def slo_status(engine: Engine, config: Config, now: datetime | float) -> pd.DataFrame:
    """The SLO view's numbers at `now`: one row per (SLO, series) with burn rate per window,
    events per window, budget remaining and time to exhaustion (seconds)."""
    evaluator = Evaluator(engine, config)
    evaluator.tick(now)
    return evaluator.slo_table

"""Health evaluation: each running run's recent steps kept between ticks (`TailCache`), the
health rules of `health.py` over them, and the findings they raise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from rmswatch.alerting import health as health_rules
from rmswatch.alerting import store_inputs as q
from rmswatch.alerting import texts
from rmswatch.alerting.signals import Finding
from rmswatch.alerting.spec import burn_policy
from rmswatch.config import Config


class TailCache:
    """The recent steps of every running run, read incrementally: a run's tail once when it is
    first seen, then only the steps logged since the previous tick (plus the lookback)."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self.tails: pd.DataFrame | None = None
        self.runs: set[int] = set()

    def update(self, running: pd.DataFrame, now: float, last_now: float | None) -> pd.DataFrame:
        config = self.config.health
        span_rows = health_rules.rows_needed(config)
        step_span = max((w.long_steps for w in burn_policy().step_windows), default=0)
        pks = [int(pk) for pk in running["run_pk"]]
        new_pks = [pk for pk in pks if pk not in self.runs]
        parts = []
        if self.tails is not None and last_now is not None:
            since = min(last_now, now) - self.config.evaluation.lookback_seconds
            known = [pk for pk in pks if pk in self.runs]
            parts += [self.tails[self.tails["run_pk"].isin(known)]]
            parts.append(q.steps_since(self.engine, known, since))
        parts.append(q.step_tails(self.engine, new_pks, max(span_rows, step_span)))
        parts = [p for p in parts if not p.empty]
        if not parts:
            tails = q.empty_tails()
        else:
            tails = pd.concat(parts, ignore_index=True)
            tails = tails.drop_duplicates(["run_pk", "step"], keep="last")
            tails = tails.sort_values(["run_pk", "step"], ignore_index=True)
            every = tails["run_pk"].map(running.set_index("run_pk")["every"]).fillna(1)
            newest = tails.groupby("run_pk")["step"].transform("max")
            span = (span_rows * every).clip(lower=step_span)
            tails = tails[tails["step"] > newest - span].reset_index(drop=True)
        self.tails = tails
        self.runs = set(pks)
        return tails


def findings(engine: Engine, config: Config, runs: pd.DataFrame, tails: pd.DataFrame,
             now: float, last_now: float | None) -> list[Finding]:  # fmt: skip
    """Every enabled rule's finding for every running run, and resolutions for the runs that
    ended since the previous tick."""
    health = config.health
    running = runs[runs["status"] == "running"]
    pks = [int(pk) for pk in running["run_pk"]]
    verdicts = health_rules.evaluate_health(
        health,
        running,
        tails,
        q.validations(engine, pks),
        q.checkpoint_failures(engine, pks, now - health.checkpoint_failures.window),
        now,
        loads=q.latest_checkpoint_loads(engine, pks),
        rank_checks=q.latest_rank_checks(engine, pks),
    )
    by_pk = {int(r["run_pk"]): r for r in runs.to_dict("records")}
    out = []
    for verdict in verdicts:
        rule = getattr(health, verdict.rule)
        run = by_pk[verdict.run_pk]
        out.append(
            _finding(verdict.rule, rule, run, verdict.active, verdict.value,
                     texts.HEALTH_SUMMARY.format(job=run["job"], run_id=run["run_id"],
                                                 summary=verdict.summary))
        )  # fmt: skip
    # runs that ended since the last tick: their health alerts resolve now
    if last_now is not None:
        lookback = config.evaluation.lookback_seconds
        ended = runs[(runs["status"] != "running") & (runs["ended_at"] >= last_now - lookback)]
        for run in ended.to_dict("records"):
            for name in texts.RULE_ALERTNAMES:
                rule = getattr(health, name)
                if rule.enabled:
                    summary = texts.RUN_ENDED_SUMMARY.format(
                        job=run["job"], run_id=run["run_id"], status=run["status"]
                    )
                    out.append(_finding(name, rule, run, False, None, summary))
    return out


def _finding(name: str, rule: object, run: Mapping[Any, Any], active: bool,
             value: float | None, summary: str) -> Finding:  # fmt: skip
    return Finding(
        alertname=texts.RULE_ALERTNAMES[name],
        severity=getattr(rule, "severity"),  # noqa: B009 - every rule model has one
        active=active,
        value=value,
        job=str(run["job"]),
        run_id=str(run["run_id"]),
        run=run,
        summary=summary,
        description=texts.RULE_DESCRIPTIONS[name],
        runbook=getattr(rule, "runbook"),  # noqa: B009
        for_seconds=getattr(rule, "for_"),  # noqa: B009
    )

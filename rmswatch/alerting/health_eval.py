"""Health evaluation: each running run's recent steps kept between ticks (`TailCache`), the
health rules of `health.py` over them with their memory (`HealthState`), and the findings they
raise."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
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


class HealthState:
    """The health rules' memory between ticks: recent steps, per-run `RunMemory`, each running
    run's job history, and the ended runs whose alerts are to resolve at the next tick."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self.tail_cache = TailCache(engine, config)
        self.memory: dict[int, health_rules.RunMemory] = {}
        self.history: dict[int, health_rules.JobHistory | None] = {}
        self._losses: dict[int, pd.DataFrame] = {}
        self._judged_ended: set[int] = set()
        self._resolve_next: list[Mapping[Any, Any]] = []
        self.running_tails = q.empty_tails()

    def findings(self, runs: pd.DataFrame, now: float, last_now: float | None) -> list[Finding]:
        """Every enabled rule's finding for every running run; a run that ended since the
        previous tick has the steps it logged since then judged once (an incident that ended
        with the run still fires), and its alerts resolve at the next tick."""
        health = self.config.health
        lookback = self.config.evaluation.lookback_seconds
        running = runs[runs["status"] == "running"]
        ended = runs.iloc[0:0]
        if last_now is not None:
            ended = runs[
                (runs["status"] != "running")
                & (runs["ended_at"] >= last_now - lookback)
                & ~runs["run_pk"].isin(self._judged_ended)
            ]
        judged = pd.concat([running, ended], ignore_index=True)
        tails = self.tail_cache.update(judged, now, last_now)
        self.running_tails = tails[tails["run_pk"].isin(running["run_pk"])]
        pks = [int(pk) for pk in judged["run_pk"]]
        for run in judged.to_dict("records"):
            self._remember(run, tails)
        history = {int(run["run_pk"]): self._history(run) for run in running.to_dict("records")}
        verdicts = health_rules.evaluate_health(
            health,
            health_rules.HealthInputs(
                runs=judged,
                tails=tails,
                validations=q.validations(self.engine, pks),
                failures=q.checkpoint_failures(
                    self.engine, pks, now - health.checkpoint_failures.window
                ),
                now=now,
                memory=self.memory,
                history={pk: h for pk, h in history.items() if h is not None},
                loads=q.latest_checkpoint_loads(self.engine, pks),
                rank_checks=q.latest_rank_checks(self.engine, pks),
            ),
        )
        newest = tails.groupby("run_pk")["step"].max().to_dict()
        for pk in pks:
            if pk in newest:
                self.memory[pk].evaluated_step = float(newest[pk])
        by_pk = {int(r["run_pk"]): r for r in judged.to_dict("records")}
        ended_pks = {int(pk) for pk in ended["run_pk"]}
        out = [f for run in self._resolve_next for f in self._ended(run)]
        self._resolve_next = []
        for verdict in verdicts:
            rule = getattr(health, verdict.rule)
            run = by_pk[verdict.run_pk]
            if verdict.run_pk in ended_pks and not verdict.active:
                out.append(_finding(verdict.rule, rule, run, False, None, _ended_text(run)))
                continue
            summary = texts.HEALTH_SUMMARY.format(
                job=run["job"], run_id=run["run_id"], summary=verdict.summary
            )
            out.append(_finding(verdict.rule, rule, run, verdict.active, verdict.value, summary))
        # forget what no longer matters: runs out of the evaluated range, unused history
        self._judged_ended &= {int(pk) for pk in runs["run_pk"]}
        used = {int(pk) for h in self.history.values() if h is not None
                for pk in h.losses["run_pk"].unique()}  # fmt: skip
        self._losses = {pk: v for pk, v in self._losses.items() if pk in used}
        for run in ended.to_dict("records"):
            self._judged_ended.add(int(run["run_pk"]))
            self._resolve_next.append(run)
            self.memory.pop(int(run["run_pk"]), None)
            self.history.pop(int(run["run_pk"]), None)
        return out

    def _ended(self, run: Mapping[Any, Any]) -> list[Finding]:
        """The run has ended: each of its health alerts resolves."""
        health = self.config.health
        return [
            _finding(name, getattr(health, name), run, False, None, _ended_text(run))
            for name in texts.RULE_ALERTNAMES
            if getattr(health, name).enabled
        ]

    def _remember(self, run: Mapping[Any, Any], tails: pd.DataFrame) -> None:
        pk = int(run["run_pk"])
        memory = self.memory.setdefault(pk, health_rules.RunMemory())
        resumed = run.get("resumed_from_step")
        if resumed is None or (isinstance(resumed, float) and math.isnan(resumed)):
            return
        window = self.config.health.eff_lr_jump.window_steps
        if memory.resume_reference is None:
            before = q.previous_runs(self.engine, str(run["job"]), float(run["started_at"]), 1)
            if not before.empty:
                prev = q.step_tails(self.engine, [int(before.iloc[0]["run_pk"])], window)
                values = health_rules.optimizer_contribution(prev)
                values = values[np.isfinite(values)]
                memory.resume_reference = float(values.mean()) if len(values) else math.nan
            else:
                memory.resume_reference = math.nan
        if memory.first_window is None:
            memory.first_window = health_rules.first_window_contribution(tails, pk, window)

    def _history(self, run: Mapping[Any, Any]) -> health_rules.JobHistory | None:
        pk = int(run["run_pk"])
        if pk in self.history:
            return self.history[pk]
        rule = self.config.health.slow_convergence
        limit = max(rule.history_runs, self.config.health.overspend.history_runs)
        before = q.previous_runs(self.engine, str(run["job"]), float(run["started_at"]), 50)
        before = before[
            (before["verdict"] == "succeeded") & (before["ended_at"] <= float(run["started_at"]))
        ].head(limit)
        if before.empty:
            self.history[pk] = None
            return None
        losses = []
        for prev in [int(p) for p in before["run_pk"]]:
            if prev not in self._losses:
                self._losses[prev] = q.losses(self.engine, prev).assign(run_pk=prev)
            losses.append(self._losses[prev])
        validations = q.validations(self.engine, [int(p) for p in before["run_pk"]])
        finals = validations.groupby("run_pk")["value"].last()
        history = health_rules.JobHistory(
            losses=pd.concat(losses, ignore_index=True),
            final_steps=tuple(float(s) for s in before["last_step"].dropna()),
            final_validation=tuple(float(v) for v in finals if math.isfinite(v)),
        )
        self.history[pk] = history
        return history


def _ended_text(run: Mapping[Any, Any]) -> str:
    return texts.RUN_ENDED_SUMMARY.format(
        job=run["job"], run_id=run["run_id"], status=run["status"]
    )


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

"""One evaluation tick: SLO burn rates and training-health rules -> `Signal`s for the lifecycle.

`Evaluator` keeps per-SLO bucket histories and each running run's recent steps between ticks,
so a tick reads only what the store gained since the last one (plus `lookback_seconds` for late
telemetry). `evaluate()` is the one-shot form (cold: it reads the whole SLO period).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlencode

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from rmswatch.alerting import health as health_rules
from rmswatch.alerting import store_inputs as q
from rmswatch.alerting.signals import Signal
from rmswatch.alerting.slo import (
    COARSE_FACTOR,
    BucketHistory,
    SloWindows,
    budget_remaining,
    burn_rate,
    time_to_exhaustion,
    window_buckets,
)
from rmswatch.alerting.spec import PER_STEP_KINDS, SloSpec, burn_policy, effective_slos
from rmswatch.alerting.texts import RULE_DESCRIPTIONS as _RULE_DESCRIPTIONS
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


@dataclass
class _SloState:
    spec: SloSpec
    windows: SloWindows
    history: BucketHistory
    lookback_buckets: int


class Evaluator:
    """Holds the incremental state of evaluation for one store and one config."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config
        evaluation = config.evaluation
        self.slos = effective_slos(config.slos, defaults=evaluation.default_slos)
        self._states: dict[str, _SloState] = {}
        for spec in self.slos:
            windows = SloWindows.for_spec(spec)
            lookback = window_buckets(max(evaluation.lookback_seconds, 1.0), windows.bucket_seconds)
            longest = max(windows.lengths)
            history = BucketHistory(windows.bucket_seconds, longest, spec.period, lookback)
            self._states[spec.name] = _SloState(spec, windows, history, lookback)
        self._last_now: float | None = None
        self._tails: pd.DataFrame | None = None
        self._tail_runs: set[int] = set()
        self.slo_table = pd.DataFrame()
        self._url_time: tuple[float, str] = (math.nan, "")
        self._url_ids: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------------------- ticks

    def tick(self, now: datetime | float) -> list[Signal]:
        """Evaluate everything at `now`; returns one signal per (rule, series), active or not."""
        now_s = _epoch(now)
        longest_period = max((s.spec.period for s in self._states.values()), default=0.0)
        since_runs = now_s - max(longest_period, self.config.evaluation.lookback_seconds)
        if self._last_now is not None:
            since_runs = min(since_runs, self._last_now - self.config.evaluation.lookback_seconds)
        runs = q.runs(self.engine, since_runs)
        signals: list[Signal] = []
        tables = []
        for state in self._states.values():
            table = self._update_slo(state, runs, now_s)
            tables.append(table)
            signals += self._slo_signals(state, table, runs, now_s)
        self.slo_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        signals += self._health_and_step_signals(runs, now_s)
        self._last_now = now_s
        return signals

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

    # -------------------------------------------------------------------------------- SLOs

    def _counts(self, spec: SloSpec, since: float, bucket_seconds: int) -> pd.DataFrame:
        """(run_pk|job, bucket, good, total) for this SLI since `since`."""
        sli = spec.sli
        if sli.kind == "nonfinite_free_steps":
            kinds = self.config.health.nonfinite.kinds
            return q.step_counts(self.engine, since, bucket_seconds, nonfinite_kinds=kinds)
        if sli.kind == "step_latency":
            return q.step_counts(
                self.engine, since, bucket_seconds, threshold_seconds=sli.threshold_seconds
            )
        if sli.kind == "retrain_success":
            return q.run_outcome_counts(
                self.engine, since, bucket_seconds, sli.good_statuses, sli.bad_statuses
            )
        if sli.kind == "checkpoint_success":
            return q.checkpoint_save_counts(self.engine, since, bucket_seconds)
        if sli.kind == "validation_improvement":
            return q.validation_outcome_counts(
                self.engine, since, bucket_seconds, sli.good_statuses
            )
        assert sli.good is not None and sli.total is not None
        inc = q.sample_counter_increases(self.engine, since, bucket_seconds, [sli.good, sli.total])
        if inc.empty:
            return pd.DataFrame(columns=["key", "bucket", "good", "total"])
        inc = inc.assign(
            good=np.where(inc["name"] == sli.good, inc["increase"], 0.0),
            total=np.where(inc["name"] == sli.total, inc["increase"], 0.0),
        )
        inc = inc[inc["job"].map(spec.applies_to)]
        return inc.rename(columns={"job": "key"})[["key", "bucket", "good", "total"]]

    def _keyed(self, spec: SloSpec, counts: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
        """Run-level counts -> the SLO's series (job or run), jobs outside the SLO dropped."""
        if "key" in counts.columns:
            keyed = counts
        else:
            key_column = "run_id" if spec.per == "run" else "job"
            lookup = runs.set_index("run_pk")
            counts = counts[counts["run_pk"].isin(lookup.index)]
            jobs = counts["run_pk"].map(lookup["job"])
            counts = counts[jobs.map(spec.applies_to).astype(bool)]
            keyed = counts.assign(key=counts["run_pk"].map(lookup[key_column]))
        return keyed.groupby(["key", "bucket"], as_index=False)[["good", "total"]].sum()

    def _update_slo(self, state: _SloState, runs: pd.DataFrame, now: float) -> pd.DataFrame:
        spec, history, bucket_s = state.spec, state.history, state.windows.bucket_seconds
        cold = history.end is None
        end = math.floor(now / bucket_s)
        history.advance(end)
        if cold:
            # older history once, in coarse buckets; the fine ring from its first whole hour
            coarse_s = bucket_s * COARSE_FACTOR
            oldest = (end // COARSE_FACTOR - history.coarse_len + 1) * coarse_s
            coarse = self._keyed(spec, self._counts(spec, oldest, coarse_s), runs)
            history.add_coarse(coarse)
            from_bucket = -(-history.fine_start // COARSE_FACTOR) * COARSE_FACTOR
        else:
            assert self._last_now is not None
            from_bucket = math.floor(min(self._last_now, now) / bucket_s) - state.lookback_buckets
        fine = self._keyed(spec, self._counts(spec, from_bucket * bucket_s, bucket_s), runs)
        history.replace(from_bucket, fine)
        # every series the SLO covers is judged, including those with no events yet
        key_column = "run_id" if spec.per == "run" else "job"
        if spec.sli.kind != "ratio":
            known = runs[runs["job"].map(spec.applies_to).astype(bool)][key_column]
            history.ensure(pd.Series(known.unique(), dtype=object))
        return self._slo_numbers(state)

    def _slo_numbers(self, state: _SloState) -> pd.DataFrame:
        """One row per series: burn rate per window, budget remaining, time to exhaustion."""
        spec, history, windows = state.spec, state.history, state.windows
        sums = history.window_sums(windows.lengths)
        good_p, total_p = history.period_sums()
        budget = spec.error_budget
        table: dict[str, Any] = {"slo": spec.name, "key": list(history.keys)}
        table["objective"] = spec.objective
        table["events_period"] = total_p
        table["bad_period"] = total_p - good_p
        remaining = budget_remaining(total_p - good_p, total_p, budget)
        table["budget_remaining"] = remaining
        fastest_long = None
        for window in windows.windows:
            for seconds in (window.long, window.short):
                n = window_buckets(seconds, windows.bucket_seconds)
                good, total = sums[n]
                name = _window_label(seconds)
                table[f"burn_rate_{name}"] = burn_rate(total - good, total, budget)
                table[f"events_{name}"] = total
            if fastest_long is None:
                fastest_long = _window_label(window.long)
        burn_now = (
            table[f"burn_rate_{fastest_long}"] if fastest_long else np.full(len(remaining), np.nan)
        )
        table["time_to_exhaustion_seconds"] = time_to_exhaustion(remaining, burn_now, spec.period)
        for severity in ("page", "ticket"):
            firing = np.zeros(len(history.keys), dtype=bool)
            for window in windows.windows:
                if window.severity != severity:
                    continue
                long_n = _window_label(window.long)
                short_n = _window_label(window.short)
                firing |= (
                    (np.nan_to_num(table[f"burn_rate_{long_n}"]) > window.factor)
                    & (np.nan_to_num(table[f"burn_rate_{short_n}"]) > window.factor)
                    & (table[f"events_{long_n}"] >= spec.effective_min_events)
                )
            table[f"firing_{severity}"] = firing
        return pd.DataFrame(table)

    def _slo_signals(
        self, state: _SloState, table: pd.DataFrame, runs: pd.DataFrame, now: float
    ) -> list[Signal]:
        spec, windows = state.spec, state.windows
        latest = {r["job"]: r for r in runs.sort_values("started_at").to_dict("records")}
        by_run = {r["run_id"]: r for r in runs.to_dict("records")}
        signals = []
        for row in table.itertuples(index=False):
            key = str(row.key)
            run: Any
            if spec.per == "run" and key in by_run:
                run = by_run[key]
                job, run_id = str(run["job"]), key
            else:
                job, run_id = key, ""
                run = latest.get(job)
            for severity in ("page", "ticket"):
                pairs = [w for w in windows.windows if w.severity == severity]
                if not pairs:
                    continue
                active = bool(getattr(row, f"firing_{severity}"))
                burns = ", ".join(
                    f"{_fmt(getattr(row, 'burn_rate_' + _window_label(w.long)))}x "
                    f"({_window_label(w.long)}) / "
                    f"{_fmt(getattr(row, 'burn_rate_' + _window_label(w.short)))}x "
                    f"({_window_label(w.short)}) vs {w.factor:g}"
                    for w in pairs
                )
                value = getattr(row, "burn_rate_" + _window_label(pairs[0].long))
                summary = (
                    f"SLO {spec.name} ({spec.objective:g}%) for {job}: burn {burns}; "
                    f"{_budget_words(row.budget_remaining, _window_label(spec.period))}"
                )
                description = (
                    f"{spec.description} Error budget burns faster than the {severity} "
                    f"threshold in both windows of a pair (at least {spec.effective_min_events} "
                    f"events in the long window). Events in period: {row.events_period:.0f}, "
                    f"bad: {row.bad_period:.0f}."
                ).strip()
                signals.append(
                    self._signal(
                        SLO_ALERTNAME, severity, active, value, 0.0, job, run_id, run, now,
                        summary, description, spec.runbook or "slo", {"slo": spec.name},
                    )
                )  # fmt: skip
        return signals

    # ------------------------------------------------------------ health and step windows

    def _update_tails(self, running: pd.DataFrame, now: float) -> pd.DataFrame:
        config = self.config.health
        span_rows = health_rules.rows_needed(config)
        step_span = max((w.long_steps for w in burn_policy().step_windows), default=0)
        pks = [int(pk) for pk in running["run_pk"]]
        new_pks = [pk for pk in pks if pk not in self._tail_runs]
        parts = []
        if self._tails is not None and self._last_now is not None:
            since = min(self._last_now, now) - self.config.evaluation.lookback_seconds
            known = [pk for pk in pks if pk in self._tail_runs]
            parts += [self._tails[self._tails["run_pk"].isin(known)]]
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
            span = np.maximum(span_rows * every, step_span)
            tails = tails[tails["step"] > newest - span].reset_index(drop=True)
        self._tails = tails
        self._tail_runs = set(pks)
        return tails

    def _health_and_step_signals(self, runs: pd.DataFrame, now: float) -> list[Signal]:
        running = runs[runs["status"] == "running"]
        tails = self._update_tails(running, now)
        pks = [int(pk) for pk in running["run_pk"]]
        config = self.config.health
        checkpoint_since = now - config.checkpoint_failures.window
        verdicts = health_rules.evaluate_health(
            config,
            running,
            tails,
            q.validations(self.engine, pks),
            q.checkpoint_failures(self.engine, pks, checkpoint_since),
            now,
            loads=q.latest_checkpoint_loads(self.engine, pks),
            rank_checks=q.latest_rank_checks(self.engine, pks),
        )
        by_pk = {int(r["run_pk"]): r for r in runs.to_dict("records")}
        signals = []
        for verdict in verdicts:
            rule = getattr(config, verdict.rule)
            run = by_pk[verdict.run_pk]
            signals.append(
                self._signal(
                    health_rules.RULE_ALERTNAMES[verdict.rule], rule.severity, verdict.active,
                    verdict.value, rule.for_, str(run["job"]), str(run["run_id"]), run, now,
                    f"{run['job']} run {run['run_id']}: {verdict.summary}",
                    _RULE_DESCRIPTIONS[verdict.rule], rule.runbook, {},
                )
            )  # fmt: skip
        # runs that ended since the last tick: their health alerts resolve now
        if self._last_now is not None:
            lookback = self.config.evaluation.lookback_seconds
            ended = runs[
                (runs["status"] != "running") & (runs["ended_at"] >= self._last_now - lookback)
            ]
            for run in ended.to_dict("records"):
                for name, alertname in health_rules.RULE_ALERTNAMES.items():
                    rule = getattr(config, name)
                    if rule.enabled:
                        signals.append(
                            self._signal(
                                alertname, rule.severity, False, None, rule.for_, str(run["job"]),
                                str(run["run_id"]), run, now,
                                f"{run['job']} run {run['run_id']} ended ({run['status']})",
                                _RULE_DESCRIPTIONS[name], rule.runbook, {},
                            )
                        )  # fmt: skip
        signals += self._step_window_signals(running, tails, now)
        return signals

    def _step_window_signals(
        self, running: pd.DataFrame, tails: pd.DataFrame, now: float
    ) -> list[Signal]:
        """Per-step SLIs over each running run's last N optimizer steps."""
        step_windows = burn_policy().step_windows
        signals: list[Signal] = []
        if tails.empty or not step_windows:
            return signals
        newest = tails.groupby("run_pk")["step"].transform("max")
        age = newest - tails["step"]  # 0 for the newest step
        lookup = running.to_dict("records")
        for spec in self.slos:
            if spec.sli.kind not in PER_STEP_KINDS or not spec.step_windows:
                continue
            bad = _bad_steps(spec, tails, self.config.health.nonfinite.kinds)
            counted = tails["step_seconds"].notna()
            for window in step_windows:
                sums = {}
                for n in (window.long_steps, window.short_steps):
                    inside = age < n
                    if spec.sli.kind == "step_latency":
                        inside &= counted
                    frame = pd.DataFrame({"run_pk": tails["run_pk"], "bad": bad & inside,
                                          "total": inside})  # fmt: skip
                    summed = frame.groupby("run_pk")[["bad", "total"]].sum()
                    sums[n] = dict(
                        zip(summed.index, zip(summed["bad"], summed["total"], strict=True),
                            strict=True)
                    )  # fmt: skip
                for run in lookup:
                    pk = run["run_pk"]
                    if not spec.applies_to(str(run["job"])):
                        continue
                    long_b, long_t = _get(sums[window.long_steps], pk)
                    short_b, short_t = _get(sums[window.short_steps], pk)
                    burn_long = long_b / long_t / spec.error_budget if long_t else math.nan
                    burn_short = short_b / short_t / spec.error_budget if short_t else math.nan
                    active = (
                        long_t >= spec.effective_min_events
                        and burn_long > window.factor
                        and burn_short > window.factor
                    )
                    summary = (
                        f"SLO {spec.name} ({spec.objective:g}%) for {run['job']} run "
                        f"{run['run_id']}: burn {_fmt(burn_long)}x over its last "
                        f"{window.long_steps} steps and {_fmt(burn_short)}x over the last "
                        f"{window.short_steps} (threshold {window.factor:g}x)"
                    )
                    signals.append(
                        self._signal(
                            SLO_STEPS_ALERTNAME, window.severity, bool(active),
                            None if math.isnan(burn_long) else burn_long, 0.0, str(run["job"]),
                            str(run["run_id"]), run, now, summary,
                            f"{spec.description} Judged over steps rather than wall-clock time.",
                            spec.runbook or "slo",
                            {"slo": spec.name, "steps": str(window.long_steps)},
                        )
                    )  # fmt: skip
        return signals

    # ------------------------------------------------------------------------- one signal

    def _signal(
        self,
        alertname: str,
        severity: Any,
        active: bool,
        value: float | None,
        for_seconds: float,
        job: str,
        run_id: str,
        run: Any,
        now: float,
        summary: str,
        description: str,
        runbook: str,
        extra_labels: dict[str, str],
    ) -> Signal:
        run_labels = run.get("labels") if run is not None else None
        run_labels = run_labels if isinstance(run_labels, dict) else {}
        labels = {
            "alertname": alertname,
            "job": job,
            "run_id": run_id,
            "model": str(run_labels.get("model", "")),
            "cluster": str(run_labels.get("cluster", "")),
            "severity": severity,
            **extra_labels,
        }
        if value is not None and not math.isfinite(value):
            value = None if math.isnan(value) else value
        annotations = {
            "summary": summary,
            "description": description,
            "runbook_url": self.runbook_url(runbook),
            "dashboard_url": self.dashboard_url(job, run_id, now),
        }
        return Signal(alertname, labels, severity, active, value, for_seconds, annotations)

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


def _bad_steps(spec: SloSpec, tails: pd.DataFrame, kinds: tuple[str, ...]) -> pd.Series:
    if spec.sli.kind == "step_latency":
        threshold = spec.sli.threshold_seconds or math.inf
        return tails["step_seconds"].notna() & (tails["step_seconds"] > threshold)
    return (tails[[f"nonfinite_{k}" for k in kinds]].sum(axis=1) > 0).astype(bool)


def _get(sums: dict[Any, tuple[float, float]], pk: Any) -> tuple[float, float]:
    bad, total = sums.get(pk, (0.0, 0.0))
    return float(bad), float(total)


def _budget_words(remaining: Any, period: str) -> str:
    # "-13233% left" reads as a bug at 3 a.m.; an overspent budget says how many budgets went
    if remaining < 0:
        return f"the {period} error budget is spent ({1 - remaining:.3g}x the budget)"
    return f"{remaining:.0%} of the {period} budget left"


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"


def _window_label(seconds: float) -> str:
    from rmswatch.alerting.spec import format_duration

    return format_duration(seconds)


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

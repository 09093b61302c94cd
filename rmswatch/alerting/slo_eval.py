"""SLO evaluation: SLI event counts from the store per SLI kind, the per-SLO bucket history kept
between ticks, burn-rate tables, and the findings they raise (one per series and severity)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from rmswatch.alerting import store_inputs as q
from rmswatch.alerting import texts
from rmswatch.alerting.signals import Finding
from rmswatch.alerting.slo import (
    COARSE_FACTOR,
    BucketHistory,
    SloWindows,
    budget_remaining,
    burn_rate,
    time_to_exhaustion,
    window_buckets,
)
from rmswatch.alerting.spec import SloSpec, format_duration
from rmswatch.config import Config


@dataclass
class SloState:
    spec: SloSpec
    windows: SloWindows
    history: BucketHistory
    lookback_buckets: int

    @classmethod
    def new(cls, spec: SloSpec, lookback_seconds: float) -> SloState:
        windows = SloWindows.for_spec(spec)
        lookback = window_buckets(max(lookback_seconds, 1.0), windows.bucket_seconds)
        history = BucketHistory(windows.bucket_seconds, max(windows.lengths), spec.period, lookback)
        return cls(spec, windows, history, lookback)


# ------------------------------------------------------------------------- SLI event counts

Counts = Callable[[Engine, Config, SloSpec, float, int], pd.DataFrame]


def _nonfinite_free(engine: Engine, config: Config, spec: SloSpec, since: float,
                    bucket_s: int) -> pd.DataFrame:  # fmt: skip
    kinds = config.health.nonfinite.kinds
    return q.step_counts(engine, since, bucket_s, nonfinite_kinds=kinds)


def _step_latency(engine: Engine, config: Config, spec: SloSpec, since: float,
                  bucket_s: int) -> pd.DataFrame:  # fmt: skip
    return q.step_counts(engine, since, bucket_s, threshold_seconds=spec.sli.threshold_seconds)


def _retrain_success(engine: Engine, config: Config, spec: SloSpec, since: float,
                     bucket_s: int) -> pd.DataFrame:  # fmt: skip
    sli = spec.sli
    return q.run_outcome_counts(
        engine, since, bucket_s, sli.good_statuses, sli.bad_statuses,
        incident_is_bad=sli.incident_is_bad,
    )  # fmt: skip


def _checkpoint_success(engine: Engine, config: Config, spec: SloSpec, since: float,
                        bucket_s: int) -> pd.DataFrame:  # fmt: skip
    return q.checkpoint_save_counts(engine, since, bucket_s)


def _validation_improvement(engine: Engine, config: Config, spec: SloSpec, since: float,
                            bucket_s: int) -> pd.DataFrame:  # fmt: skip
    return q.validation_outcome_counts(engine, since, bucket_s, spec.sli.good_statuses)


def _ratio(engine: Engine, config: Config, spec: SloSpec, since: float,
           bucket_s: int) -> pd.DataFrame:  # fmt: skip
    sli = spec.sli
    assert sli.good is not None and sli.total is not None
    inc = q.sample_counter_increases(engine, since, bucket_s, [sli.good, sli.total])
    if inc.empty:
        return pd.DataFrame(columns=["key", "bucket", "good", "total"])
    inc = inc.assign(
        good=np.where(inc["name"] == sli.good, inc["increase"], 0.0),
        total=np.where(inc["name"] == sli.total, inc["increase"], 0.0),
    )
    inc = inc[inc["job"].map(spec.applies_to)]
    return inc.rename(columns={"job": "key"})[["key", "bucket", "good", "total"]]


# SLI kind -> its counts since a time, per (run_pk | key, bucket): good and total events
SLI_COUNTS: dict[str, Counts] = {
    "nonfinite_free_steps": _nonfinite_free,
    "step_latency": _step_latency,
    "retrain_success": _retrain_success,
    "checkpoint_success": _checkpoint_success,
    "validation_improvement": _validation_improvement,
    "ratio": _ratio,
}


def keyed(spec: SloSpec, counts: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Run-level counts -> the SLO's series (job or run), jobs outside the SLO dropped."""
    if "key" in counts.columns:
        keyed_counts = counts
    else:
        key_column = "run_id" if spec.per == "run" else "job"
        lookup = runs.set_index("run_pk")
        counts = counts[counts["run_pk"].isin(lookup.index)]
        jobs = counts["run_pk"].map(lookup["job"])
        counts = counts[jobs.map(spec.applies_to).astype(bool)]
        keyed_counts = counts.assign(key=counts["run_pk"].map(lookup[key_column]))
    return keyed_counts.groupby(["key", "bucket"], as_index=False)[["good", "total"]].sum()


def update(state: SloState, engine: Engine, config: Config, runs: pd.DataFrame, now: float,
           last_now: float | None) -> pd.DataFrame:  # fmt: skip
    """Bring the SLO's bucket history up to `now`; returns its table (`numbers`)."""
    spec, history, bucket_s = state.spec, state.history, state.windows.bucket_seconds
    counts = SLI_COUNTS[spec.sli.kind]
    cold = history.end is None
    end = math.floor(now / bucket_s)
    history.advance(end)
    if cold:
        # older history once, in coarse buckets; the fine ring from its first whole hour
        coarse_s = bucket_s * COARSE_FACTOR
        oldest = (end // COARSE_FACTOR - history.coarse_len + 1) * coarse_s
        history.add_coarse(keyed(spec, counts(engine, config, spec, oldest, coarse_s), runs))
        from_bucket = -(-history.fine_start // COARSE_FACTOR) * COARSE_FACTOR
    else:
        assert last_now is not None
        from_bucket = math.floor(min(last_now, now) / bucket_s) - state.lookback_buckets
    fine = keyed(spec, counts(engine, config, spec, from_bucket * bucket_s, bucket_s), runs)
    history.replace(from_bucket, fine)
    # every series the SLO covers is judged, including those with no events yet
    key_column = "run_id" if spec.per == "run" else "job"
    if spec.sli.kind != "ratio":
        known = runs[runs["job"].map(spec.applies_to).astype(bool)][key_column]
        history.ensure(pd.Series(known.unique(), dtype=object))
    return numbers(state)


def numbers(state: SloState) -> pd.DataFrame:
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
    # two bad events out of two say nothing about a 10% budget: too few events, no verdict
    remaining = np.where(total_p >= spec.effective_min_events, remaining, np.nan)
    table["budget_remaining"] = remaining
    fastest_long = None
    for window in windows.windows:
        for seconds in (window.long, window.short):
            n = window_buckets(seconds, windows.bucket_seconds)
            good, total = sums[n]
            name = window_label(seconds)
            table[f"burn_rate_{name}"] = burn_rate(total - good, total, budget)
            table[f"events_{name}"] = total
        if fastest_long is None:
            fastest_long = window_label(window.long)
    burn_now = (
        table[f"burn_rate_{fastest_long}"] if fastest_long else np.full(len(remaining), np.nan)
    )
    table["time_to_exhaustion_seconds"] = time_to_exhaustion(remaining, burn_now, spec.period)
    for severity in ("page", "ticket"):
        firing = np.zeros(len(history.keys), dtype=bool)
        for window in windows.windows:
            if window.severity != severity:
                continue
            long_n = window_label(window.long)
            short_n = window_label(window.short)
            firing |= (
                (np.nan_to_num(table[f"burn_rate_{long_n}"]) > window.factor)
                & (np.nan_to_num(table[f"burn_rate_{short_n}"]) > window.factor)
                & (table[f"events_{long_n}"] >= spec.effective_min_events)
            )
        table[f"firing_{severity}"] = firing
    return pd.DataFrame(table)


def findings(state: SloState, table: pd.DataFrame, runs: pd.DataFrame) -> list[Finding]:
    """One finding per series and severity, active or not."""
    spec, windows = state.spec, state.windows
    latest = {r["job"]: r for r in runs.sort_values("started_at").to_dict("records")}
    by_run = {r["run_id"]: r for r in runs.to_dict("records")}
    out = []
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
            burns = ", ".join(
                texts.SLO_BURN_PAIR.format(
                    long=fmt(getattr(row, "burn_rate_" + window_label(w.long))),
                    long_window=window_label(w.long),
                    short=fmt(getattr(row, "burn_rate_" + window_label(w.short))),
                    short_window=window_label(w.short),
                    factor=w.factor,
                )
                for w in pairs
            )
            summary = texts.SLO_SUMMARY.format(
                slo=spec.name, objective=spec.objective, job=job, burns=burns,
                budget=budget_words(
                    row.budget_remaining, window_label(spec.period), row.events_period,
                    spec.effective_min_events,
                ),
            )  # fmt: skip
            description = texts.SLO_DESCRIPTION.format(
                description=spec.description, severity=severity,
                min_events=spec.effective_min_events, events=row.events_period,
                bad=row.bad_period,
            ).strip()  # fmt: skip
            out.append(
                Finding(
                    alertname=texts.SLO_ALERTNAME,
                    severity=severity,
                    active=bool(getattr(row, f"firing_{severity}")),
                    value=getattr(row, "burn_rate_" + window_label(pairs[0].long)),
                    job=job,
                    run_id=run_id,
                    run=run,
                    summary=summary,
                    description=description,
                    runbook=spec.runbook or "slo",
                    labels={"slo": spec.name},
                )
            )
    return out


def budget_words(remaining: Any, period: str, events: Any = math.inf, needed: int = 1) -> str:
    if events < needed or math.isnan(remaining):
        return texts.BUDGET_TOO_FEW.format(events=events, needed=needed, period=period)
    # "-13233% left" reads as a bug at 3 a.m.; an overspent budget says how many budgets went
    if remaining < 0:
        return texts.BUDGET_SPENT.format(period=period, budgets=1 - remaining)
    return texts.BUDGET_LEFT.format(period=period, remaining=remaining)


def fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"


def window_label(seconds: float) -> str:
    return format_duration(seconds)

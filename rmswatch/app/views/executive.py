"""Executive numbers: retrain success and its error budget, validation gains, GPU spend, drift."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rmswatch.alerting.slo import budget_remaining
from rmswatch.alerting.spec import SloSpec
from rmswatch.app.views.common import (
    AMBER,
    BLUE,
    GREEN,
    RED,
    empty_figure,
    figure,
    format_percent,
)

STILL_RUNNING = frozenset({"running"})


@dataclass(frozen=True, slots=True)
class SloRollup:
    """One SLO over several series, from the evaluator's period counts."""

    events: int
    bad: int
    objective: float  # a percentage, e.g. 95
    budget_left: float

    @property
    def rate(self) -> float:
        return (self.events - self.bad) / self.events if self.events else math.nan


def slo_rollup(table: pd.DataFrame, spec: SloSpec, jobs: Sequence[str] | None = None) -> SloRollup:
    """An SLO's events summed over its series (the jobs given, or all), with the budget left by
    the alerting engine's own formula."""
    rows = table[table["slo"] == spec.name] if not table.empty else table
    if jobs is not None and not rows.empty:
        rows = rows[rows["key"].isin(list(jobs))]
    events = float(rows["events_period"].sum()) if not rows.empty else 0.0
    bad = float(rows["bad_period"].sum()) if not rows.empty else 0.0
    left = float(budget_remaining(np.array([bad]), np.array([events]), spec.error_budget)[0])
    return SloRollup(events=int(events), bad=int(bad), objective=spec.objective, budget_left=left)


def compliance_table(table: pd.DataFrame, jobs: Sequence[str] | None = None) -> pd.DataFrame:
    """Per job: the budget left of every SLO (a cell per SLO) and whether all are within budget.

    A series with no events in the period shows `no events` and does not break compliance.
    """
    if table.empty:
        return pd.DataFrame(columns=["job", "within budget"])
    rows = table if jobs is None else table[table["key"].isin(list(jobs))]
    cells = rows.assign(
        cell=[
            "no events" if events == 0 else format_percent(left) if left >= 0 else "SPENT"
            for events, left in zip(rows["events_period"], rows["budget_remaining"], strict=True)
        ],
        breach=(rows["events_period"] > 0) & (rows["budget_remaining"] < 0),
    )
    wide = cells.pivot_table(index="key", columns="slo", values="cell", aggfunc="first")
    wide = wide.reindex(columns=list(dict.fromkeys(rows["slo"]))).fillna("—")
    breached = cells.groupby("key")["breach"].any()
    wide.insert(0, "within budget", ["NO" if breached[key] else "yes" for key in wide.index])
    wide = wide.assign(_order=breached.reindex(wide.index).to_numpy())
    wide = wide.sort_values(["_order"], ascending=False, kind="stable").drop(columns="_order")
    return wide.rename_axis(index="job", columns=None).reset_index()


def validation_delta_per_run(runs: pd.DataFrame, validations: pd.DataFrame) -> pd.DataFrame:
    """Per succeeded retrain: its final validation loss minus the final validation loss of the
    same job's previous succeeded retrain (negative: the retrain made the model better).

    A failed retrain ships no model, so it has no delta (it counts against retrain success
    instead); the first succeeded retrain of a job has nothing to compare with.
    """
    columns = ["run_id", "job", "started_at", "previous_run_id", "previous", "last", "delta"]
    if runs.empty or validations.empty:
        return pd.DataFrame(columns=columns)
    ordered = validations.dropna(subset=["value"]).sort_values(["run_pk", "step"])
    final = ordered.groupby("run_pk")["value"].last().rename("last")
    shipped = runs[runs["status"] == "succeeded"].merge(
        final, left_on="run_pk", right_index=True, how="inner"
    )
    shipped = shipped.sort_values(["job", "started_at"])
    by_job = shipped.groupby("job")
    shipped["previous"] = by_job["last"].shift(1)
    shipped["previous_run_id"] = by_job["run_id"].shift(1)
    shipped["delta"] = shipped["last"] - shipped["previous"]
    compared = shipped.dropna(subset=["previous"])
    return compared[columns].sort_values("started_at").reset_index(drop=True)


def gpu_spend_by_day(runs: pd.DataFrame, gpu_hour_usd: float) -> pd.DataFrame:
    """GPU-hours and spend per UTC day the runs started on."""
    if runs.empty:
        return pd.DataFrame(columns=["day", "gpu_hours", "spend_usd"])
    frame = pd.DataFrame(
        {
            "day": runs["started_at"].dt.floor("D"),
            "gpu_hours": runs["gpu_seconds"].fillna(0.0).astype(float) / 3600.0,
        }
    )
    daily = pd.DataFrame(frame.groupby("day", as_index=False)["gpu_hours"].sum())
    daily["spend_usd"] = daily["gpu_hours"] * gpu_hour_usd
    return daily


def drift_kpi(samples: pd.DataFrame) -> pd.DataFrame:
    """Latest value of every (job, SLI name) posted through ingest, with its previous value."""
    columns = ["job", "name", "time", "value", "previous"]
    if samples.empty:
        return pd.DataFrame(columns=columns)
    ordered = samples.sort_values("time")
    ordered = ordered.assign(previous=ordered.groupby(["job", "name"])["value"].shift(1))
    latest = ordered.groupby(["job", "name"], as_index=False).tail(1)
    return pd.DataFrame(latest[columns]).reset_index(drop=True)


def success_trend_figure(runs: pd.DataFrame, objective: float | None) -> go.Figure:
    """Daily retrain success rate against the objective line (a fraction; None: no SLO)."""
    title = "Retrain success rate per day"
    finished = runs[~runs["status"].isin(STILL_RUNNING)] if not runs.empty else runs
    if finished.empty:
        return empty_figure(title, "no finished runs yet — success rate appears when runs end")
    daily = (
        finished.assign(
            day=finished["started_at"].dt.floor("D"),
            # "succeeded with incident" (a page fired about the run) is not a success here
            ok=finished.get("verdict", finished["status"]) == "succeeded",
        )
        .groupby("day", as_index=False)["ok"]
        .mean()
    )
    fig = figure(title)
    colors = [GREEN if objective is None or rate >= objective else RED for rate in daily["ok"]]
    fig.add_bar(x=daily["day"], y=daily["ok"] * 100, marker_color=colors, name="success %")
    if objective is not None:
        fig.add_hline(y=objective * 100, line_dash="dash", line_color=AMBER, annotation_text="SLO")
    fig.update_yaxes(range=[0, 105], ticksuffix="%")
    fig.update_xaxes(tickformat="%b %d", dtick=86_400_000)
    return fig


def spend_figure(daily: pd.DataFrame) -> go.Figure:
    title = "GPU-hours and spend per day"
    if daily.empty:
        return empty_figure(title, "no runs yet — GPU-hours appear once a run reports")
    if not (daily["gpu_hours"] > 0).any():
        return empty_figure(
            title,
            "no GPU time recorded: these runs trained on the CPU",
        )
    fig = figure(title)
    fig.add_bar(x=daily["day"], y=daily["gpu_hours"], name="GPU-hours", marker_color=BLUE)
    fig.add_scatter(
        x=daily["day"],
        y=daily["spend_usd"],
        name="spend (USD)",
        yaxis="y2",
        mode="lines+markers",
        line={"color": AMBER, "width": 3},
    )
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False})
    fig.update_xaxes(tickformat="%b %d", dtick=86_400_000)
    return fig


def validation_delta_figure(deltas: pd.DataFrame) -> go.Figure:
    title = "Final validation loss vs the job's previous retrain (negative is better)"
    if deltas.empty:
        return empty_figure(
            title,
            "needs two succeeded retrains of a job that call monitor.record_validation(...)",
        )
    fig = figure(title)
    fig.add_bar(
        x=deltas["run_id"],
        y=deltas["delta"],
        marker_color=[GREEN if d <= 0 else RED for d in deltas["delta"]],
        name="delta",
    )
    return fig

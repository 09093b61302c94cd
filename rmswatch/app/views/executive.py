"""Executive numbers: retrain success and its error budget, validation gains, GPU spend, drift."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from rmswatch.app.views.common import AMBER, BLUE, GREEN, RED, empty_figure, figure

FINISHED_OK = frozenset({"succeeded"})
STILL_RUNNING = frozenset({"running"})


@dataclass(frozen=True, slots=True)
class SuccessRate:
    finished: int
    succeeded: int
    objective: float  # a fraction, e.g. 0.95

    @property
    def rate(self) -> float:
        return self.succeeded / self.finished if self.finished else math.nan

    @property
    def budget_remaining(self) -> float:
        """Share of the error budget left: 1 - (failure ratio / allowed failure ratio)."""
        if not self.finished:
            return 1.0
        allowed = 1.0 - self.objective
        failed = 1.0 - self.rate
        return 1.0 - failed / allowed if allowed > 0 else (1.0 if failed == 0 else -math.inf)


def retrain_success(runs: pd.DataFrame, objective: float) -> SuccessRate:
    """Succeeded runs over finished runs (a run still marked running is not counted)."""
    finished = runs[~runs["status"].isin(STILL_RUNNING)] if not runs.empty else runs
    succeeded = int(finished["status"].isin(FINISHED_OK).sum()) if not finished.empty else 0
    return SuccessRate(finished=len(finished), succeeded=succeeded, objective=objective)


def validation_delta_per_run(runs: pd.DataFrame, validations: pd.DataFrame) -> pd.DataFrame:
    """Per run: first and last validation loss and their delta (negative is better)."""
    columns = ["run_id", "job", "started_at", "first", "last", "delta"]
    if runs.empty or validations.empty:
        return pd.DataFrame(columns=columns)
    ordered = validations.dropna(subset=["value"]).sort_values(["run_pk", "step"])
    grouped = ordered.groupby("run_pk")["value"].agg(["first", "last"])
    grouped["delta"] = grouped["last"] - grouped["first"]
    merged = runs.merge(grouped, left_on="run_pk", right_index=True, how="inner")
    return merged[columns].sort_values("started_at").reset_index(drop=True)


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
    daily = frame.groupby("day", as_index=False)["gpu_hours"].sum()
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
    return latest[columns].reset_index(drop=True)


def success_trend_figure(runs: pd.DataFrame, objective: float) -> go.Figure:
    """Daily retrain success rate against the objective line."""
    title = "Retrain success rate per day"
    finished = runs[~runs["status"].isin(STILL_RUNNING)] if not runs.empty else runs
    if finished.empty:
        return empty_figure(title, "no finished runs yet — success rate appears when runs end")
    daily = (
        finished.assign(
            day=finished["started_at"].dt.floor("D"), ok=finished["status"] == "succeeded"
        )
        .groupby("day", as_index=False)["ok"]
        .mean()
    )
    fig = figure(title)
    colors = [GREEN if rate >= objective else RED for rate in daily["ok"]]
    fig.add_bar(x=daily["day"], y=daily["ok"] * 100, marker_color=colors, name="success %")
    fig.add_hline(y=objective * 100, line_dash="dash", line_color=AMBER, annotation_text="SLO")
    fig.update_yaxes(range=[0, 105], ticksuffix="%")
    return fig


def spend_figure(daily: pd.DataFrame) -> go.Figure:
    title = "GPU-hours and spend per day"
    if daily.empty:
        return empty_figure(title, "no runs yet — GPU-hours appear once a run reports")
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
    return fig


def validation_delta_figure(deltas: pd.DataFrame) -> go.Figure:
    title = "Validation-loss change per retrain (negative is better)"
    if deltas.empty:
        return empty_figure(title, "no validation losses yet — call monitor.record_validation(...)")
    fig = figure(title)
    fig.add_bar(
        x=deltas["run_id"],
        y=deltas["delta"],
        marker_color=[GREEN if d <= 0 else RED for d in deltas["delta"]],
        name="delta",
    )
    return fig
